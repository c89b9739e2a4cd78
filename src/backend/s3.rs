//! S3 (and Storj's S3 gateway) backend on aws-sdk-s3, behind the same synchronous trait as the
//! local directory. It owns a small tokio runtime; pipeline threads block on it.
//!
//! Storj shapes the choices here: request checksums only "when required" (the gateway rejects the
//! SDK's streaming checksum trailers), 64 MiB multipart parts (its segment size) for objects above
//! 64 MiB, `If-None-Match: *` for create-only objects with a fallback where a store answers 501,
//! every listing paginated to the end and never assumed sorted. SDK retries are off: the
//! [`super::Retry`] wrapper retries, so policy and request accounting are ours.
//!
//! The store is not trusted. Every request runs under two clocks ([`Timeouts`]): a stall
//! timeout (no byte for `LIFEBOAT_S3_STALL_TIMEOUT`) and a deadline that grows with the bytes
//! expected (`LIFEBOAT_S3_DEADLINE` plus the size at `LIFEBOAT_S3_MIN_RATE`), so neither a
//! silent nor a dripping store holds a reader for long. Bodies are read chunk by chunk and cut
//! off as soon as they exceed what was asked for, so an endless body costs at most the object's
//! budget in memory. Listed keys are checked before use and listings are bounded in keys, pages
//! and time.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{Backend, ObjectInfo, Payload, PutMode, PutOutcome, RequestStats};
use crate::error::{Error, Result};

/// Multipart part size: Storj's segment size, so each part is exactly one segment.
pub const PART_SIZE: u64 = 64 * 1024 * 1024;

/// Where an S3 repository lives, parsed from `s3:https://host/bucket/prefix` or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `https://host[:port]`, or `None` for the endpoint from `AWS_ENDPOINT_URL` / AWS itself.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing slash (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses a repository string; `env_endpoint` is `AWS_ENDPOINT_URL` for the `s3://` form.
    pub fn parse(s: &str, env_endpoint: Option<String>) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "repository {s:?}: {why}; expected s3:https://HOST/BUCKET[/PREFIX] or s3://BUCKET[/PREFIX] (endpoint from AWS_ENDPOINT_URL)"
            ))
        };
        let (endpoint, path) = if let Some(rest) = s.strip_prefix("s3://") {
            (env_endpoint.filter(|e| !e.is_empty()), rest)
        } else if let Some(rest) = s.strip_prefix("s3:") {
            let (scheme, hostpath) = if let Some(r) = rest.strip_prefix("https://") {
                ("https", r)
            } else if let Some(r) = rest.strip_prefix("http://") {
                ("http", r)
            } else {
                ("https", rest)
            };
            let (host, path) = hostpath
                .split_once('/')
                .ok_or_else(|| bad("missing bucket name"))?;
            if host.is_empty() {
                return Err(bad("missing host"));
            }
            (Some(format!("{scheme}://{host}")), path)
        } else {
            return Err(bad("not an s3 URL"));
        };
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(bad(&format!(
                "bucket name {bucket:?} must be 3-63 lowercase letters, digits, '-' or '.'"
            )));
        }
        Ok(S3Location {
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

/// The clocks every S3 request runs under, from the environment.
///
/// - `LIFEBOAT_S3_STALL_TIMEOUT` (default 60 s): longest wait for the next byte of an answer
///   (headers or body). A store that goes silent fails after this long.
/// - `LIFEBOAT_S3_DEADLINE` (default 120 s) and `LIFEBOAT_S3_MIN_RATE` (bytes per second,
///   `K`/`M` suffixes allowed, default 256K): a request moving `n` bytes must finish within
///   `DEADLINE + n / MIN_RATE` (a 64 MiB part: 120 s + 256 s), so a store dripping a byte a
///   second fails in bounded time even though it never stalls.
/// - `LIFEBOAT_S3_LIST_DEADLINE` (default 10 min): a whole listing (all its pages) must finish
///   within this, plus one second for every 1,000 keys received.
///
/// Missing a stall timeout or a request deadline is a retryable error (the [`super::Retry`]
/// wrapper bounds the total); missing the listing deadline is not.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No byte for this long fails the request.
    pub stall: Duration,
    /// The fixed part of every request's deadline.
    pub base: Duration,
    /// Slowest acceptable transfer rate, bytes per second (at least 1).
    pub min_rate: u64,
    /// The fixed part of a whole listing's deadline.
    pub list: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stall: Duration::from_secs(60),
            base: Duration::from_secs(120),
            min_rate: 256 * 1024,
            list: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// The defaults, adjusted by the environment variables above; a malformed value is an error
    /// naming the variable.
    pub fn from_env() -> Result<Timeouts> {
        let mut t = Timeouts::default();
        let dur = |name: &str, into: &mut Duration| -> Result<()> {
            if let Ok(v) = std::env::var(name)
                && !v.trim().is_empty()
            {
                let d = crate::format::parse_duration(&v)
                    .map_err(|e| Error::invalid(format!("{name}: {e}")))?;
                if d.is_zero() {
                    return Err(Error::invalid(format!("{name}: must be more than zero")));
                }
                *into = d;
            }
            Ok(())
        };
        dur("LIFEBOAT_S3_STALL_TIMEOUT", &mut t.stall)?;
        dur("LIFEBOAT_S3_DEADLINE", &mut t.base)?;
        dur("LIFEBOAT_S3_LIST_DEADLINE", &mut t.list)?;
        if let Ok(v) = std::env::var("LIFEBOAT_S3_MIN_RATE")
            && !v.trim().is_empty()
        {
            t.min_rate = parse_rate(&v).ok_or_else(|| {
                Error::invalid(format!(
                    "LIFEBOAT_S3_MIN_RATE={v:?}: expected bytes per second, e.g. 262144, 256K or 1M"
                ))
            })?;
        }
        Ok(t)
    }

    /// How long a request moving `bytes` may take in all.
    pub fn allowance(&self, bytes: u64) -> Duration {
        self.base + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }
}

fn parse_rate(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mul) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        _ => (v, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .map(|n| n.saturating_mul(mul))
        .filter(|&n| n > 0)
}

/// One request's clock: when it began and when it must be done.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    deadline: Instant,
}

