//! HTTP endpoints: `/health/live` (the process serves), `/health/ready`
//! (accepting clients and the server taking writes is reachable) and
//! `/status` (servers, roles, lag, health), JSON bodies with 200/503;
//! `/metrics` (Prometheus text format, [`crate::metrics`]); `/dashboard`.

pub mod status;

/// `/dashboard`: one self-contained page (no external assets) that plots
/// lag, server state, pool usage and request rate from `/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

use crate::app::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves until the process exits: during a drain `/health/ready` answers
/// 503 "draining", so load balancers move new clients elsewhere.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut content_type = "application/json";
    let (status, body) = match req.uri().path() {
        "/metrics" => {
            content_type = "text/plain; version=0.0.4; charset=utf-8";
            match crate::metrics::snapshot::render(&shared) {
                Ok(text) => (StatusCode::OK, text),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/dashboard" => {
            content_type = "text/html; charset=utf-8";
            (StatusCode::OK, DASHBOARD.to_string())
        }
        "/health/live" => (StatusCode::OK, "{\"status\":\"live\"}".to_string()),
        "/health/ready" => ready(&shared).await,
        "/status" => (StatusCode::OK, status::render(&shared)),
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not found\"}".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(resp)
}

async fn ready(shared: &Shared) -> (StatusCode, String) {
    if shared.shutdown.is_triggered() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"draining\",\"primary\":\"unknown\"}".into(),
        );
    }
    if shared.config().lag.enabled && shared.config().routing.enabled {
        return ready_from_monitor(shared);
    }
    let p = &shared.primary;
    let reachable = tokio::time::timeout(
        shared.config().server.server_connect_timeout.get(),
        tokio::net::TcpStream::connect((p.host.as_str(), p.port)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let body = format!(
        "{{\"status\":\"{}\",\"primary\":\"{}\",\"clients\":{}}}",
        if reachable { "ready" } else { "unready" },
        if reachable {
            "reachable"
        } else {
            "unreachable"
        },
        shared.client_count()
    );
    let code = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

/// With the monitor running: ready when the server taking writes answers
/// its probes (reads alone do not make a router ready: most apps write).
fn ready_from_monitor(shared: &Shared) -> (StatusCode, String) {
    use crate::lag::elect::Writer;
    use crate::lag::health::State;
    let (ok, detail) = match &**shared.monitor.writer() {
        Writer::Node(i) => match shared.monitor.nodes().get(*i) {
            Some(n) => {
                let state = n.status.state();
                (
                    state == State::Healthy,
                    format!("{} is {}", n.target, state.as_str()),
                )
            }
            None => (false, "no writer".to_string()),
        },
        Writer::Refused(reason) => (false, reason.clone()),
    };
    let body = format!(
        "{{\"status\":\"{}\",\"primary\":{},\"clients\":{}}}",
        if ok { "ready" } else { "unready" },
        status::quote(&detail),
        shared.client_count()
    );
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}
