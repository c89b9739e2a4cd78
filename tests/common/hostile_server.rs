//! A hostile S3 server on 127.0.0.1: it serves a real repository from a local directory (the
//! bucket), path-style `/bucket/key`, and misbehaves in one chosen way. Plain threads, HTTP/1.1,
//! one request per connection (`Connection: close`), no authentication (any signature passes).
//!
//! Served: GET object (whole or `Range: bytes=a-b`), HEAD object and bucket, ListObjectsV2
//! (`prefix`, `continuation-token`, `max-keys`), PUT (with `If-None-Match: *` → 412 when the
//! object exists), DELETE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// The one way the server misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Misbehaviour {
    /// An honest server.
    None,
    /// (a) `GET config` answers with an endless body (no Content-Length).
    EndlessConfig,
    /// (b) GETs of objects under this directory (`keys/`, `snapshots/`) announce their true
    /// Content-Length and then send the object followed by 64 MiB of junk.
    LongerThanDeclared(&'static str),
    /// (b') GETs of objects under this directory announce a Content-Length of 5 GB and stream.
    HugeDeclared(&'static str),
    /// (c) Ranged GETs of packs (`data/`) answer 206 with an endless body (no Content-Length).
    EndlessRanges,
    /// (d) GETs of keys ending with this suffix send one byte per second.
    Drip(&'static str),
    /// (e) Every listing page is truncated, with a fresh (`false`) or the same (`true`)
    /// continuation token.
    EndlessPages { repeat: bool },
    /// (f) Listings under `data/` hold this many generated keys (plus the real ones).
    HugeListing(usize),
    /// (g) Listings also hold invalid keys: non-ASCII, `..`, control characters, outside the
    /// prefix.
    BadKeys,
}

/// The keys [`Misbehaviour::BadKeys`] adds to a listing of `prefix` (relative to the bucket).
pub fn bad_keys(repo_prefix: &str, prefix: &str) -> Vec<String> {
    let p = format!("{repo_prefix}/{prefix}");
    vec![
        format!("{p}../../../canary"),
        format!("{p}../../canary"),
        format!("{repo_prefix}/index/../../etc/x"),
        format!("{p}\u{e9}t\u{e9}-\u{2026}"),
        format!("{p}a\u{1}b"),
        format!("{p}ab/../../../../canary"),
        format!("/{p}abs"),
        "elsewhere/x".to_string(),
    ]
}

pub struct HostileServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    /// Requests for keys that are not valid object keys (a client must never ask for them).
    pub bad_requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Ctx {
    root: PathBuf,
    bucket: String,
    mode: Misbehaviour,
    pages: AtomicU64,
    bad_requests: Arc<AtomicU64>,
    huge: std::sync::OnceLock<Vec<(String, u64, String)>>,
}

impl HostileServer {
    /// Serves `root` as bucket `bucket`.
    pub fn start(root: &Path, bucket: &str, mode: Misbehaviour) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = HostileServer {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            bad_requests: Arc::default(),
            stop: Arc::default(),
        };
        let ctx = Arc::new(Ctx {
            root: root.to_path_buf(),
            bucket: bucket.to_string(),
            mode,
            pages: AtomicU64::new(0),
            bad_requests: s.bad_requests.clone(),
            huge: std::sync::OnceLock::new(),
        });
        let (requests, stop) = (s.requests.clone(), s.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                requests.fetch_add(1, SeqCst);
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &ctx);
                });
            }
        });
        s
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

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{1}', "&#x1;")
}

fn respond(s: &mut TcpStream, status: &str, extra: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)
}

fn error(s: &mut TcpStream, status: &str, code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    );
    respond(
        s,
        status,
        "Content-Type: application/xml\r\n",
        body.as_bytes(),
    )
}

/// Writes junk until the client goes away (or a large safety limit is reached).
fn endless(s: &mut TcpStream) -> std::io::Result<()> {
    let junk = vec![0x5au8; 64 * 1024];
    for _ in 0..(64 * 1024) {
        s.write_all(&junk)?;
    }
    Ok(())
}

