//! Fast, hermetic S3 tests: an in-process S3 server (s3s-fs, a file-system-backed implementation
//! of the S3 protocol) on 127.0.0.1:0, no network and no external install. The same conformance
//! body as the local backend, then a full backup → restore through the S3 backend.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use common::*;
use lifeboat::backend::{Backend, S3Backend, S3Location};
use lifeboat::backup::{self, BackupOptions, Source};
use lifeboat::repository::Repository;

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let root =
                    std::env::temp_dir().join(format!("lifeboat-s3s-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&root);
                std::fs::create_dir_all(&root).unwrap();
                let fs = s3s_fs::FileSystem::new(&root).unwrap();
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(
                    common::seaweed::ACCESS_KEY,
                    common::seaweed::SECRET_KEY,
                ));
                let service = b.build();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let http = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                loop {
                    let (socket, _) = listener.accept().await.unwrap();
                    let conn = http
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        rx.recv().unwrap()
    })
}

fn backend(bucket_and_prefix: &str) -> S3Backend {
    common::seaweed::set_credentials();
    let url = format!("s3:http://{}/{bucket_and_prefix}", server());
    S3Backend::new(S3Location::parse(&url, None).unwrap()).unwrap()
}

#[test]
fn in_process_s3_conforms() {
    let b = backend("hermetic-conformance/pre/fix");
    common::conformance::conformance(&b);
}

#[test]
fn backup_and_restore_through_in_process_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..6 {
        write(&src.join(format!("big/{i}.bin")), &random_bytes(700_000, i));
    }
    for i in 0..100 {
        write(
            &src.join(format!("small/f{i}")),
            format!("{i}").repeat(i + 1).as_bytes(),
        );
    }
    std::os::unix::fs::symlink("small/f1", src.join("link")).unwrap();
    let b = backend("hermetic-roundtrip/repo");
    let repo = Repository::init(Box::new(b), PASSWORD, &init_options()).unwrap();
    let first = backup::backup(
        &repo,
        &Source::Paths(vec![src.clone()]),
        &BackupOptions::new("v"),
    )
    .unwrap();
    assert_eq!(first.snapshot.summary.files_new, 106);
    let before = repo.stats();
    let second = backup::backup(
        &repo,
        &Source::Paths(vec![src.clone()]),
        &BackupOptions::new("v"),
    )
    .unwrap();
    assert_eq!(second.snapshot.summary.files_unmodified, 106);
    let after = repo.stats();
    assert_eq!(
        after.put - before.put,
        2,
        "a no-change backup writes only its snapshot and its writer record"
    );
    let target = tmp.path().join("t");
    let r = restore_latest(&repo, "v", &target);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &target);
    let report = lifeboat::check::check(&repo, lifeboat::check::ReadData::All).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Wrong password against the same bucket.
    let err = Repository::open(Box::new(backend("hermetic-roundtrip/repo")), "nope")
        .err()
        .unwrap();
    assert!(
        matches!(err, lifeboat::Error::WrongPassword { .. }),
        "{err}"
    );
    // An empty prefix is "no repository".
    let err = Repository::open(Box::new(backend("hermetic-roundtrip/elsewhere")), PASSWORD)
        .err()
        .unwrap();
    assert!(matches!(err, lifeboat::Error::NoRepository { .. }), "{err}");
    assert!(
        backend("hermetic-roundtrip/repo")
            .list("snapshots/")
            .unwrap()
            .len()
            == 2
    );
}
