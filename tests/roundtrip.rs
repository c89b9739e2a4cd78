//! Backup → restore must give back the same bytes and metadata, for generated trees with empty
//! files, files larger than the maximum chunk, symlinks, unicode and non-UTF-8 names, deep nesting,
//! hard links and sparse files.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Entry {
    File { size: usize, seed: u64, mode: u32 },
    Link(String),
    Dir(Vec<(String, Entry)>),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[a-zA-Z0-9 _.-]{1,12}"
            .prop_filter("not . or ..", |s| s != "." && s != ".." && !s.is_empty()),
        Just("ünïcødé-名前".to_string()),
        Just("emoji-🚣".to_string()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let leaf = prop_oneof![
        4 => (prop_oneof![Just(0usize), 1usize..5000, 60_000usize..300_000], any::<u64>(),
              prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o400)])
            .prop_map(|(size, seed, mode)| Entry::File { size, seed, mode }),
        1 => "[a-z./]{1,20}".prop_map(Entry::Link),
    ];
    leaf.prop_recursive(6, 40, 6, |inner| {
        prop::collection::vec((name(), inner), 0..6).prop_map(Entry::Dir)
    })
}

fn build(path: &Path, e: &Entry) {
    match e {
        Entry::File { size, seed, mode } => {
            write(path, &random_bytes(*size, *seed));
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Entry::Link(t) => std::os::unix::fs::symlink(t, path).unwrap(),
        Entry::Dir(children) => {
            fs::create_dir_all(path).unwrap();
            for (n, c) in children {
                let p = path.join(n);
                if !p.exists() && fs::symlink_metadata(&p).is_err() {
                    build(&p, c);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(children in prop::collection::vec((name(), entry()), 1..8)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build(&src, &Entry::Dir(children));
        let repo = init_repo(&tmp.path().join("repo"));
        let out = backup_dir(&repo, &src, "vol");
        prop_assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let target = tmp.path().join("target");
        let r = restore_latest(&repo, "vol", &target);
        prop_assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_same_tree(&src, &target);
        // A second backup of the same tree reuses everything.
        let again = backup_dir(&repo, &src, "vol");
        prop_assert_eq!(again.snapshot.summary.bytes_added, 0);
        prop_assert_eq!(again.snapshot.tree, out.snapshot.tree);
    }
}

#[test]
fn non_utf8_names_and_deep_nesting() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut deep = src.clone();
    for i in 0..60 {
        deep = deep.join(format!("level-{i}"));
    }
    write(&deep.join("bottom.txt"), b"deep");
    let odd = src.join(OsStr::from_bytes(b"latin1-caf\xe9"));
    write(&odd, b"not utf-8 name");
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target-\xff"), src.join("odd-link")).unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    backup_dir(&repo, &src, "v");
    let target = tmp.path().join("t");
    let r = restore_latest(&repo, "v", &target);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &target);
    assert_eq!(
        fs::read(target.join(OsStr::from_bytes(b"latin1-caf\xe9"))).unwrap(),
        b"not utf-8 name"
    );
}

#[test]
fn hard_links_are_recreated_and_sparse_files_stay_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a/original"), &random_bytes(100_000, 5));
    fs::hard_link(src.join("a/original"), src.join("linked")).unwrap();
    // 64 MiB sparse file with 1 MiB of data in the middle.
    let sparse = src.join("sparse.img");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(1 << 20, 9), 20 << 20).unwrap();
    drop(f);

    let repo = init_repo(&tmp.path().join("repo"));
    let out = backup_dir(&repo, &src, "v");
    // 63 MiB of zeros dedupe to a handful of zero chunks.
    assert!(
        out.snapshot.summary.bytes_stored < 3 << 20,
        "stored {}",
        out.snapshot.summary.bytes_stored
    );
    let target = tmp.path().join("t");
    let r = restore_latest(&repo, "v", &target);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.hardlinks, 1);
    assert_same_tree(&src, &target);
    let (m1, m2) = (
        fs::metadata(target.join("a/original")).unwrap(),
        fs::metadata(target.join("linked")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino(), "hard link restored as a link");
    let blocks = fs::metadata(target.join("sparse.img")).unwrap().blocks() * 512;
    assert!(
        blocks < 8 << 20,
        "restored sparse file allocates {blocks} bytes"
    );
}

#[test]
fn restore_places_single_path_contents_in_target_and_multiple_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = tmp.path().join("other");
    write(&data.join("x/file"), b"x");
    write(&other.join("y"), b"y");
    let repo = init_repo(&tmp.path().join("repo"));
    backup_dir(&repo, &data, "single");
    let t1 = tmp.path().join("t1");
    restore_latest(&repo, "single", &t1);
    assert_eq!(fs::read(t1.join("x/file")).unwrap(), b"x");

    let opts = lifeboat::backup::BackupOptions::new("multi");
    lifeboat::backup::backup(
        &repo,
        &lifeboat::backup::Source::Paths(vec![data.clone(), other.clone()]),
        &opts,
    )
    .unwrap();
    let t2 = tmp.path().join("t2");
    restore_latest(&repo, "multi", &t2);
    assert_eq!(fs::read(t2.join("data/x/file")).unwrap(), b"x");
    assert_eq!(fs::read(t2.join("other/y")).unwrap(), b"y");

    // Sub-path restore, relative to the backed-up directory or as `ls` shows it.
    let (_, snap) = repo.find_snapshot("latest", Some("single")).unwrap();
    for include in ["x", "/data/x"] {
        let t3 = tmp.path().join(format!("t3-{}", include.len()));
        let mut o = lifeboat::restore::RestoreOptions::new(&t3);
        o.include = vec![include.into()];
        let r = lifeboat::restore::restore(&repo, &snap, &o).unwrap();
        assert_eq!(r.files, 1, "include {include}");
        assert_eq!(fs::read(t3.join("x/file")).unwrap(), b"x");
    }
}