fn etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}{:x}{:x}\"",
        meta.ino(),
        meta.mtime_nsec(),
        meta.len()
    )
}

fn handle(mut c: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let split = loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let first = head.lines().next().unwrap_or("").to_string();
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: Vec<(String, String)> = query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let path = percent_decode(path);
    let path = path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket != ctx.bucket {
        return error(&mut c, "404 Not Found", "NoSuchBucket");
    }
    if key.is_empty() {
        return match method {
            "GET" if q("list-type").as_deref() == Some("2") => list(&mut c, ctx, &q),
            "HEAD" | "PUT" => respond(&mut c, "200 OK", "", b""),
            _ => error(&mut c, "400 Bad Request", "InvalidRequest"),
        };
    }
    if lifeboat::backend::validate_key(key).is_err() {
        ctx.bad_requests.fetch_add(1, SeqCst);
        return error(&mut c, "400 Bad Request", "InvalidObjectName");
    }
    let file = ctx.root.join(key);
    match method {
        "GET" | "HEAD" => get(&mut c, ctx, method, key, &file, header(&head, "range")),
        "PUT" => {
            if header(&head, "if-none-match") == Some("*") && file.exists() {
                return error(&mut c, "412 Precondition Failed", "PreconditionFailed");
            }
            std::fs::create_dir_all(file.parent().unwrap())?;
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &body)?;
            std::fs::rename(&tmp, &file)?;
            let tag = etag(&std::fs::metadata(&file)?);
            respond(&mut c, "200 OK", &format!("ETag: {tag}\r\n"), b"")
        }
        "DELETE" => {
            let _ = std::fs::remove_file(&file);
            respond(&mut c, "204 No Content", "", b"")
        }
        _ => error(&mut c, "405 Method Not Allowed", "MethodNotAllowed"),
    }
}

fn get(
    c: &mut TcpStream,
    ctx: &Ctx,
    method: &str,
    key: &str,
    file: &Path,
    range: Option<&str>,
) -> std::io::Result<()> {
    let Ok(meta) = std::fs::metadata(file) else {
        return if method == "HEAD" {
            respond(c, "404 Not Found", "", b"")
        } else {
            error(c, "404 Not Found", "NoSuchKey")
        };
    };
    let size = meta.len();
    let tag = format!("ETag: {}\r\n", etag(&meta));
    if method == "HEAD" {
        return write!(
            c,
            "HTTP/1.1 200 OK\r\n{tag}Content-Length: {size}\r\nConnection: close\r\n\r\n"
        );
    }
    let data = std::fs::read(file)?;
    let rel = key.split_once('/').map_or(key, |(_, r)| r);
    let (status, extra, bytes) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = b.parse().unwrap_or(size.saturating_sub(1)).min(size - 1);
            if a >= size || a > b {
                return error(c, "416 Range Not Satisfiable", "InvalidRange");
            }
            if ctx.mode == Misbehaviour::EndlessRanges && rel.starts_with("data/") {
                write!(
                    c,
                    "HTTP/1.1 206 Partial Content\r\n{tag}Content-Range: bytes {a}-{b}/{size}\r\nConnection: close\r\n\r\n"
                )?;
                return endless(c);
            }
            (
                "206 Partial Content",
                format!("{tag}Content-Range: bytes {a}-{b}/{size}\r\n"),
                data[a as usize..=b as usize].to_vec(),
            )
        }
        None => ("200 OK", tag, data),
    };
    match &ctx.mode {
        Misbehaviour::EndlessConfig if rel == "config" => {
            write!(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            endless(c)
        }
        Misbehaviour::LongerThanDeclared(dir) if rel.starts_with(dir) => {
            write!(
                c,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            c.write_all(&bytes)?;
            let junk = vec![0xa5u8; 1 << 20];
            for _ in 0..64 {
                c.write_all(&junk)?;
            }
            Ok(())
        }
        Misbehaviour::HugeDeclared(dir) if rel.starts_with(dir) => {
            write!(
                c,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: 5000000000\r\nConnection: close\r\n\r\n"
            )?;
            c.write_all(&bytes)?;
            endless(c)
        }
        Misbehaviour::Drip(suffix) if rel.ends_with(suffix) => {
            write!(
                c,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            for b in bytes {
                c.write_all(&[b])?;
                c.flush()?;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        }
        _ => respond(c, status, &extra, &bytes),
    }
}

/// Every key (relative to the bucket) under `prefix`, sorted.
fn stored_keys(root: &Path, prefix: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if prefix.starts_with(&(rel.clone() + "/")) || rel.starts_with(prefix) {
                    stack.push(p);
                }
            } else if rel.starts_with(prefix)
                && !rel.contains(".tmp")
                && let Ok(m) = e.metadata()
            {
                out.push((rel, m.len(), etag(&m)));
            }
        }
    }
    out.sort();
    out
}

