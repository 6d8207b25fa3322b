//! Opening and logging into a server connection. Login is slow (a SCRAM
//! login to PostgreSQL 15 costs ~7.5 ms of PBKDF2 and round trips), which is
//! why the pool keeps connections warm and this never runs per transaction.

use super::conn::ServerConn;
use super::keepalive::TcpSettings;
use super::{BackendError, Target};
use crate::auth::passthrough::{KeyClient, KeySlot};
use crate::protocol::{framing, messages, parse};
use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::sync::Arc;
use std::time::Duration;

/// Who to log in as.
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    /// Plaintext password, when the router has one.
    pub password: Option<String>,
    /// Without a password: an "md5..." stored hash (md5 pass-through; only
    /// valid for the role it was made for).
    pub md5_hash: Option<String>,
    /// Without a password: the SCRAM keys the user's last client login
    /// yielded (SCRAM pass-through, crate::auth::passthrough).
    pub scram_keys: Option<Arc<KeySlot>>,
    pub database: String,
    /// Startup `options` (`-c name=value`): session defaults of every
    /// connection of this login, which RESET and DISCARD ALL return to.
    pub options: Option<String>,
}

/// Connects and logs in, within `timeout` for the whole exchange.
pub async fn connect(
    target: Arc<Target>,
    login: &Login,
    timeout: Duration,
    max_message: usize,
    tcp: &TcpSettings,
) -> Result<ServerConn, BackendError> {
    let work = connect_inner(target.clone(), login, max_message, tcp);
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::ConnectTimeout {
            target: target.to_string(),
            ms: timeout.as_millis(),
        }),
    }
}

async fn connect_inner(
    target: Arc<Target>,
    login: &Login,
    max_message: usize,
    tcp: &TcpSettings,
) -> Result<ServerConn, BackendError> {
    let stream = super::tls::open(&target, tcp).await?;
    let mut conn = ServerConn::new(stream, target, max_message);
    login_exchange(&mut conn, login).await?;
    Ok(conn)
}

/// Reads one whole message during login (login messages are small).
async fn next_message(conn: &mut ServerConn) -> Result<BytesMut, BackendError> {
    loop {
        match framing::split_message(&mut conn.buf, 1 << 20) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {
                conn.read_more().await?;
            }
            Err(e) => return Err(BackendError::protocol(&conn.target, e)),
        }
    }
}

