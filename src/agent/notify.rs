//! Notifications: healthchecks.io-style pings (`URL/start`, `URL`, `URL/fail` with the error as
//! the body) and a generic JSON webhook. Sent from a background thread with a short timeout and
//! a few retries, so a slow monitoring service never delays or fails a backup.

use std::time::Duration;

use serde_json::Value;
use tracing::warn;

/// Where to send.
#[derive(Clone, Default)]
pub struct Notifier {
    ping: Option<String>,
    webhook: Option<String>,
}

impl Notifier {
    /// A notifier for the configured URLs (either may be absent).
    pub fn new(ping: Option<String>, webhook: Option<String>) -> Self {
        Notifier {
            ping: ping.map(|u| u.trim_end_matches('/').to_string()),
            webhook,
        }
    }

    /// A backup started.
    pub fn start(&self) {
        if let Some(p) = &self.ping {
            send(format!("{p}/start"), None);
        }
    }

    /// A backup succeeded; `event` is the webhook's JSON body.
    pub fn success(&self, event: Value) {
        if let Some(p) = &self.ping {
            send(p.clone(), None);
        }
        if let Some(w) = &self.webhook {
            send(w.clone(), Some(event.to_string()));
        }
    }

    /// A backup failed with `error`.
    pub fn failure(&self, error: &str, event: Value) {
        if let Some(p) = &self.ping {
            send(format!("{p}/fail"), Some(error.to_string()));
        }
        if let Some(w) = &self.webhook {
            send(w.clone(), Some(event.to_string()));
        }
    }
}

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits until every notification sent so far is delivered or given up, but not past `until`
/// (the process is about to exit).
pub fn flush(until: std::time::Instant) {
    while IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) > 0
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(url: String, body: Option<String>) {
    IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::thread::spawn(move || {
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _done = Done;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(true)
            .build()
            .into();
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=3 {
            let r = match &body {
                Some(b) => agent
                    .post(&url)
                    .header(
                        "Content-Type",
                        if b.starts_with('{') {
                            "application/json"
                        } else {
                            "text/plain"
                        },
                    )
                    .send(b.as_bytes())
                    .map(|_| ()),
                None => agent.post(&url).send_empty().map(|_| ()),
            };
            match r {
                Ok(()) => return,
                Err(e) if attempt == 3 => {
                    warn!(error = %e, url = %redact(&url), "notification failed");
                }
                Err(_) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    });
}

/// Keeps the host, hides the path (a ping URL's path is its secret).
fn redact(url: &str) -> String {
    match url.find("://").map(|p| p + 3) {
        Some(start) => {
            let host_end = url[start..].find('/').map_or(url.len(), |i| start + i);
            format!("{}/…", &url[..host_end])
        }
        None => "<url>".into(),
    }
}
