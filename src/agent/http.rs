//! The agent's HTTP endpoints (off unless `LIFEBOAT_LISTEN` is set):
//! `/healthz`, `/readyz`, `/metrics` for probes and scrapers, and `GET /status` and
//! `POST /backup[?wait=1]` for control. Control needs `Authorization: Bearer <LIFEBOAT_CONTROL_TOKEN>`
//! because a port exposed on Akash faces the internet; without a configured token it is off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tiny_http::{Header, Method, Request, Response, Server};
use tracing::{info, warn};

use super::state::State;
use crate::error::{Error, Result};

/// What `POST /backup` calls: runs (or queues) a backup; with `wait`, returns the snapshot id.
pub type Trigger = Arc<dyn Fn(bool) -> std::result::Result<Option<String>, String> + Send + Sync>;

/// Starts the server on its own threads.
pub fn serve(
    addr: SocketAddr,
    state: Arc<State>,
    name: String,
    token: Option<String>,
    trigger: Trigger,
) -> Result<SocketAddr> {
    let server = Server::http(addr)
        .map_err(|e| Error::invalid(format!("LIFEBOAT_LISTEN={addr}: cannot listen: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::invalid("LIFEBOAT_LISTEN: not an IP address"))?;
    info!(address = %bound, "HTTP endpoints listening");
    let server = Arc::new(server);
    for _ in 0..2 {
        let (server, state, name, token, trigger) = (
            server.clone(),
            state.clone(),
            name.clone(),
            token.clone(),
            trigger.clone(),
        );
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                handle(req, &state, &name, token.as_deref(), &trigger);
            }
        });
    }
    Ok(bound)
}

fn text(code: u16, body: impl Into<String>, ctype: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body.into())
        .with_status_code(code)
        .with_header(Header::from_bytes("Content-Type", ctype).expect("valid header"))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &Request, token: Option<&str>) -> std::result::Result<(), (u16, &'static str)> {
    let Some(token) = token else {
        return Err((
            403,
            "control endpoints are off: set LIFEBOAT_CONTROL_TOKEN\n",
        ));
    };
    let given = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err((401, "missing or wrong bearer token\n"))
    }
}

fn handle(req: Request, state: &State, name: &str, token: Option<&str>, trigger: &Trigger) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let json = "application/json";
    let plain = "text/plain; charset=utf-8";
    let resp = match (req.method(), path) {
        (Method::Get, "/healthz") => text(200, "ok\n", plain),
        (Method::Get, "/readyz") => {
            if state.ready.load(Relaxed) {
                text(200, "ready\n", plain)
            } else {
                text(503, "restore gate has not passed yet\n", plain)
            }
        }
        (Method::Get, "/metrics") => text(200, state.metrics(name), "text/plain; version=0.0.4"),
        (Method::Get, "/status") => match authorized(&req, token) {
            Ok(()) => text(200, state.status(name).to_string(), json),
            Err((c, m)) => text(c, m, plain),
        },
        (Method::Post, "/backup") => match authorized(&req, token) {
            Err((c, m)) => text(c, m, plain),
            Ok(()) => {
                let wait = query.split('&').any(|p| p == "wait=1" || p == "wait=true");
                match trigger(wait) {
                    Ok(Some(id)) => {
                        text(200, serde_json::json!({"snapshot": id}).to_string(), json)
                    }
                    Ok(None) => text(202, "{\"accepted\":true}", json),
                    Err(e) => text(
                        if e.contains("already running") {
                            409
                        } else {
                            500
                        },
                        serde_json::json!({"error": e}).to_string(),
                        json,
                    ),
                }
            }
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/status" | "/backup") => {
            text(405, "method not allowed\n", plain)
        }
        _ => text(404, "not found\n", plain),
    };
    if let Err(e) = req.respond(resp) {
        warn!(error = %e, "HTTP response failed");
    }
}