async fn login_exchange(conn: &mut ServerConn, login: &Login) -> Result<(), BackendError> {
    let target = conn.target.clone();
    let mut out = BytesMut::new();
    let mut params = vec![
        ("user", login.user.as_str()),
        ("database", login.database.as_str()),
    ];
    if let Some(o) = &login.options {
        params.push(("options", o.as_str()));
    }
    messages::startup(&mut out, &params);
    conn.write_all(&out).await?;
    let mut scram: Option<ScramSha256> = None;
    let mut by_keys: Option<KeyClient> = None;
    let need_password = || {
        login.password.as_deref().ok_or_else(|| {
            BackendError::login(
                &target,
                format!(
                    "the server asks a password for user {:?} and pgrouter has none in plaintext (set server_password)",
                    login.user
                ),
            )
        })
    };
    loop {
        let msg = next_message(conn).await?;
        let body = &msg[5..];
        out.clear();
        match msg[0] {
            b'R' => {
                let code = body
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| BackendError::login(&target, "short authentication message"))?;
                let data = &body[4..];
                match code {
                    0 => {}
                    3 => messages::password(&mut out, need_password()?),
                    5 => {
                        let salt: [u8; 4] = data
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| BackendError::login(&target, "short md5 salt"))?;
                        let hash = match (&login.password, &login.md5_hash) {
                            (None, Some(stored)) => {
                                crate::auth::md5::expected_response(&login.user, stored, salt)
                            }
                            _ => postgres_protocol::authentication::md5_hash(
                                login.user.as_bytes(),
                                need_password()?.as_bytes(),
                                salt,
                            ),
                        };
                        messages::password(&mut out, &hash);
                    }
                    10 => {
                        let offered = data
                            .split(|&b| b == 0)
                            .any(|m| m == crate::auth::scram::MECHANISM.as_bytes());
                        if !offered {
                            return Err(BackendError::login(
                                &target,
                                "the server offers no SASL mechanism pgrouter supports",
                            ));
                        }
                        let keys = login.scram_keys.as_ref().and_then(|k| k.load());
                        match (&login.password, keys) {
                            (None, Some(keys)) => {
                                let c = KeyClient::new(keys);
                                messages::sasl_initial_response(
                                    &mut out,
                                    crate::auth::scram::MECHANISM,
                                    c.first_message().as_bytes(),
                                );
                                by_keys = Some(c);
                            }
                            (None, None) if login.scram_keys.is_some() => {
                                return Err(BackendError::login(
                                    &target,
                                    format!(
                                        "no plaintext password for user {:?}, and no client has logged in as it yet to lend its SCRAM keys (pass-through); set server_password to connect before the first login",
                                        login.user
                                    ),
                                ))
                            }
                            _ => {
                                let s = ScramSha256::new(
                                    need_password()?.as_bytes(),
                                    ChannelBinding::unsupported(),
                                );
                                messages::sasl_initial_response(
                                    &mut out,
                                    crate::auth::scram::MECHANISM,
                                    s.message(),
                                );
                                scram = Some(s);
                            }
                        }
                    }
                    11 if by_keys.is_some() => {
                        let c = by_keys
                            .as_mut()
                            .ok_or_else(|| BackendError::login(&target, "unexpected SASL continue"))?;
                        let reply = c.final_message(data).map_err(|e| {
                            BackendError::login(&target, format!("SCRAM pass-through: {e}"))
                        })?;
                        messages::sasl_response(&mut out, reply.as_bytes());
                    }
                    12 if by_keys.is_some() => {
                        if let Some(c) = by_keys.take() {
                            c.verify(data).map_err(|e| {
                                BackendError::login(&target, format!("SCRAM pass-through: {e}"))
                            })?;
                        }
                    }
                    11 => {
                        let mut s = scram
                            .take()
                            .ok_or_else(|| BackendError::login(&target, "unexpected SASL continue"))?;
                        // PBKDF2 (4096 rounds, milliseconds of CPU) must not
                        // stall the sessions sharing this worker thread.
                        let data = data.to_vec();
                        let s = tokio::task::spawn_blocking(move || s.update(&data).map(|_| s))
                            .await
                            .map_err(|e| BackendError::login(&target, format!("SCRAM: {e}")))?
                            .map_err(|e| BackendError::login(&target, format!("SCRAM: {e}")))?;
                        messages::sasl_response(&mut out, s.message());
                        scram = Some(s);
                    }
                    12 => {
                        let mut s = scram
                            .take()
                            .ok_or_else(|| BackendError::login(&target, "unexpected SASL final"))?;
                        s.finish(data).map_err(|e| {
                            BackendError::login(&target, format!("server's SCRAM signature is wrong: {e}"))
                        })?;
                    }
                    other => {
                        return Err(BackendError::login(
                            &target,
                            format!("unsupported authentication request {other} (pgrouter supports SCRAM-SHA-256, md5, password and trust)"),
                        ))
                    }
                }
                if !out.is_empty() {
                    conn.write_all(&out).await?;
                }
            }
            b'S' => {
                if let Ok((k, v)) = parse::parameter_status(body) {
                    conn.params.set(k, v);
                }
            }
            b'K' if body.len() >= 8 => {
                conn.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                conn.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            }
            b'Z' => return Ok(()),
            b'E' => {
                return Err(BackendError::Refused {
                    target: target.to_string(),
                    fields: parse::error_fields(body),
                })
            }
            b'N' | b'v' => {}
            other => {
                return Err(BackendError::login(
                    &target,
                    format!("unexpected message {:?} during login", other as char),
                ))
            }
        }
    }
}

/// Sends a CancelRequest for the server session `pid`/`secret` on a fresh
/// connection and waits for the server to close it.
pub async fn send_cancel(
    target: &Target,
    pid: i32,
    secret: i32,
    timeout: Duration,
) -> Result<(), BackendError> {
    let work = async {
        // Over TLS too when the server's sessions use it (as libpq does).
        let mut s = super::tls::open(target, &TcpSettings::default()).await?;
        let mut out = BytesMut::new();
        messages::cancel_request(&mut out, pid, secret);
        s.write_all(&out)
            .await
            .map_err(|e| BackendError::io(target, e))?;
        // The server answers nothing and closes; EOF means it has the request.
        out.clear();
        let _ = s.read_buf(&mut out).await;
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::ConnectTimeout {
                target: target.to_string(),
                ms: timeout.as_millis(),
            })
        })
}
