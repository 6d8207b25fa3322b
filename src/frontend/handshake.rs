//! Login: startup packet, SSL/GSS refusal, protocol negotiation,
//! authentication, database check, and the session's opening messages.
//! See <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>.

use super::cancel::{CancelKey, ClientInfo};
use super::params;
use super::stream::ClientStream;
use super::ClientError;
use crate::app::{Shared, UserEntry};
use crate::auth::passthrough::ScramKeys;
use crate::auth::scram::{ScramServer, Verifier};
use crate::auth::{md5, AuthError};
use crate::backend::conn::Params;
use crate::config::AuthMethod;
use crate::config::TlsMode;
use crate::pool::{Pool, PoolError};
use crate::protocol::parse::{self, StartupPacket};
use crate::protocol::{messages, sqlstate};
use crate::tenant::Tenant;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// A client that has logged in.
pub struct LoggedIn {
    pub user: Arc<UserEntry>,
    pub database: String,
    /// What the client wants its session parameters to be. Shared with
    /// other clients that want the same (see [`params::Interner`]); copied
    /// on write.
    pub desired: Arc<Params>,
    /// What it asked for at startup (where RESET returns).
    pub startup: Arc<Params>,
    pub pool: Arc<Pool>,
    pub key: CancelKey,
    pub tenant: Arc<Tenant>,
    /// The client's place among its tenant's `max_clients`.
    pub _tenant_slot: OwnedSemaphorePermit,
}

/// What the first packets asked for.
pub enum Outcome {
    LoggedIn(Box<LoggedIn>),
    /// A CancelRequest was handled; close the connection.
    Cancelled,
    /// An admin opened the console (`[admin] database`).
    Admin(CancelKey),
}

/// Runs the whole login. `over_limit` means max_client_conn is reached: the
/// client is told so (53300) once its startup packet is read.
pub async fn login(
    client: &mut ClientStream,
    shared: &Shared,
    over_limit: bool,
    id: u64,
) -> Result<Outcome, ClientError> {
    let tls = shared.tls();
    // Direct TLS (PostgreSQL 17 `sslnegotiation=direct`): a ClientHello
    // where a startup packet would be.
    if client.starts_with_tls().await? {
        let Some(acceptor) = &tls else {
            return Err(ClientError::Tls(std::io::Error::other(
                "direct TLS but tls.mode = \"disable\"",
            )));
        };
        client.start_tls(acceptor, true).await?;
    }
    let startup = loop {
        let packet = client.read_startup().await?;
        match parse::startup_packet(&packet)? {
            request @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                if !client.buf.is_empty() {
                    // Bytes pipelined after SSLRequest would be a plaintext
                    // injection (CVE-2021-23222 class): refuse.
                    return Err(ClientError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "pgrouter: unexpected data after SSL/GSS request",
                    ));
                }
                let ssl = matches!(request, StartupPacket::SslRequest);
                match (&tls, ssl && !client.is_tls()) {
                    (Some(acceptor), true) => {
                        client.write_all(b"S").await?;
                        client.start_tls(acceptor, false).await?;
                    }
                    // 'N': continue in plaintext (or the client gives up
                    // if it requires TLS). No GSSAPI encryption.
                    _ => client.write_all(b"N").await?,
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                let timeout = shared.config().server.server_connect_timeout.get();
                shared.cancels.cancel(pid, secret, timeout).await;
                return Ok(Outcome::Cancelled);
            }
            StartupPacket::Startup(s) => break s,
        }
    };
    if !client.is_tls() && shared.config().tls.mode == TlsMode::Require {
        // As PostgreSQL's hostssl rules answer a plaintext login.
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "pgrouter: TLS is required (tls.mode = \"require\"); connect with sslmode=require",
        ));
    }
    if let Some(ip) = client.peer().map(|p| p.ip()) {
        let limits = shared.config().auth.limits();
        if let Err(wait) = shared.logins.check(ip, limits, std::time::Instant::now()) {
            // Before any password exchange, whoever the user is: a guesser
            // learns nothing more, and costs the router nothing more.
            return Err(ClientError::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                format!(
                    "pgrouter: too many failed logins from host \"{ip}\"; try again in {} s",
                    wait.as_secs().max(1)
                ),
            ));
        }
    }
    if over_limit {
        return Err(ClientError::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!(
                "pgrouter: sorry, too many clients already (max_client_conn = {})",
                shared.config().server.max_client_conn
            ),
        ));
    }
    let user_name = startup
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ClientError::Refused("no PostgreSQL user name specified in startup packet".into())
        })?
        .to_string();
    admit_address(
        client,
        shared,
        &user_name,
        startup.get("database").unwrap_or(&user_name),
    )?;
    if startup
        .get("replication")
        .is_some_and(|v| v != "false" && v != "0" && v != "off")
    {
        return Err(ClientError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "pgrouter: replication connections are not supported; connect to the server directly",
        ));
    }
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user_name)
        .to_string();
    let requested = params::from_startup(&startup.params)?;

    let mut out = BytesMut::new();
    let unknown_options: Vec<String> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if startup.minor > 0 || !unknown_options.is_empty() {
        messages::negotiate_protocol_version(&mut out, 0, &unknown_options);
    }

    let user = shared.find_user(&user_name).await.map_err(|e| {
        ClientError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("pgrouter: cannot check the password: {e}"),
        )
    })?;
    let keys = authenticate(client, &mut out, user.as_deref(), &user_name).await?;
    let Some(user) = user else {
        // authenticate() never succeeds for unknown users.
        return Err(ClientError::AuthFailed { user: user_name });
    };
    if let (Some(keys), None) = (keys, &user.server_password) {
        // SCRAM pass-through: the server logins of this user use them.
        shared.key_slot(&user.cfg.name).store(keys);
    }
    if database == shared.config().admin.database {
        return admin_login(client, shared, out, &user, id).await;
    }
    // Checked only now, after the password: before it, the answer would
    // tell a stranger which tenant a user name belongs to.
    if let Some((mine, theirs)) = shared.tenants().crossing(&user.cfg.name, &database) {
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            format!(
                "pgrouter: user \"{}\" of tenant \"{}\" may not connect to database \"{database}\" of tenant \"{}\"",
                user.cfg.name, mine.name, theirs.name
            ),
        ));
    }
    let tenant = shared.tenant_of(&user, &database).clone();
    let tenant_slot = tenant
        .admit_client()
        .map_err(|e| ClientError::fatal(e.sqlstate(), e.to_string()))?;
    messages::auth_ok(&mut out);
    client.write_all(&out).await?;
    out.clear();

    let pool = shared.primary_pool(&user, &database);
    let proved = prove(shared, &user, &database, &pool).await?;
    let defaults = proved
        .defaults()
        .or_else(|| pool.defaults())
        .unwrap_or_default();
    let mut desired = Params::default();
    for name in params::CLIENT_SETTABLE {
        if let Some(v) = defaults.get(name) {
            desired.set(name, v);
        }
    }
    for (k, v) in requested.values() {
        desired.set(k, v);
    }
    for (k, v) in defaults.values() {
        messages::parameter_status(&mut out, k, desired.get(k).unwrap_or(v));
    }
    for (k, v) in requested.values() {
        if defaults.get(k).is_none() && params::is_client_settable(k) {
            messages::parameter_status(&mut out, k, v);
        }
    }
    let key = shared.cancels.register(ClientInfo::new(
        id,
        &user.cfg.name,
        &database,
        tenant.name.clone(),
        client.peer(),
    ));
    messages::backend_key_data(&mut out, key.pid, key.secret);
    messages::ready_for_query(&mut out, b'I');
    client.write_all(&out).await?;
    Ok(Outcome::LoggedIn(Box::new(LoggedIn {
        user,
        database,
        desired: shared.param_sets.intern(desired),
        startup: shared.param_sets.intern(requested),
        pool,
        key,
        tenant,
        _tenant_slot: tenant_slot,
    })))
}

