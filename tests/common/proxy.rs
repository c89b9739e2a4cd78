//! An HTTP proxy between lifeboat and a real S3 server that injects faults (503 SlowDown, 500,
//! connection resets before and after forwarding, truncated bodies, delays) and can act like
//! Storj's gateway: it rejects aws-chunked / checksum-trailer uploads and returns list entries out
//! of order. One request per connection (`Connection: close`), plain threads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    SlowDown503,
    Internal500,
    ResetBeforeForward,
    ResetAfterForward,
    TruncateBody,
    /// Half the body, then a TCP RST (SO_LINGER 0) instead of an orderly close.
    ResetMidBody,
    Delay,
}

#[derive(Default)]
pub struct Plan {
    /// Inject a fault into every Nth request (0: never).
    pub every: u64,
    /// Faults used in turn.
    pub faults: Vec<Fault>,
    /// Fail every request with 503 (the store is "down").
    pub down: bool,
    /// Act like Storj: reject streaming/trailer checksums, reverse list entries.
    pub strict: bool,
    /// Answer 501 NotImplemented to conditional writes (`If-None-Match`), like older gateways.
    pub no_conditional: bool,
    /// Read each request, then send nothing for this long before closing (a stalled store).
    pub stall: Option<Duration>,
    /// Inject `faults[0]` into request number `once_at` only (counted like `requests`; 0:
    /// never), e.g. `ResetAfterForward` to let exactly one request reach the store and lose its
    /// reply. Independent of `every`.
    pub once_at: u64,
    /// Added to every request before it is forwarded (a long round trip), so that concurrent
    /// requests overlap and [`Proxy::peak_in_flight`] shows how many the client keeps going.
    pub latency: Option<Duration>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub plan: Arc<Mutex<Plan>>,
    pub requests: Arc<AtomicU64>,
    pub injected: Arc<AtomicU64>,
    pub rejected_streaming: Arc<AtomicU64>,
    pub shuffled_lists: Arc<AtomicU64>,
    /// Requests being handled now, and the most at any one time (see [`Proxy::reset_peak`]).
    /// A forwarded request stops counting when its answer starts to go out, before the client
    /// can have it: so the count never exceeds what the client has in flight, however late the
    /// handler thread runs afterwards. An injected fault counts until its handler ends.
    pub in_flight: Arc<AtomicU64>,
    pub peak_in_flight: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    offline: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            plan: Arc::new(Mutex::new(Plan::default())),
            requests: Arc::default(),
            injected: Arc::default(),
            rejected_streaming: Arc::default(),
            shuffled_lists: Arc::default(),
            in_flight: Arc::default(),
            peak_in_flight: Arc::default(),
            stop: Arc::default(),
            offline: Arc::default(),
        };
        let (plan, requests, injected, rejected, shuffled, stop, offline) = (
            p.plan.clone(),
            p.requests.clone(),
            p.injected.clone(),
            p.rejected_streaming.clone(),
            p.shuffled_lists.clone(),
            p.stop.clone(),
            p.offline.clone(),
        );
        let addr = p.addr;
        let (in_flight, peak) = (p.in_flight.clone(), p.peak_in_flight.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                // Offline (the store "stopped"): no listener, so connections are refused, until
                // `online` binds the same port again.
                let Some(l) = listener.take() else {
                    if stop.load(SeqCst) {
                        break;
                    }
                    if !offline.load(SeqCst) {
                        listener = TcpListener::bind(addr).ok();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                for conn in l.incoming() {
                    if stop.load(SeqCst) {
                        return;
                    }
                    if offline.load(SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let n = requests.fetch_add(1, SeqCst) + 1;
                    let (fault, down, strict, no_cond) = {
                        let pl = plan.lock().unwrap();
                        let f = (pl.every > 0 && n % pl.every == 0 && !pl.faults.is_empty())
                            .then(|| pl.faults[((n / pl.every) as usize) % pl.faults.len()])
                            .or_else(|| {
                                (pl.once_at != 0 && n == pl.once_at)
                                    .then(|| pl.faults.first().copied())
                                    .flatten()
                            });
                        (f, pl.down, pl.strict, pl.no_conditional)
                    };
                    if fault.is_some() || down {
                        injected.fetch_add(1, SeqCst);
                    }
                    let (rejected, shuffled) = (rejected.clone(), shuffled.clone());
                    let (stall, latency) = {
                        let pl = plan.lock().unwrap();
                        (pl.stall, pl.latency)
                    };
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    std::thread::spawn(move || {
                        let now = in_flight.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        let answered = Leave(in_flight);
                        if let Some(d) = latency {
                            std::thread::sleep(d);
                        }
                        if let Some(d) = stall {
                            let mut conn = conn;
                            let _ = read_head(&mut conn);
                            std::thread::sleep(d);
                            return;
                        }
                        let _ = handle(
                            conn, upstream, fault, down, strict, no_cond, &rejected, &shuffled,
                            answered,
                        );
                    });
                }
            }
        });
        p
    }

    /// Starts a new measurement of [`Proxy::peak_in_flight`].
    pub fn reset_peak(&self) {
        self.peak_in_flight.store(0, SeqCst);
    }

    /// Stops listening (connections are refused, like a stopped server) until [`Proxy::online`].
    pub fn offline(&self) {
        self.offline.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }

    /// Listens again on the same port.
    pub fn online(&self) {
        self.offline.store(false, SeqCst);
    }

    pub fn set(&self, f: impl FnOnce(&mut Plan)) {
        f(&mut self.plan.lock().unwrap());
    }
}

