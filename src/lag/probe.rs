//! One health probe: a long-lived tokio-postgres connection per server and
//! one prepared query that reads what the monitor needs in a round trip.

use super::LagError;
use crate::backend::Target;
use crate::router::lsn;
use std::time::Duration;
use tokio_postgres::{Client, Statement};

/// Works on a primary and a standby alike (the recovery-only functions
/// return NULL on a primary; `pg_current_wal_lsn()` raises on a standby, so
/// it is guarded), so one query also discovers the role.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
     pg_last_wal_replay_lsn()::text, \
     pg_last_wal_receive_lsn()::text, \
     extract(epoch from pg_last_xact_replay_timestamp())::float8, \
     CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END";

/// What a server reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` (primaries only).
    pub current_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub receive_lsn: Option<u64>,
    /// `pg_last_xact_replay_timestamp()` as Unix seconds.
    pub replay_timestamp: Option<f64>,
    pub replay_paused: bool,
}

/// Credentials and timeouts for the monitor's connections.
#[derive(Clone, Debug)]
pub struct ProbeLogin {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub timeout: Duration,
}

pub struct ProbeConn {
    client: Client,
    statement: Statement,
}

impl ProbeConn {
    pub async fn connect(target: &Target, login: &ProbeLogin) -> Result<ProbeConn, LagError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&target.host)
            .port(target.port)
            .user(&login.user)
            .dbname(&login.database)
            .application_name("pgrouter-monitor")
            .connect_timeout(login.timeout);
        if let Some(p) = &login.password {
            cfg.password(p);
        }
        let work = async {
            let tls = crate::backend::tls::SideTls(target.tls.clone());
            cfg.ssl_mode(tls.ssl_mode());
            let (client, connection) = cfg.connect(tls).await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away.
                let _ = connection.await;
            });
            let statement = client.prepare(PROBE_SQL).await?;
            Ok::<_, tokio_postgres::Error>(ProbeConn { client, statement })
        };
        match tokio::time::timeout(login.timeout, work).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(LagError::Postgres {
                target: target.to_string(),
                source: e,
            }),
            Err(_) => Err(LagError::Timeout {
                target: target.to_string(),
                ms: login.timeout.as_millis(),
            }),
        }
    }

    pub async fn probe(&self, target: &Target, timeout: Duration) -> Result<Probe, LagError> {
        let row = match tokio::time::timeout(timeout, self.client.query_one(&self.statement, &[]))
            .await
        {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                return Err(LagError::Postgres {
                    target: target.to_string(),
                    source: e,
                })
            }
            Err(_) => {
                return Err(LagError::Timeout {
                    target: target.to_string(),
                    ms: timeout.as_millis(),
                })
            }
        };
        let bad = |e: tokio_postgres::Error| LagError::Postgres {
            target: target.to_string(),
            source: e,
        };
        let text = |i: usize| -> Result<Option<u64>, LagError> {
            Ok(row
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .and_then(|s| lsn::parse(&s)))
        };
        Ok(Probe {
            in_recovery: row.try_get(0).map_err(bad)?,
            current_lsn: text(1)?,
            replay_lsn: text(2)?,
            receive_lsn: text(3)?,
            replay_timestamp: row.try_get(4).map_err(bad)?,
            replay_paused: row
                .try_get::<_, Option<bool>>(5)
                .map_err(bad)?
                .unwrap_or(false),
        })
    }
}