fn list(c: &mut TcpStream, ctx: &Ctx, q: &dyn Fn(&str) -> Option<String>) -> std::io::Result<()> {
    let prefix = q("prefix").unwrap_or_default();
    let max_keys: usize = q("max-keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let start: usize = q("continuation-token")
        .and_then(|t| t.trim_start_matches('t').parse().ok())
        .unwrap_or(0);
    let (repo_prefix, rel_prefix) = prefix.split_once('/').unwrap_or(("", prefix.as_str()));
    let mut keys: std::borrow::Cow<[(String, u64, String)]> =
        std::borrow::Cow::Owned(stored_keys(&ctx.root, &prefix));
    match &ctx.mode {
        Misbehaviour::BadKeys => {
            for k in bad_keys(repo_prefix, rel_prefix) {
                keys.to_mut().push((k, 10, "\"bad\"".into()));
            }
        }
        // The stored packs and the generated keys, built once (listings here are read-only).
        Misbehaviour::HugeListing(n) if rel_prefix.starts_with("data") => {
            let all = ctx.huge.get_or_init(|| {
                let mut v: Vec<(String, u64, String)> = (0..*n)
                    .map(|i| {
                        let h = blake3::hash(&(i as u64).to_le_bytes()).to_hex();
                        (
                            format!("{repo_prefix}/data/{}/{h}", &h[..2]),
                            1 << 20,
                            format!("\"{}\"", &h[..32]),
                        )
                    })
                    .collect();
                v.extend(keys.iter().cloned());
                v.sort();
                v
            });
            keys = std::borrow::Cow::Borrowed(all.as_slice());
        }
        _ => {}
    }
    let total = keys.len();
    let end = (start + max_keys).min(total);
    let page = &keys[start.min(total)..end];
    let (truncated, next) = match &ctx.mode {
        Misbehaviour::EndlessPages { repeat } => {
            let n = ctx.pages.fetch_add(1, SeqCst);
            (
                true,
                if *repeat {
                    "t0".to_string()
                } else {
                    // A fresh token each time that always points at the first page again.
                    format!("t{}", "0".repeat(1 + (n % 50) as usize) + &format!("-{n}"))
                },
            )
        }
        _ => (end < total, format!("t{end}")),
    };
    let mut x = String::with_capacity(256 + page.len() * 300);
    x.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        ctx.bucket,
        xml_escape(&prefix),
        page.len()
    ));
    if truncated {
        x.push_str(&format!(
            "<NextContinuationToken>{next}</NextContinuationToken>"
        ));
    }
    // Every object was written moments ago by the test: "now" is an honest write time (a fixed
    // old date would make every snapshot future-dated, which lifeboat rightly refuses as latest).
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S.000Z");
    for (k, size, tag) in page {
        x.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{now}</LastModified><ETag>{}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            xml_escape(k),
            xml_escape(tag)
        ));
    }
    x.push_str("</ListBucketResult>");
    respond(
        c,
        "200 OK",
        "Content-Type: application/xml\r\n",
        x.as_bytes(),
    )
}