#[test]
fn restore_refuses_a_non_empty_target_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"new");
    let repo = init_repo(&tmp.path().join("repo"));
    backup_dir(&repo, &src, "v");
    let target = tmp.path().join("t");
    write(&target.join("f"), b"old contents that are longer");
    let (_, snap) = repo.find_snapshot("latest", None).unwrap();
    let err = lifeboat::restore::restore(
        &repo,
        &snap,
        &lifeboat::restore::RestoreOptions::new(&target),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        fs::read(target.join("f")).unwrap(),
        b"old contents that are longer"
    );
    let mut o = lifeboat::restore::RestoreOptions::new(&target);
    o.overwrite = true;
    lifeboat::restore::restore(&repo, &snap, &o).unwrap();
    assert_eq!(fs::read(target.join("f")).unwrap(), b"new");
}

/// More files than one restore batch and, in the backup, enough directories resolved out of
/// order (trees written while the walk goes on) that a mistake in either shows: every file, the
/// hard link whose first path was restored in an earlier batch, symlinks and empty files come
/// back, and a second backup of the unchanged tree reuses every tree it wrote.
#[test]
fn many_files_across_restore_batches_and_streamed_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..9_000u64 {
        let p = src.join(format!("d{:02}/e{:02}/f{i:05}", i % 37, i % 11));
        let body = if i % 100 == 0 {
            Vec::new()
        } else {
            format!("{i}\n").repeat((i % 13 + 1) as usize).into_bytes()
        };
        write(&p, &body);
    }
    // A large file among the small ones, so readers finish out of order.
    write(&src.join("d05/big"), &random_bytes(6 << 20, 3));
    fs::hard_link(src.join("d00/e00/f00000"), src.join("zz-last-link")).unwrap();
    std::os::unix::fs::symlink("d01/e01/f00001", src.join("d36/link")).unwrap();

    let repo = init_repo(&tmp.path().join("repo"));
    let first = backup_dir(&repo, &src, "v");
    assert_eq!(first.snapshot.summary.total_files, 9_002);
    let target = tmp.path().join("t");
    let r = restore_latest(&repo, "v", &target);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.files, r.hardlinks, r.symlinks), (9_001, 1, 1));
    assert_same_tree(&src, &target);
    let (m1, m2) = (
        fs::metadata(target.join("d00/e00/f00000")).unwrap(),
        fs::metadata(target.join("zz-last-link")).unwrap(),
    );
    assert_eq!(
        m1.ino(),
        m2.ino(),
        "hard link across batches restored as a link"
    );

    let second = backup_dir(&repo, &src, "v");
    assert_eq!(second.snapshot.tree, first.snapshot.tree);
    assert_eq!(second.snapshot.summary.tree_blobs_added, 0);
}
