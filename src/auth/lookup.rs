//! `[auth] query`: users not listed in router.toml are looked up on the
//! server taking writes (PgBouncer's auth_query), typically through a
//! SECURITY DEFINER function over pg_authid, so the router never needs a
//! superuser. Answers — a user, or "no such user" — are reused for
//! `cache_ttl`; when the server cannot be asked, an expired answer is
//! reused rather than locking everyone out.
//!
//! The password column is a verifier or an md5 hash, never plaintext: the
//! client is checked against it, and the router logs into the servers with
//! what the client proved (crate::auth::passthrough).

use crate::backend::tls::SideTls;
use crate::backend::Target;
use crate::config::{AuthConfig, AuthMethod, UserConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers kept at most; past it, expired ones go, then all (a storm of
/// random user names must not grow memory without bound).
const MAX_CACHED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("auth.query on {target}: {source}")]
    Postgres {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("auth.query on {target}: no answer within {ms} ms")]
    Timeout { target: String, ms: u128 },
}

struct Cached {
    user: Option<UserConfig>,
    at: Instant,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct LookupStats {
    pub queries: AtomicU64,
    pub cache_hits: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Default)]
pub struct UserLookup {
    cache: Mutex<HashMap<String, Cached>>,
    /// One connection, to the writer it was opened to; queries take turns.
    conn: tokio::sync::Mutex<Option<(Arc<Target>, tokio_postgres::Client)>>,
    pub stats: LookupStats,
}

impl UserLookup {
    /// The user `name` as the query describes it (None: no such user, or
    /// one without a usable password). `writer` is where to ask.
    pub async fn find(
        &self,
        cfg: &AuthConfig,
        writer: &Arc<Target>,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<UserConfig>, LookupError> {
        let Some(query) = &cfg.query else {
            return Ok(None);
        };
        let now = Instant::now();
        let stale = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(name) {
                Some(c) if now.duration_since(c.at) < cfg.cache_ttl.get() => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c.user.clone());
                }
                Some(c) => Some(c.user.clone()),
                None => None,
            }
        };
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        match self.ask(cfg, query, writer, name, timeout).await {
            Ok(user) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED {
                    let ttl = cfg.cache_ttl.get();
                    cache.retain(|_, c| now.duration_since(c.at) < ttl);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(
                    name.to_string(),
                    Cached {
                        user: user.clone(),
                        at: Instant::now(),
                    },
                );
                Ok(user)
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                match stale {
                    Some(user) => {
                        tracing::warn!(error = %e, user = name, "auth.query failed; reusing its expired answer");
                        Ok(user)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets every answer (the query or its settings changed).
    pub fn clear(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn ask(
        &self,
        cfg: &AuthConfig,
        query: &str,
        writer: &Arc<Target>,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<UserConfig>, LookupError> {
        let pg = |source| LookupError::Postgres {
            target: writer.to_string(),
            source,
        };
        let work = async {
            let mut conn = self.conn.lock().await;
            // A connection to another server (the writer moved) or a dead
            // one is replaced.
            let usable = conn
                .as_ref()
                .is_some_and(|(t, c)| Arc::ptr_eq(t, writer) && !c.is_closed());
            if !usable {
                *conn = None;
                let client = connect(cfg, writer).await.map_err(pg)?;
                *conn = Some((writer.clone(), client));
            }
            let Some((_, client)) = conn.as_ref() else {
                return Ok(None);
            };
            let row = match client.query_opt(query, &[&name]).await {
                Ok(row) => row,
                Err(e) => {
                    *conn = None;
                    return Err(pg(e));
                }
            };
            Ok(row.and_then(|row| {
                let password: Option<String> = row.try_get(1).ok().flatten();
                user_from(name, password?)
            }))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Timeout {
                target: writer.to_string(),
                ms: timeout.as_millis(),
            }),
        }
    }
}

/// A looked-up user: checked against its verifier (or md5 hash), logged
/// into servers by pass-through.
fn user_from(name: &str, password: String) -> Option<UserConfig> {
    let auth = if password.starts_with("SCRAM-SHA-256$") {
        crate::auth::scram::Verifier::parse(&password).ok()?;
        AuthMethod::ScramSha256
    } else if crate::auth::md5::is_stored_hash(&password) {
        AuthMethod::Md5
    } else {
        // pg_authid holds no plaintext; anything else is not a password.
        return None;
    };
    Some(UserConfig {
        name: name.to_string(),
        password: Some(password),
        auth,
        server_user: None,
        server_password: None,
        allow: Vec::new(),
    })
}

async fn connect(
    cfg: &AuthConfig,
    writer: &Target,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&writer.host)
        .port(writer.port)
        .dbname(&cfg.query_database)
        .application_name("pgrouter-auth");
    if let Some(u) = &cfg.query_user {
        pg.user(u);
    }
    if let Some(p) = &cfg.query_password {
        pg.password(p);
    }
    let tls = SideTls(writer.tls.clone());
    pg.ssl_mode(tls.ssl_mode());
    let (client, connection) = pg.connect(tls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away.
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verifiers_and_md5_hashes_make_users() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        let u = user_from("a", scram).unwrap_or_else(|| panic!("verifier refused"));
        assert_eq!(u.auth, AuthMethod::ScramSha256);
        assert!(u.server_password.is_none());
        let md5 = crate::auth::md5::stored_hash("a", "pw");
        assert_eq!(user_from("a", md5).map(|u| u.auth), Some(AuthMethod::Md5));
        assert!(user_from("a", "plaintext".into()).is_none());
        assert!(user_from("a", "SCRAM-SHA-256$broken".into()).is_none());
    }
}
