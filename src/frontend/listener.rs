//! Accepts client connections. `max_client_conn` is a semaphore: a client
//! holds a permit for its whole life, which also lets shutdown wait for all
//! sessions to end. Clients over the limit are told so (53300) by a small,
//! separately bounded set of tasks; beyond that they are closed at once.

use super::handshake::{self, Outcome};
use super::session;
use super::stream::ClientStream;
use super::workers::{Job, LiveGuard, Workers};
use crate::app::Shared;
use crate::protocol::messages::{self, Severity};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn, Instrument};

/// Accepts until shutdown, handing clients to the session workers.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, workers: Workers) {
    let shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared
            .config()
            .server
            .tcp_settings()
            .apply(socket2::SockRef::from(&stream));
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let permit = shared.client_slots.try_acquire();
        let overflow = match permit {
            Some(_) => None,
            None => match shared.overflow_slots.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    debug!(%peer, "over max_client_conn and overflow: closing");
                    continue;
                }
            },
        };
        workers.dispatch(Job {
            stream,
            permit,
            overflow,
        });
    }
    info!("listener stopped accepting");
}

/// One client, from its first byte to its last. Its log lines carry its
/// id (the `client` span; SHOW CLIENTS lists the same id).
///
/// One such future lives per connected client, so it is kept small: an
/// `async move` block (an `async fn` would hold its arguments twice), the
/// login boxed before the block (its state, and the socket it takes, are
/// gone once the client is in; captured, the socket's slot would stay),
/// and the session awaited straight from a boxed hand-over.
pub(crate) fn handle(
    stream: TcpStream,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
    overflow: Option<OwnedSemaphorePermit>,
    live: LiveGuard,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let id = shared.next_client_id();
    let span = tracing::info_span!("client", id);
    let login = Box::pin(login_phase(id, stream, shared.clone(), permit.is_none()));
    async move {
        let ready = login.await;
        if let Some(ready) = ready {
            match session::run(&shared, *ready).await {
                Ok(()) | Err(super::ClientError::Gone(_)) => debug!("client left"),
                Err(e) => info!(side = e.side(), error = %e, "client session ended with an error"),
            }
        }
        drop(permit);
        drop(overflow);
        drop(live);
    }
    .instrument(span)
}

/// Logs the client in (or serves its cancel request or admin console).
/// Returns the client when it is ready for a session.
async fn login_phase(
    id: u64,
    stream: TcpStream,
    shared: Arc<Shared>,
    over_limit: bool,
) -> Option<Box<session::Ready>> {
    let shared = &*shared;
    let mut client = ClientStream::new(stream, shared.config().server.max_message_size);
    let peer = client.peer();
    let login_timeout = shared.config().server.client_login_timeout.get();
    let outcome = tokio::time::timeout(
        login_timeout,
        handshake::login(&mut client, shared, over_limit, id),
    )
    .await;
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => Err(super::ClientError::LoginTimeout(login_timeout.as_millis())),
    };
    match (&outcome, peer) {
        (Ok(Outcome::LoggedIn(_) | Outcome::Admin(_)), _) => shared.logins.succeeded(),
        (
            Err(super::ClientError::AuthFailed { .. } | super::ClientError::LoginTimeout(_)),
            Some(peer),
        ) => {
            let limits = shared.config().auth.limits();
            if shared
                .logins
                .failed(peer.ip(), limits, std::time::Instant::now())
            {
                warn!(
                    ip = %peer.ip(),
                    lockout_s = limits.lockout.as_secs(),
                    "too many failed logins: address locked out"
                );
            }
        }
        _ => {}
    }
    match outcome {
        Ok(Outcome::Cancelled) => None,
        Ok(Outcome::Admin(key)) => {
            info!(?peer, "admin console opened");
            if let Err(e) = Box::pin(crate::admin::run(shared, &mut client, key)).await {
                if let Some((code, message)) = e.response() {
                    let mut out = BytesMut::new();
                    messages::error_response(&mut out, Severity::Fatal, code, &message, None);
                    let _ = client.write_all(&out).await;
                }
            }
            None
        }
        Ok(Outcome::LoggedIn(login)) => {
            debug!(?peer, user = %login.user.cfg.name, db = %login.database, "client logged in");
            Some(Box::new(session::Ready {
                client,
                login: *login,
            }))
        }
        Err(e) => {
            match &e {
                super::ClientError::Gone(_) => {
                    debug!(?peer, "client left during login")
                }
                _ => info!(?peer, side = e.side(), error = %e, "login failed"),
            }
            if let Some((code, message)) = e.response() {
                let mut out = BytesMut::new();
                messages::error_response(&mut out, Severity::Fatal, code, &message, None);
                let _ = client.write_all(&out).await;
            }
            None
        }
    }
}
