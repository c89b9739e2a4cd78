//! The backend contract, as one body run against every backend (the S3 backend joins it when it
//! lands): not-found is typed, ranges are exact, IfAbsent never replaces, listing is complete and
//! unordered-safe, delete is idempotent.

mod common;

use common::conformance::conformance;
use lifeboat::backend::{Backend, LocalBackend, Payload, PutMode};

#[test]
fn local_backend_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance(&LocalBackend::new(tmp.path().join("repo")));
}

#[test]
fn local_backend_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(tmp.path().join("repo"));
    b.create().unwrap();
    for i in 0..10 {
        b.put(
            &format!("snapshots/s{i}"),
            Payload::Bytes(b"x"),
            PutMode::IfAbsent,
        )
        .unwrap();
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("repo/tmp"))
            .unwrap()
            .count(),
        0
    );
}
