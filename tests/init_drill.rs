//! `init` under lost replies: a proxy in front of a real S3 server (SeaweedFS) forwards one request
//! of `init` to the store and drops its reply, for each request in turn. Every run must end with a
//! repository that opens with the password. Also: `init` that loses the race to another `init`
//! deletes only its own key object, and `open` reports a store that fails to deliver the key
//! objects as a storage error, not as a wrong password.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use common::proxy::{Fault, Proxy};
use common::*;
use lifeboat::backend::{Backend, LocalBackend, ObjectInfo, Payload, PutMode, PutOutcome};
use lifeboat::error::Error;
use lifeboat::repository::Repository;

fn s3(addr: std::net::SocketAddr, prefix: &str) -> Box<dyn Backend> {
    common::seaweed::set_credentials();
    lifeboat::backend::open(&format!("s3:http://{addr}/{prefix}")).unwrap()
}

#[test]
fn init_through_a_proxy_that_drops_each_reply_in_turn_always_opens() {
    // SAFETY: set before any thread of this test binary reads them.
    unsafe {
        std::env::set_var("LIFEBOAT_RETRY_BASE_MS", "5");
    }
    let s = common::seaweed::server();
    let proxy = Proxy::start(s.s3);
    proxy.set(|p| p.faults = vec![Fault::ResetAfterForward]);
    let bucket = format!("init-drill-{}", std::process::id());

    // Two clean inits (the first also creates the bucket), to count the requests of one.
    let mut per_init = 0;
    for i in 0..2 {
        let before = proxy.requests.load(SeqCst);
        Repository::init(
            s3(proxy.addr, &format!("{bucket}/clean{i}")),
            PASSWORD,
            &init_options(),
        )
        .unwrap();
        per_init = proxy.requests.load(SeqCst) - before;
    }
    assert!(per_init >= 4, "a clean init made {per_init} requests");

    let (mut runs, mut injected, mut failed_inits, mut unopenable) = (0, 0, 0, 0);
    for k in 1..=per_init + 1 {
        let prefix = format!("{bucket}/drop{k}");
        let injected_before = proxy.injected.load(SeqCst);
        let at = proxy.requests.load(SeqCst) + k;
        proxy.set(|p| p.once_at = at);
        let r = Repository::init(s3(proxy.addr, &prefix), PASSWORD, &init_options());
        proxy.set(|p| p.once_at = 0);
        runs += 1;
        injected += proxy.injected.load(SeqCst) - injected_before;
        if let Err(e) = &r {
            failed_inits += 1;
            eprintln!("run {k}: init failed: {e}");
        }
        // Open straight from the store, no proxy in between.
        match Repository::open(s3(s.s3, &prefix), PASSWORD) {
            Ok(repo) => {
                let keys = repo.backend().list("keys/").unwrap();
                assert_eq!(keys.len(), 1, "run {k}: {keys:?}");
                repo.backend()
                    .get("config.1", 1 << 20)
                    .unwrap_or_else(|e| panic!("run {k}: no config copy: {e}"));
            }
            Err(e) => {
                unopenable += 1;
                eprintln!("run {k}: the repository does not open: {e}");
            }
        }
    }
    println!(
        "INIT-DRILL requests per init: {per_init}, runs: {runs}, replies dropped: {injected}, failed inits: {failed_inits}, repositories that do not open: {unopenable}"
    );
    assert!(injected >= per_init, "faults were not injected");
    assert_eq!(failed_inits, 0);
    assert_eq!(unopenable, 0);
}

/// Wraps a backend: can hide `config` from the first read (so `init` races another repository),
/// and can fail every read of a key object with a storage error.
struct Quirky {
    inner: LocalBackend,
    hide_config_once: AtomicBool,
    fail_keys: bool,
}

impl Backend for Quirky {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> lifeboat::error::Result<()> {
        self.inner.create()
    }
    fn get(&self, key: &str, max: u64) -> lifeboat::error::Result<Vec<u8>> {
        if key == "config" && self.hide_config_once.swap(false, SeqCst) {
            return Err(Error::NotFound { key: key.into() });
        }
        if self.fail_keys && key.starts_with("keys/") {
            return Err(Error::Backend {
                key: key.into(),
                message: "503 Slow Down (injected)".into(),
                retryable: true,
            });
        }
        self.inner.get(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> lifeboat::error::Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn put(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> lifeboat::error::Result<PutOutcome> {
        self.inner.put(key, payload, mode)
    }
    fn list(&self, prefix: &str) -> lifeboat::error::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> lifeboat::error::Result<()> {
        self.inner.delete(key)
    }
}

fn quirky(dir: &Path, hide_config_once: bool, fail_keys: bool) -> Box<dyn Backend> {
    Box::new(Quirky {
        inner: LocalBackend::new(dir),
        hide_config_once: AtomicBool::new(hide_config_once),
        fail_keys,
    })
}

#[test]
fn init_that_loses_the_race_removes_only_its_own_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    init_repo(&dir);
    let keys_before = objects(&dir, "keys");
    let copy_before = std::fs::read(dir.join("config.1")).unwrap();
    let config_before = std::fs::read(dir.join("config")).unwrap();
    let e = Repository::init(
        quirky(&dir, true, false),
        "another password",
        &init_options(),
    )
    .err()
    .expect("init over another repository must fail");
    assert!(matches!(e, Error::AlreadyInitialized { .. }), "{e}");
    assert_eq!(objects(&dir, "keys"), keys_before);
    assert_eq!(std::fs::read(dir.join("config.1")).unwrap(), copy_before);
    assert_eq!(std::fs::read(dir.join("config")).unwrap(), config_before);
    open_repo(&dir);
}

#[test]
fn open_reports_a_store_that_fails_to_deliver_keys_as_a_storage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    init_repo(&dir);
    let e = Repository::open(quirky(&dir, false, true), PASSWORD)
        .err()
        .expect("open must fail");
    assert!(matches!(e, Error::Backend { .. }), "{e}");
    assert!(!e.to_string().contains("wrong password"), "{e}");
    // A wrong password is still a wrong password.
    let e = Repository::open(quirky(&dir, false, false), "not the password")
        .err()
        .expect("open must fail");
    assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
}