/// Network rules (`allow` of the user, and of its tenant): checked before
/// authentication, with one message whether or not the user exists (an
/// unknown name meets the rules of the tenant it would belong to).
fn admit_address(
    client: &ClientStream,
    shared: &Shared,
    user: &str,
    database: &str,
) -> Result<(), ClientError> {
    let Some(ip) = client.peer().map(|p| p.ip()) else {
        return Ok(());
    };
    let config = shared.config();
    let tenant = shared.tenants().resolve(user, database).name.clone();
    let user_rules = config
        .users
        .iter()
        .find(|u| u.name == user)
        .map(|u| &u.allow);
    let tenant_rules = config.tenants.get(&*tenant).map(|t| &t.allow);
    if [user_rules, tenant_rules]
        .into_iter()
        .flatten()
        .all(|rules| crate::auth::allow::admits(rules, ip))
    {
        return Ok(());
    }
    Err(ClientError::fatal(
        sqlstate::INVALID_AUTHORIZATION,
        format!(
            "pgrouter: no allow rule admits host \"{ip}\" for user \"{user}\", database \"{database}\""
        ),
    ))
}

/// Opens the admin console for an authenticated user, or refuses a
/// non-admin with 42501.
async fn admin_login(
    client: &mut ClientStream,
    shared: &Shared,
    mut out: BytesMut,
    user: &UserEntry,
    id: u64,
) -> Result<Outcome, ClientError> {
    let (admins, admin_db) = {
        let config = shared.config();
        (config.admin.users.clone(), config.admin.database.clone())
    };
    if !admins.contains(&user.cfg.name) {
        return Err(ClientError::fatal(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "pgrouter: permission denied: user \"{}\" is not an admin (admin.users)",
                user.cfg.name
            ),
        ));
    }
    messages::auth_ok(&mut out);
    for (k, v) in [
        ("server_version", "15.0 (pgrouter admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        messages::parameter_status(&mut out, k, v);
    }
    let key = shared.cancels.register(ClientInfo::new(
        id,
        &user.cfg.name,
        &admin_db,
        "(admin)".into(),
        client.peer(),
    ));
    messages::backend_key_data(&mut out, key.pid, key.secret);
    messages::ready_for_query(&mut out, b'I');
    client.write_all(&out).await?;
    Ok(Outcome::Admin(key))
}