/// Counts a request as finished when dropped: explicitly as its answer starts, or however its
/// handler ends.
struct Leave(Arc<AtomicU64>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            return Ok((head, buf[i + 4..].to_vec()));
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn respond(s: &mut TcpStream, status: &str, code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[allow(clippy::too_many_arguments)]
fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Option<Fault>,
    down: bool,
    strict: bool,
    no_conditional: bool,
    rejected: &AtomicU64,
    shuffled: &AtomicU64,
    answered: Leave,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, mut body) = read_head(&mut client)?;
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let mut b = vec![0u8; 65536];
        let n = client.read(&mut b)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&b[..n]);
    }
    if down {
        return respond(&mut client, "503 Slow Down", "SlowDown");
    }
    if strict {
        let lower = head.to_ascii_lowercase();
        if lower.contains("aws-chunked")
            || lower.contains("streaming-")
            || lower.contains("x-amz-trailer")
            || lower.contains("x-amz-checksum-")
            || lower.contains("x-amz-sdk-checksum-algorithm")
        {
            rejected.fetch_add(1, SeqCst);
            return respond(&mut client, "400 Bad Request", "NotImplemented");
        }
    }
    if no_conditional && header(&head, "if-none-match").is_some() {
        rejected.fetch_add(1, SeqCst);
        return respond(&mut client, "501 Not Implemented", "NotImplemented");
    }
    match fault {
        Some(Fault::SlowDown503) => return respond(&mut client, "503 Slow Down", "SlowDown"),
        Some(Fault::Internal500) => {
            return respond(&mut client, "500 Internal Server Error", "InternalError");
        }
        Some(Fault::ResetBeforeForward) => return client.shutdown(Shutdown::Both),
        Some(Fault::Delay) => std::thread::sleep(Duration::from_millis(300)),
        _ => {}
    }
    // Forward with Connection: close and read the whole answer.
    let mut up = TcpStream::connect(upstream)?;
    let mut fixed = String::new();
    for (i, line) in head.lines().enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        fixed.push_str(line);
        fixed.push_str("\r\n");
    }
    fixed.push_str("Connection: close\r\n\r\n");
    up.write_all(fixed.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if fault == Some(Fault::ResetAfterForward) {
        return client.shutdown(Shutdown::Both);
    }
    let split = find(&resp, b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let (rhead, rbody) = (
        String::from_utf8_lossy(&resp[..split]).into_owned(),
        resp[split..].to_vec(),
    );
    let mut rbody = if header(&rhead, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(&rbody)
    } else {
        rbody
    };
    let is_list = head.starts_with("GET ")
        && head
            .lines()
            .next()
            .is_some_and(|l| l.contains("list-type=2"));
    if strict && is_list {
        rbody = reverse_contents(&rbody);
        shuffled.fetch_add(1, SeqCst);
    }
    let mut out = String::new();
    for line in rhead.trim_end().lines() {
        let l = line.to_ascii_lowercase();
        if l.starts_with("content-length:")
            || l.starts_with("transfer-encoding:")
            || l.starts_with("connection:")
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        rbody.len()
    ));
    drop(answered);
    client.write_all(out.as_bytes())?;
    if fault == Some(Fault::TruncateBody) && rbody.len() > 1 {
        client.write_all(&rbody[..rbody.len() / 2])?;
        return client.shutdown(Shutdown::Both);
    }
    if fault == Some(Fault::ResetMidBody) && rbody.len() > 1 {
        client.write_all(&rbody[..rbody.len() / 2])?;
        reset(&client);
        return Ok(());
    }
    client.write_all(&rbody)
}

/// Makes the kernel answer the next close with RST instead of FIN.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(e) = find(&b[i..], b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[i..i + e])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        i += e + 2;
        if size == 0 || i + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[i..i + size]);
        i += size + 2;
    }
    out
}

/// Reverses the order of `<Contents>` entries in a ListObjectsV2 answer.
fn reverse_contents(body: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(body).into_owned();
    let (Some(first), Some(last)) = (s.find("<Contents>"), s.rfind("</Contents>")) else {
        return body.to_vec();
    };
    let end = last + "</Contents>".len();
    let mut items: Vec<&str> = s[first..end].split_inclusive("</Contents>").collect();
    items.reverse();
    format!("{}{}{}", &s[..first], items.concat(), &s[end..]).into_bytes()
}
