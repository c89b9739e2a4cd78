//! S3 (and Storj's S3 gateway) backend on aws-sdk-s3, behind the same synchronous trait as the
//! local directory. It owns a small tokio runtime; pipeline threads block on it.
//!
//! Storj shapes the choices here: request checksums only "when required" (the gateway rejects the
//! SDK's streaming checksum trailers), 64 MiB multipart parts (its segment size) for objects above
//! 64 MiB, `If-None-Match: *` for create-only objects with a fallback where a store answers 501,
//! every listing paginated to the end and never assumed sorted. SDK retries are off: the
//! [`super::Retry`] wrapper retries, so policy and request accounting are ours.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
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
}

fn env_secret(name: &str) -> Result<Option<String>> {
    if let Ok(path) = std::env::var(format!("{name}_FILE")) {
        let v = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("cannot read {name}_FILE={path}"), e))?;
        return Ok(Some(v.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(std::env::var(name).ok().filter(|v| !v.is_empty()))
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
        let shared = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region))
                .load(),
        );
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(600))
            .build();
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_config::retry::RetryConfig::disabled())
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
        let connections = std::env::var("LIFEBOAT_S3_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| (1..=64).contains(&n))
            .unwrap_or(4);
        Ok(S3Backend {
            rt,
            client: Client::from_conf(b.build()),
            loc,
            conditional: AtomicU8::new(COND_UNKNOWN),
            counters: Counters::default(),
            connections,
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

    async fn read_body(&self, key: &str, body: ByteStream, expect: Option<u64>) -> Result<Vec<u8>> {
        let bytes = body
            .collect()
            .await
            .map_err(|e| Error::Backend {
                key: key.into(),
                message: format!("response body cut short: {e}"),
                retryable: true,
            })?
            .to_vec();
        self.counters.down.fetch_add(bytes.len() as u64, Relaxed);
        if let Some(n) = expect
            && bytes.len() as u64 != n
        {
            return Err(Error::Backend {
                key: key.into(),
                message: format!("short read: got {} of {n} bytes", bytes.len()),
                retryable: true,
            });
        }
        Ok(bytes)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.counters.head.fetch_add(1, Relaxed);
        match self
            .client
            .head_object()
            .bucket(&self.loc.bucket)
            .key(self.full_key(key)?)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(key, e) {
                Error::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn put_single(
        &self,
        key: &str,
        payload: Payload<'_>,
        if_absent: bool,
    ) -> Result<PutOutcome> {
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
        match req.send().await {
            Ok(_) => {
                self.counters.up.fetch_add(len, Relaxed);
                Ok(PutOutcome::Written)
            }
            Err(e) if if_absent && matches!(Self::status_of(&e), Some(412 | 409)) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) if if_absent && Self::status_of(&e) == Some(501) => Err(Error::Backend {
                key: key.into(),
                message: "conditional writes not implemented".into(),
                retryable: false,
            }),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn put_multipart(&self, key: &str, path: &std::path::Path, len: u64) -> Result<()> {
        let full = self.full_key(key)?;
        self.counters.put.fetch_add(1, Relaxed);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.loc.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.map_err(key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result: Result<()> = async {
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
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.loc.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(n as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, e))?;
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
                .map_err(|e| self.map_err(key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.counters.delete.fetch_add(1, Relaxed);
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.loc.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
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
    fn location(&self) -> String {
        let ep = self.loc.endpoint.clone().unwrap_or_else(|| "s3".into());
        format!("{ep}/{}/{}", self.loc.bucket, self.loc.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    fn create(&self) -> Result<()> {
        self.rt.block_on(async {
            self.counters.head.fetch_add(1, Relaxed);
            match self.client.head_bucket().bucket(&self.loc.bucket).send().await {
                Ok(_) => return Ok(()),
                Err(e) if Self::status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.map_err(&self.loc.bucket, e)),
            }
            self.counters.put.fetch_add(1, Relaxed);
            match self.client.create_bucket().bucket(&self.loc.bucket).send().await {
                Ok(_) => Ok(()),
                Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                    Some("BucketAlreadyOwnedByYou") => Ok(()),
                    _ => Err(Error::Backend {
                        key: self.loc.bucket.clone(),
                        message: format!(
                            "bucket {:?} does not exist and could not be created ({}): create it in your provider's console",
                            self.loc.bucket,
                            self.map_err(&self.loc.bucket, e)
                        ),
                        retryable: false,
                    }),
                },
            }
        })
    }

    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        self.rt.block_on(async {
            self.counters.get.fetch_add(1, Relaxed);
            let out = self
                .client
                .get_object()
                .bucket(&self.loc.bucket)
                .key(self.full_key(key)?)
                .send()
                .await
                .map_err(|e| self.map_err(key, e))?;
            let expect = out.content_length().map(|n| n as u64);
            if let Some(n) = expect {
                crate::backend::check_size(key, n, max)?;
            }
            let data = self.read_body(key, out.body, expect).await?;
            crate::backend::check_size(key, data.len() as u64, max)?;
            Ok(data)
        })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.rt.block_on(async {
            self.counters.get.fetch_add(1, Relaxed);
            let out = self
                .client
                .get_object()
                .bucket(&self.loc.bucket)
                .key(self.full_key(key)?)
                .range(format!("bytes={}-{}", offset, offset + len - 1))
                .send()
                .await
                .map_err(|e| match self.map_err(key, e) {
                    Error::Backend { message, .. } if message.starts_with("416") => Error::corrupt(
                        key,
                        format!("object is shorter than the requested range {offset}+{len}"),
                    ),
                    other => other,
                })?;
            let bytes = self.read_body(key, out.body, None).await?;
            if bytes.len() as u64 != len {
                return Err(Error::corrupt(
                    key,
                    format!("object is shorter than the requested range {offset}+{len}"),
                ));
            }
            Ok(bytes)
        })
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<PutOutcome> {
        self.rt.block_on(async {
            if let Payload::File(p) = payload {
                let len = std::fs::metadata(p)
                    .map_err(|e| Error::io(format!("{}", p.display()), e))?
                    .len();
                if len > PART_SIZE {
                    if mode == PutMode::IfAbsent && self.exists(key).await? {
                        return Ok(PutOutcome::AlreadyExists);
                    }
                    self.put_multipart(key, p, len).await?;
                    return Ok(PutOutcome::Written);
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
                return Ok(PutOutcome::AlreadyExists);
            }
            self.put_single(key, payload, false).await
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full_prefix = if self.loc.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.loc.prefix)
        };
        let strip = if self.loc.prefix.is_empty() {
            0
        } else {
            self.loc.prefix.len() + 1
        };
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                self.counters.list.fetch_add(1, Relaxed);
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.loc.bucket)
                    .prefix(&full_prefix)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| self.map_err(prefix, e))?;
                for o in page.contents() {
                    if let Some(k) = o.key()
                        && k.len() > strip
                    {
                        out.push(ObjectInfo {
                            key: k[strip..].to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o
                                .last_modified()
                                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                            version: o.e_tag().map(str::to_string),
                        });
                    }
                }
                match (page.is_truncated(), page.next_continuation_token()) {
                    (Some(true), Some(t)) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            // A store may repeat keys across out-of-order pages; keep each once.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.dedup_by(|a, b| a.key == b.key);
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.rt.block_on(async {
            self.counters.delete.fetch_add(1, Relaxed);
            match self
                .client
                .delete_object()
                .bucket(&self.loc.bucket)
                .key(self.full_key(key)?)
                .send()
                .await
            {
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