/// Verifies the client's password. Unknown users run a SCRAM exchange
/// against a made-up verifier and fail exactly like a wrong password.
/// After SCRAM, returns the client's keys (for pass-through).
async fn authenticate(
    client: &mut ClientStream,
    out: &mut BytesMut,
    user: Option<&UserEntry>,
    user_name: &str,
) -> Result<Option<ScramKeys>, ClientError> {
    let failed = || ClientError::AuthFailed {
        user: user_name.to_string(),
    };
    let method = user.map(|u| u.cfg.auth).unwrap_or(AuthMethod::ScramSha256);
    match method {
        AuthMethod::Trust => Ok(None),
        AuthMethod::Md5 => {
            let secret = user
                .and_then(|u| u.cfg.password.as_deref())
                .ok_or_else(failed)?;
            let salt: [u8; 4] = rand::random();
            messages::auth_md5(out, salt);
            client.write_all(out).await?;
            out.clear();
            let msg = expect_password_message(client).await?;
            let response = parse::password(&msg[5..])?;
            if md5::verify(user_name, secret, salt, response) {
                Ok(None)
            } else {
                Err(failed())
            }
        }
        AuthMethod::ScramSha256 => {
            let (verifier, doomed) = match user.and_then(|u| u.verifier.clone()) {
                Some(v) => (v, false),
                None => (Verifier::unmatchable(user_name.as_bytes()), true),
            };
            // TLS clients are offered channel binding too.
            let end_point = client.end_point().map(Into::into);
            let mut scram = ScramServer::new(verifier, doomed, end_point);
            messages::auth_sasl(out, scram.mechanisms());
            client.write_all(out).await?;
            out.clear();
            let msg = expect_password_message(client).await?;
            let (mechanism, data) = parse::sasl_initial_response(&msg[5..])?;
            let first = scram
                .client_first(mechanism, data)
                .map_err(|e| scram_error(e, user_name))?;
            messages::auth_sasl_continue(out, first.as_bytes());
            client.write_all(out).await?;
            out.clear();
            let msg = expect_password_message(client).await?;
            let last = scram
                .client_final(&msg[5..])
                .map_err(|e| scram_error(e, user_name))?;
            messages::auth_sasl_final(out, last.as_bytes());
            Ok(scram.keys())
        }
    }
}

fn scram_error(e: AuthError, user: &str) -> ClientError {
    match e {
        AuthError::Failed => ClientError::AuthFailed {
            user: user.to_string(),
        },
        AuthError::Malformed(m) => {
            ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, format!("pgrouter: {m}"))
        }
    }
}

async fn expect_password_message(client: &mut ClientStream) -> Result<BytesMut, ClientError> {
    let msg = client.read_message().await?;
    if msg[0] != b'p' {
        return Err(ClientError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "pgrouter: expected a password response, got message type {:?}",
                msg[0] as char
            ),
        ));
    }
    Ok(msg)
}

/// Proves the database exists and the router can log into it (so errors such
/// as 3D000 come at login) the first time it is used, and loads its catalog
/// for routing. Tries the server taking writes first (another one after a
/// discovered failover); if that server is down, a healthy replica will do,
/// so clients can still log in and read while the primary is away.
/// Returns the pool that proved it.
async fn prove(
    shared: &Shared,
    user: &Arc<crate::app::UserEntry>,
    database: &str,
    primary: &Arc<Pool>,
) -> Result<Arc<Pool>, ClientError> {
    let writer = shared
        .writer_pool(user, database)
        .unwrap_or_else(|_| primary.clone());
    let needs_catalog = shared.needs_catalog(database);
    if writer.is_proven() && !needs_catalog {
        return Ok(writer);
    }
    let routing = shared.config().routing.enabled;
    let replicas: Vec<Arc<Pool>> = shared
        .replicas()
        .list
        .iter()
        .filter(|r| routing && r.is_usable(std::time::Instant::now))
        .map(|r| shared.pool_for(&r.target, user, database))
        .collect();
    let mut last = None;
    for pool in std::iter::once(writer).chain(replicas) {
        match pool.acquire(pool.wait_limit()).await {
            Ok(mut conn) => {
                // Before any read of this database is routed: which of its
                // functions write (a standby has the same catalog).
                if needs_catalog {
                    shared.load_catalog(database, &mut conn).await;
                }
                conn.release();
                return Ok(pool);
            }
            Err(PoolError::Backend(e)) if e.server_unavailable() => {
                shared.pools.forget_unproven(&pool);
                last = Some((e.sqlstate().to_string(), e.client_message()));
            }
            Err(e) => {
                shared.pools.forget_unproven(&pool);
                return Err(ClientError::fatal(e.sqlstate(), e.client_message()));
            }
        }
    }
    let (code, message) = last.unwrap_or_else(|| {
        (
            sqlstate::CONNECTION_FAILURE.to_string(),
            "pgrouter: no server is available".to_string(),
        )
    });
    Err(ClientError::fatal(&code, message))
}
