//! The admin console: `psql -U <admin user> pgrouter` speaks to the router
//! itself. Simple Query protocol only (what psql uses); results are text.
//!
//! - [`command`]: parsing `SHOW ...`, `RELOAD`, `PAUSE`, `RESUME`, `SHUTDOWN`.
//! - [`show`]: the SHOW tables, built from live state.
//!
//! Only users listed in `[admin] users` get here; others are refused with
//! 42501 at login.

pub mod command;
pub mod show;

use crate::app::Shared;
use crate::frontend::cancel::CancelKey;
use crate::frontend::stream::ClientStream;
use crate::frontend::ClientError;
use crate::protocol::messages::{self, Severity};
use crate::protocol::{parse, sqlstate};
use bytes::BytesMut;
use command::Command;
use std::time::Duration;

/// Serves an admin client until it leaves.
pub async fn run(
    shared: &Shared,
    client: &mut ClientStream,
    key: CancelKey,
) -> Result<(), ClientError> {
    let _key = key;
    let mut out = BytesMut::new();
    loop {
        let msg = client.read_message().await?;
        out.clear();
        match msg[0] {
            b'X' => return Ok(()),
            b'Q' => {
                let (text, _) = parse::cstr(&msg[5..], "Query")?;
                let text = text.to_string();
                let mut any = false;
                for cmd in command::split(&text) {
                    any = true;
                    if !execute(shared, cmd, &mut out).await {
                        break;
                    }
                }
                if !any {
                    messages::empty_query_response(&mut out);
                }
                messages::ready_for_query(&mut out, b'I');
                client.write_all(&out).await?;
                if shared.shutdown.is_triggered() {
                    return Ok(());
                }
            }
            b'S' => {
                messages::ready_for_query(&mut out, b'I');
                client.write_all(&out).await?;
            }
            // The extended protocol: refuse once, at its Sync.
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
                if msg[0] == b'P' {
                    messages::error_response(
                        &mut out,
                        Severity::Error,
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "pgrouter: the admin console speaks the simple query protocol only",
                        None,
                    );
                    client.write_all(&out).await?;
                }
            }
            tag => {
                return Err(ClientError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "pgrouter: unexpected message type {:?} on the admin console",
                        tag as char
                    ),
                ))
            }
        }
    }
}

/// Runs one command, writing its answer. Returns false after an error (the
/// rest of the Query is skipped, as PostgreSQL does).
async fn execute(shared: &Shared, text: &str, out: &mut BytesMut) -> bool {
    let cmd = match command::parse(text) {
        Ok(c) => c,
        Err(m) => {
            let msg = format!("pgrouter: {m}");
            messages::error_response(out, Severity::Error, sqlstate::SYNTAX_ERROR, &msg, None);
            return false;
        }
    };
    tracing::info!(command = %text, "admin command");
    match cmd {
        Command::Show(what) => {
            let t = show::show(shared, what);
            messages::row_description(out, t.columns);
            for row in &t.rows {
                let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                messages::data_row(out, &values);
            }
            messages::command_complete(out, &format!("SHOW {}", t.rows.len()));
            true
        }
        Command::Reload => {
            let result = crate::reload::reload(shared);
            crate::reload::log(&result, "RELOAD");
            match result {
                Ok(summary) => {
                    messages::notice(out, &format!("pgrouter: {summary}"));
                    messages::command_complete(out, "RELOAD");
                    true
                }
                Err(e) => {
                    let msg =
                        format!("pgrouter: reload refused, the running configuration stays: {e}");
                    messages::error_response(
                        out,
                        Severity::Error,
                        sqlstate::INVALID_PARAMETER_VALUE,
                        &msg,
                        None,
                    );
                    false
                }
            }
        }
        Command::Pause(tenant) | Command::Resume(tenant) if !tenant_exists(shared, &tenant) => {
            let msg = format!("pgrouter: no tenant named {:?}", tenant.unwrap_or_default());
            messages::error_response(out, Severity::Error, sqlstate::UNDEFINED_OBJECT, &msg, None);
            false
        }
        Command::Pause(tenant) => {
            pause(shared, tenant.as_deref()).await;
            messages::command_complete(out, "PAUSE");
            true
        }
        Command::Resume(tenant) => {
            for t in selected(shared, tenant.as_deref()) {
                t.resume();
            }
            messages::command_complete(out, "RESUME");
            true
        }
        Command::Shutdown => {
            tracing::info!("SHUTDOWN from the admin console: draining clients");
            shared.shutdown.trigger();
            shared.cancels.shutdown_all();
            messages::command_complete(out, "SHUTDOWN");
            true
        }
    }
}

fn tenant_exists(shared: &Shared, tenant: &Option<String>) -> bool {
    match tenant {
        None => true,
        Some(name) => shared.tenants().all().iter().any(|t| &*t.name == name),
    }
}

fn selected(shared: &Shared, tenant: Option<&str>) -> Vec<std::sync::Arc<crate::tenant::Tenant>> {
    shared
        .tenants()
        .all()
        .iter()
        .filter(|t| tenant.is_none_or(|n| &*t.name == n))
        .cloned()
        .collect()
}

/// Holds new transactions, waits for running ones to finish, then closes
/// the tenants' idle server connections (so a server can be restarted).
async fn pause(shared: &Shared, tenant: Option<&str>) {
    for t in selected(shared, tenant) {
        t.pause();
    }
    while selected(shared, tenant).iter().any(|t| t.active() > 0) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in shared.pools.all() {
        if tenant.is_none_or(|n| &**p.tenant() == n) {
            p.close_idle();
        }
    }
}