/// Per-request counters of real HTTP requests (retries and list pages included).
#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

const COND_UNKNOWN: u8 = 0;
const COND_UNSUPPORTED: u8 = 2;

/// An S3 bucket prefix holding a repository.
pub struct S3Backend {
    rt: tokio::runtime::Runtime,
    client: Client,
    loc: S3Location,
    conditional: AtomicU8,
    counters: Counters,
    connections: usize,
    timeouts: Timeouts,
}

fn env_secret(name: &str) -> Result<Option<String>> {
    if let Ok(path) = std::env::var(format!("{name}_FILE")) {
        let v = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("cannot read {name}_FILE={path}"), e))?;
        let v = v.trim_end_matches(['\n', '\r']).to_string();
        if v.is_empty() {
            return Err(Error::invalid(format!(
                "{name}_FILE={path} is empty: put the secret in it, or unset {name}_FILE"
            )));
        }
        return Ok(Some(v));
    }
    Ok(std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Refuses a half-given key pair, and no credentials at all when nothing else the SDK would use
/// (a profile, web identity, container credentials, `~/.aws/credentials`) is there either: the
/// SDK would otherwise spend seconds on retries and end in "IMDS is disabled", naming nothing
/// the user set.
fn check_credentials(key_id: &Option<String>, secret: &Option<String>) -> Result<()> {
    match (key_id, secret) {
        (Some(_), Some(_)) => Ok(()),
        (Some(_), None) => Err(Error::invalid(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both (or their _FILE forms)",
        )),
        (None, Some(_)) => Err(Error::invalid(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both (or their _FILE forms)",
        )),
        (None, None) => {
            let other = [
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_SHARED_CREDENTIALS_FILE",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
                || std::env::var_os("HOME")
                    .is_some_and(|h| std::path::Path::new(&h).join(".aws/credentials").exists());
            if other {
                Ok(())
            } else {
                Err(Error::invalid(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID_FILE and AWS_SECRET_ACCESS_KEY_FILE) to the bucket's access key",
                ))
            }
        }
    }
}

/// Requests in flight when `LIFEBOAT_S3_CONNECTIONS` is not set. Restore reads are a few MiB
/// each; at 50 ms of round trip one connection moves one such read per ~60 ms, so eight keep a
/// link of several hundred Mbit/s busy while two cores decrypt. Uploads stage a 32 MiB pack per
/// connection (see `LIFEBOAT_STAGING_DIR`).
pub const DEFAULT_CONNECTIONS: usize = 8;

/// `LIFEBOAT_S3_CONNECTIONS`: requests in flight for every command (backup uploads, restore and
/// check reads), 1 to 64. A value that is not a number in that range is refused by name rather
/// than quietly replaced by the default.
pub fn connections_from_env() -> Result<usize> {
    match std::env::var("LIFEBOAT_S3_CONNECTIONS") {
        Err(_) => Ok(DEFAULT_CONNECTIONS),
        Ok(v) if v.trim().is_empty() => Ok(DEFAULT_CONNECTIONS),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "LIFEBOAT_S3_CONNECTIONS={v:?} is not a number from 1 to 64: set it to the requests to keep in flight (default {DEFAULT_CONNECTIONS}), or unset it"
                ))
            }),
    }
}

impl S3Backend {
    /// Connects (lazily: no request is made here) to the location.
    pub fn new(loc: S3Location) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lifeboat-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the S3 client runtime", e))?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let key_id = env_secret("AWS_ACCESS_KEY_ID")?;
        let secret = env_secret("AWS_SECRET_ACCESS_KEY")?;
        let token = env_secret("AWS_SESSION_TOKEN")?;
        check_credentials(&key_id, &secret)?;
        let shared = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region))
                .load(),
        );
        let limits = Timeouts::from_env()?;
        // The SDK's read timeout covers the wait for the response headers; bodies are timed
        // chunk by chunk in `read_body`, and every request as a whole by its `Clock`.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(limits.stall.min(Duration::from_secs(10)))
            .read_timeout(limits.stall)
            .build();
        // The SDK's stalled-stream protection measures throughput on every poll of every body;
        // `read_body` already fails a stall (LIFEBOAT_S3_STALL_TIMEOUT) and a request past its
        // deadline, so it would only add CPU to every download.
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(timeouts);
        if let (Some(k), Some(s)) = (&key_id, &secret) {
            b = b.credentials_provider(Credentials::new(k, s, token, None, "lifeboat-environment"));
        }
        let path_style_default = loc.endpoint.is_some();
        let path_style = match std::env::var("LIFEBOAT_S3_PATH_STYLE").as_deref() {
            Ok("true") | Ok("1") => true,
            Ok("false") | Ok("0") => false,
            _ => path_style_default,
        };
        if let Some(ep) = &loc.endpoint {
            b = b.endpoint_url(ep);
        }
        b = b.force_path_style(path_style);
        let connections = connections_from_env()?;
        Ok(S3Backend {
            rt,
            client: Client::from_conf(b.build()),
            loc,
            conditional: AtomicU8::new(COND_UNKNOWN),
            counters: Counters::default(),
            connections,
            timeouts: limits,
        })
    }

    fn full_key(&self, key: &str) -> Result<String> {
        super::validate_key(key)?;
        Ok(if self.loc.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.loc.prefix)
        })
    }

    /// Turns an SDK error into ours: typed not-found, fail-fast auth errors, retryable transients.
    fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error {
        let bucket = &self.loc.bucket;
        let backend = |message: String, retryable: bool| Error::Backend {
            key: key.to_string(),
            message,
            retryable,
        };
        match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_string();
                let msg = se.err().message().unwrap_or("").to_string();
                match (status, code.as_str()) {
                    // A missing bucket holds no repository; `open` reports that with the fix.
                    (_, "NoSuchBucket") => Error::NotFound { key: key.into() },
                    (404, _) | (_, "NoSuchKey") | (_, "NotFound") => {
                        Error::NotFound { key: key.into() }
                    }
                    (401 | 403, _)
                    | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                        backend(
                            format!(
                                "access denied to bucket {bucket:?} ({status} {code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that the key may read and write this bucket"
                            ),
                            false,
                        )
                    }
                    (408 | 429, _)
                    | (500..=599, _)
                    | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                        backend(format!("{status} {code} {msg}").trim().to_string(), true)
                    }
                    _ => backend(format!("{status} {code} {msg}").trim().to_string(), false),
                }
            }
            SdkError::TimeoutError(_) => backend("request timed out".into(), true),
            SdkError::DispatchFailure(d) => {
                let ep = self.loc.endpoint.as_deref().unwrap_or("the S3 endpoint");
                let why = if d.is_timeout() {
                    format!("connection to {ep} timed out")
                } else if d.is_io() {
                    format!("cannot reach {ep}: {}", root_cause(&e))
                } else {
                    format!("request to {ep} could not be sent: {}", root_cause(&e))
                };
                backend(why, !d.is_user())
            }
            SdkError::ResponseError(_) => backend(
                format!("malformed or truncated response: {}", root_cause(&e)),
                true,
            ),
            _ => backend(root_cause(&e), false),
        }
    }

    fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
        match e {
            SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
            _ => None,
        }
    }

    /// A clock for a request expected to move `bytes` bytes.
    fn clock(&self, bytes: u64) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            deadline: start + self.timeouts.allowance(bytes),
        }
    }

    fn deadline_error(&self, key: &str, clock: &Clock) -> Error {
        Error::Backend {
            key: key.into(),
            message: format!(
                "no complete answer within {}s (LIFEBOAT_S3_DEADLINE plus the expected size at LIFEBOAT_S3_MIN_RATE)",
                (clock.deadline - clock.start).as_secs()
            ),
            retryable: true,
        }
    }

    fn stall_error(&self, key: &str) -> Error {
        Error::Backend {
            key: key.into(),
            message: format!(
                "the store sent nothing for {}s (LIFEBOAT_S3_STALL_TIMEOUT)",
                self.timeouts.stall.as_secs_f64()
            ),
            retryable: true,
        }
    }

    /// Sends a request under `clock`: a store that has not answered (headers) by the deadline
    /// is a retryable timeout. The SDK's own read timeout catches a stall before the headers.
    async fn timed<T>(
        &self,
        key: &str,
        clock: &Clock,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout_at(clock.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.deadline_error(key, clock)),
        }
    }

    /// Reads a response body of at most `limit` bytes, chunk by chunk.
    ///
    /// - More than `limit` bytes: `too_much(bytes seen)`, as soon as the chunk that crosses the
    ///   limit arrives; nothing past `limit` is kept, so memory stays within `limit` plus one
    ///   chunk of the HTTP client's.
    /// - No byte for the stall timeout, or the clock's deadline passed: a retryable timeout.
    /// - The connection failing mid-body: retryable ("response body cut short").
    /// - A body shorter than expected is returned as is; callers compare lengths.
    async fn read_body(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
        capacity: u64,
        clock: &Clock,
        too_much: impl Fn(u64) -> Error,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(capacity.min(limit).min(64 << 20) as usize);
        loop {
            let now = Instant::now();
            if now >= clock.deadline {
                return Err(self.deadline_error(key, clock));
            }
            let left = clock.deadline - now;
            let wait = self.timeouts.stall.min(left);
            let chunk = match tokio::time::timeout(wait, body.next()).await {
                Err(_) if wait < self.timeouts.stall => {
                    return Err(self.deadline_error(key, clock));
                }
                Err(_) => return Err(self.stall_error(key)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Error::Backend {
                        key: key.into(),
                        message: format!("response body cut short: {}", root_cause(&e)),
                        retryable: true,
                    });
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            self.counters.down.fetch_add(chunk.len() as u64, Relaxed);
            let seen = buf.len() as u64 + chunk.len() as u64;
            if seen > limit {
                return Err(too_much(seen));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.counters.head.fetch_add(1, Relaxed);
        let full = self.full_key(key)?;
        let clock = self.clock(0);
        let sent = self.timed(key, &clock, async {
            Ok(self
                .client
                .head_object()
                .bucket(&self.loc.bucket)
                .key(full)
                .send()
                .await)
        });
        match sent.await? {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(key, e) {
                Error::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// One PutObject; returns what happened and the ETag the store answered with.
    async fn put_single(
        &self,
        key: &str,
        payload: Payload<'_>,
        if_absent: bool,
    ) -> Result<(PutOutcome, Option<String>)> {
        let (body, len) = match payload {
            Payload::Bytes(b) => (ByteStream::from(b.to_vec()), b.len() as u64),
            Payload::File(p) => {
                let len = std::fs::metadata(p)
                    .map_err(|e| Error::io(format!("{}", p.display()), e))?
                    .len();
                let body = ByteStream::read_from()
                    .path(p)
                    .build()
                    .await
                    .map_err(|e| Error::invalid(format!("cannot read {}: {e}", p.display())))?;
                (body, len)
            }
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.loc.bucket)
            .key(self.full_key(key)?)
            .content_length(len as i64)
            .body(body);
        if if_absent {
            req = req.if_none_match("*");
        }
        self.counters.put.fetch_add(1, Relaxed);
        let clock = self.clock(len);
        match self
            .timed(key, &clock, async { Ok(req.send().await) })
            .await?
        {
            Ok(out) => {
                self.counters.up.fetch_add(len, Relaxed);
                Ok((PutOutcome::Written, out.e_tag().map(str::to_string)))
            }
            Err(e) if if_absent && matches!(Self::status_of(&e), Some(412 | 409)) => {
                Ok((PutOutcome::AlreadyExists, None))
            }
            Err(e) if if_absent && Self::status_of(&e) == Some(501) => Err(Error::Backend {
                key: key.into(),
                message: "conditional writes not implemented".into(),
                retryable: false,
            }),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    /// A multipart upload of a file; returns the ETag of the completed object.
    async fn put_multipart(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
    ) -> Result<Option<String>> {
        let full = self.full_key(key)?;
        self.counters.put.fetch_add(1, Relaxed);
        let clock = self.clock(0);
        let created = self
            .timed(key, &clock, async {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(&full)
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, e))
            })
            .await?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result: Result<Option<String>> = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1;
            while offset < len {
                let n = PART_SIZE.min(len - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(n))
                    .build()
                    .await
                    .map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
                self.counters.put.fetch_add(1, Relaxed);
                let clock = self.clock(n);
                let out = self
                    .timed(key, &clock, async {
                        self.client
                            .upload_part()
                            .bucket(&self.loc.bucket)
                            .key(&full)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .content_length(n as i64)
                            .body(body)
                            .send()
                            .await
                            .map_err(|e| self.map_err(key, e))
                    })
                    .await?;
                self.counters.up.fetch_add(n, Relaxed);
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
                offset += n;
                number += 1;
            }
            self.counters.put.fetch_add(1, Relaxed);
            // Completing may take the store a while for large objects: allow for the size.
            let clock = self.clock(len);
            let done = self
                .timed(key, &clock, async {
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.loc.bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                })
                .await?;
            Ok(done.e_tag().map(str::to_string))
        }
        .await;
        if result.is_err() {
            self.counters.delete.fetch_add(1, Relaxed);
            let clock = self.clock(0);
            let _ = tokio::time::timeout_at(
                clock.deadline,
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send(),
            )
            .await;
        }
        result
    }

    /// The most keys one listing may hold, and the most pages it may take to get them.
    fn list_bounds() -> (usize, usize) {
        let keys = crate::repository::limits::MAX_LIST;
        (keys, keys / 100 + 100)
    }
}

/// The innermost error message: the SDK's outer layers only say "dispatch failure".
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Backend for S3Backend {
    /// The location in the exact form `--repo` accepts, so it can be pasted back.
    fn location(&self) -> String {
        let base = match &self.loc.endpoint {
            Some(ep) => format!("s3:{ep}/{}", self.loc.bucket),
            None => format!("s3://{}", self.loc.bucket),
        };
        if self.loc.prefix.is_empty() {
            base
        } else {
            format!("{base}/{}", self.loc.prefix)
        }
    }

    fn create(&self) -> Result<()> {
        let bucket = self.loc.bucket.clone();
        self.rt.block_on(async {
            self.counters.head.fetch_add(1, Relaxed);
            let clock = self.clock(0);
            let head = self
                .timed(&bucket, &clock, async {
                    Ok(self.client.head_bucket().bucket(&bucket).send().await)
                })
                .await?;
            match head {
                Ok(_) => return Ok(()),
                Err(e) if Self::status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.map_err(&bucket, e)),
            }
            self.counters.put.fetch_add(1, Relaxed);
            let clock = self.clock(0);
            let created = self
                .timed(&bucket, &clock, async {
                    Ok(self.client.create_bucket().bucket(&bucket).send().await)
                })
                .await?;
            match created {
                Ok(_) => Ok(()),
                Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                    Some("BucketAlreadyOwnedByYou") => Ok(()),
                    _ => Err(Error::Backend {
                        key: bucket.clone(),
                        message: format!(
                            "bucket {bucket:?} does not exist and could not be created ({}): create it in your provider's console",
                            self.map_err(&bucket, e)
                        ),
                        retryable: false,
                    }),
                },
            }
        })
    }

    /// See [`Backend::get`]. A declared `Content-Length` above `max` is refused before any of
    /// the body is read; a body that runs past `max` (or past its `Content-Length`) is cut off at
    /// that point with a non-retryable error naming the key. A body shorter than its
    /// `Content-Length` is a retryable "cut short" error. The request's deadline allows for
    /// `Content-Length` bytes (or `max` when none is given).
    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let full = self.full_key(key)?;
        self.rt.block_on(async {
            self.counters.get.fetch_add(1, Relaxed);
            let mut clock = self.clock(max);
            let out = self
                .timed(key, &clock, async {
                    self.client
                        .get_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                })
                .await?;
            let declared = out.content_length().map(|n| n.max(0) as u64);
            let limit = match declared {
                Some(n) => {
                    crate::backend::check_size(key, n, max)?;
                    clock.deadline = clock.deadline.min(clock.start + self.timeouts.allowance(n));
                    n
                }
                None => max,
            };
            let data = self
                .read_body(key, out.body, limit, limit, &clock, |seen| Error::Backend {
                    key: key.into(),
                    message: match declared {
                        Some(n) => format!(
                            "store sent more than the {n} bytes its Content-Length announced ({seen} so far); stopped reading"
                        ),
                        None => format!(
                            "store sent more than the {max} bytes an object of its kind may hold ({seen} so far); stopped reading"
                        ),
                    },
                    retryable: false,
                })
                .await?;
            if let Some(n) = declared
                && data.len() as u64 != n
            {
                return Err(Error::Backend {
                    key: key.into(),
                    message: format!("short read: got {} of {n} bytes", data.len()),
                    retryable: true,
                });
            }
            Ok(data)
        })
    }

    /// See [`Backend::get_range`]: exactly `len` bytes or an error. A store that announces or
    /// sends more than `len` bytes (an endless body, or the whole object for a range request) is
    /// a non-retryable error naming the key, detected at byte `len + 1`; fewer is a
    /// non-retryable "shorter than the requested range" (the object is too short), unless the
    /// connection broke (retryable). The deadline allows for `len` bytes.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let full = self.full_key(key)?;
        let short = || {
            Error::corrupt(
                key,
                format!("object is shorter than the requested range {offset}+{len}"),
            )
        };
        self.rt.block_on(async {
            self.counters.get.fetch_add(1, Relaxed);
            let clock = self.clock(len);
            let out = self
                .timed(key, &clock, async {
                    self.client
                        .get_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .range(format!("bytes={}-{}", offset, offset + len - 1))
                        .send()
                        .await
                        .map_err(|e| match self.map_err(key, e) {
                            Error::Backend { message, .. } if message.starts_with("416") => short(),
                            other => other,
                        })
                })
                .await?;
            let declared = out.content_length().map(|n| n.max(0) as u64);
            match declared {
                Some(n) if n > len => {
                    return Err(Error::Backend {
                        key: key.into(),
                        message: format!(
                            "store answered the range {offset}+{len} with {n} bytes; refusing to read them"
                        ),
                        retryable: false,
                    });
                }
                Some(n) if n < len => return Err(short()),
                _ => {}
            }
            let bytes = self
                .read_body(key, out.body, len, len, &clock, |seen| Error::Backend {
                    key: key.into(),
                    message: format!(
                        "store sent more than the {len} bytes of the range {offset}+{len} ({seen} so far); stopped reading"
                    ),
                    retryable: false,
                })
                .await?;
            if bytes.len() as u64 != len {
                return Err(short());
            }
            Ok(bytes)
        })
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        self.put_versioned(key, payload, mode).map(|(o, _)| o)
    }

    /// See [`Backend::put_versioned`]: the version is the `ETag` of the PutObject (or
    /// CompleteMultipartUpload) answer, the same token [`Backend::list`] reports; `None` when
    /// the object already existed or the store sent no `ETag`.
    fn put_versioned(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> Result<(PutOutcome, Option<String>)> {
        self.rt.block_on(async {
            if let Payload::File(p) = payload {
                let len = std::fs::metadata(p)
                    .map_err(|e| Error::io(format!("{}", p.display()), e))?
                    .len();
                if len > PART_SIZE {
                    if mode == PutMode::IfAbsent && self.exists(key).await? {
                        return Ok((PutOutcome::AlreadyExists, None));
                    }
                    let etag = self.put_multipart(key, p, len).await?;
                    return Ok((PutOutcome::Written, etag));
                }
            }
            if mode == PutMode::Overwrite {
                return self.put_single(key, payload, false).await;
            }
            if self.conditional.load(Relaxed) != COND_UNSUPPORTED {
                match self.put_single(key, payload, true).await {
                    Err(Error::Backend { message, .. }) if message == "conditional writes not implemented" => {
                        tracing::warn!(
                            "the S3 store does not implement If-None-Match; falling back to check-then-write for create-only objects"
                        );
                        self.conditional.store(COND_UNSUPPORTED, Relaxed);
                    }
                    other => return other,
                }
            }
            // Fallback: not atomic, but every create-only key is unique or content-addressed.
            if self.exists(key).await? {
                return Ok((PutOutcome::AlreadyExists, None));
            }
            self.put_single(key, payload, false).await
        })
    }

    /// See [`Backend::list`]. Every listed key is checked before use: it must lie under the
    /// repository prefix and `prefix`, and pass [`crate::backend::validate_key`]; any other
    /// (non-ASCII, `..`, control characters, outside the prefix) is skipped with a warning that
    /// quotes it escaped. A key listed twice is kept once. The listing is bounded: more than
    /// [`crate::repository::limits::MAX_LIST`] keys, more pages than keys / 100 allow, a
    /// repeated continuation token, or missing the listing deadline ([`Timeouts`]) is a
    /// non-retryable error naming the prefix; each page is a request with its own deadline.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = if self.loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.loc.prefix)
        };
        let full_prefix = format!("{root}{prefix}");
        let (max_keys, max_pages) = Self::list_bounds();
        let fail = |message: String| Error::Backend {
            key: prefix.to_string(),
            message,
            retryable: false,
        };
        self.rt.block_on(async {
            let start = Instant::now();
            // Key → (size, modified, version): each key held once, repeats cost nothing.
            type Listed = (u64, Option<std::time::SystemTime>, Option<String>);
            let mut found: BTreeMap<String, Listed> = BTreeMap::new();
            let mut tokens: HashSet<[u8; 32]> = HashSet::new();
            let mut token: Option<String> = None;
            let mut pages = 0usize;
            let mut skipped = 0u64;
            loop {
                pages += 1;
                if pages > max_pages {
                    return Err(fail(format!(
                        "listing did not end after {max_pages} pages ({} keys): the store pages without end",
                        found.len()
                    )));
                }
                // One more second for every 1,000 distinct keys so far (repeats earn nothing).
                let list_deadline =
                    start + self.timeouts.list + Duration::from_millis(found.len() as u64);
                if Instant::now() >= list_deadline {
                    return Err(fail(format!(
                        "listing did not finish within {}s (LIFEBOAT_S3_LIST_DEADLINE, plus 1s per 1000 keys): {} pages, {} keys so far",
                        (list_deadline - start).as_secs(),
                        pages - 1,
                        found.len()
                    )));
                }
                self.counters.list.fetch_add(1, Relaxed);
                let mut clock = self.clock(1 << 20);
                clock.deadline = clock.deadline.min(list_deadline);
                let page = self
                    .timed(prefix, &clock, async {
                        self.client
                            .list_objects_v2()
                            .bucket(&self.loc.bucket)
                            .prefix(&full_prefix)
                            .set_continuation_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| self.map_err(prefix, e))
                    })
                    .await?;
                for o in page.contents() {
                    let Some(k) = o.key() else { continue };
                    let rel = k.strip_prefix(root.as_str()).filter(|rel| {
                        rel.starts_with(prefix) && crate::backend::validate_key(rel).is_ok()
                    });
                    let Some(rel) = rel else {
                        skipped += 1;
                        if skipped <= 10 {
                            tracing::warn!(
                                "listing {prefix}: ignoring the listed key {k:?}: not a valid object key under {full_prefix:?}"
                            );
                        }
                        continue;
                    };
                    if found.contains_key(rel) {
                        continue;
                    }
                    if found.len() >= max_keys {
                        return Err(fail(format!(
                            "listing holds more than {max_keys} keys; refusing to go on"
                        )));
                    }
                    found.insert(
                        rel.to_string(),
                        (
                            o.size().unwrap_or(0).max(0) as u64,
                            o.last_modified()
                                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                            o.e_tag().map(str::to_string),
                        ),
                    );
                }
                match (page.is_truncated(), page.next_continuation_token()) {
                    (Some(true), Some(t)) => {
                        if !tokens.insert(*blake3::hash(t.as_bytes()).as_bytes()) {
                            return Err(fail(format!(
                                "the store repeated a continuation token on page {pages}: the listing would never end"
                            )));
                        }
                        token = Some(t.to_string());
                    }
                    _ => break,
                }
            }
            if skipped > 10 {
                tracing::warn!(
                    "listing {prefix}: ignored {skipped} invalid listed keys in all (the first 10 are named above)"
                );
            }
            // A store may repeat keys across out-of-order pages; each is kept once, in order.
            Ok(found
                .into_iter()
                .map(|(key, (size, modified, version))| ObjectInfo {
                    key,
                    size,
                    modified,
                    version,
                })
                .collect())
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.rt.block_on(async {
            self.counters.delete.fetch_add(1, Relaxed);
            let clock = self.clock(0);
            let r = self
                .timed(key, &clock, async {
                    Ok(self
                        .client
                        .delete_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .send()
                        .await)
                })
                .await?;
            match r {
                Ok(_) => Ok(()),
                Err(e) => match self.map_err(key, e) {
                    Error::NotFound { .. } => Ok(()),
                    other => Err(other),
                },
            }
        })
    }

    fn requests(&self) -> Option<RequestStats> {
        let c = &self.counters;
        Some(RequestStats {
            put: c.put.load(Relaxed),
            get: c.get.load(Relaxed),
            head: c.head.load(Relaxed),
            list: c.list.load(Relaxed),
            delete: c.delete.load(Relaxed),
            bytes_up: c.up.load(Relaxed),
            bytes_down: c.down.load(Relaxed),
        })
    }

    fn concurrency(&self) -> usize {
        self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init` and every message print the location in the form `--repo` accepts: pasted back,
    /// it names the same bucket and prefix (it once lost its `s3:` and became a local path).
    #[test]
    fn the_printed_location_parses_back_to_itself() {
        // SAFETY: the credentials check reads these; no other test in this binary reads or
        // writes the AWS variables.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "k");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "s");
        }
        for url in [
            "s3:https://gateway.storjshare.io/bucket/pg",
            "s3:http://127.0.0.1:8333/bucket",
            "s3://bucket/some/prefix",
        ] {
            let loc = S3Location::parse(url, None).unwrap();
            let printed = S3Backend::new(loc.clone()).unwrap().location();
            assert_eq!(printed, url);
            assert_eq!(S3Location::parse(&printed, None).unwrap(), loc);
        }
    }

    #[test]
    fn parses_restic_and_aws_style_urls() {
        let l =
            S3Location::parse("s3:https://gateway.storjshare.io/my-bucket/apps/pg", None).unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://gateway.storjshare.io"));
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket", "apps/pg")
        );
        let l = S3Location::parse("s3:http://127.0.0.1:8333/b-1/", None).unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b-1", ""));
        let l = S3Location::parse("s3://bucket/x/y", Some("http://minio:9000".into())).unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(l.prefix, "x/y");
        let l = S3Location::parse("s3://bucket", None).unwrap();
        assert_eq!(l.endpoint, None);
        for bad in [
            "s3:https://host",
            "s3://",
            "s3://Bad_Bucket/x",
            "s3:https:///bucket",
        ] {
            let e = S3Location::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains("expected s3:"), "{bad}: {e}");
        }
    }
}
