//! Damaged objects: `check` names each one, restore fails loudly for the files it affects, and
//! snapshots that do not depend on the damage still restore.

mod common;

use std::fs;

use common::*;
use lifeboat::check::{self, ReadData};

struct Setup {
    _tmp: tempfile::TempDir,
    repo_dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

/// Two volumes with disjoint content, so damage to one leaves the other restorable.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    write(&root.join("a/one.bin"), &random_bytes(300_000, 1));
    write(&root.join("b/two.bin"), &random_bytes(300_000, 2));
    let repo_dir = root.join("repo");
    let repo = init_repo(&repo_dir);
    backup_dir(&repo, &root.join("a"), "a");
    backup_dir(&repo, &root.join("b"), "b");
    assert!(
        check::check(&repo, ReadData::All)
            .unwrap()
            .errors
            .is_empty()
    );
    Setup {
        _tmp: tmp,
        repo_dir,
        root,
    }
}

/// The data packs holding volume `name`'s file.
fn data_pack_of(s: &Setup, name: &str) -> std::path::PathBuf {
    let repo = open_repo(&s.repo_dir);
    let index = repo.load_index().unwrap();
    let (_, snap) = repo.find_snapshot("latest", Some(name)).unwrap();
    let entries = lifeboat::ls::list(&repo, &snap, "").unwrap();
    assert!(!entries.is_empty());
    let tree = lifeboat::repository::TreeLoader::new(&repo, &index)
        .load(&snap.tree)
        .unwrap();
    let sub = lifeboat::repository::TreeLoader::new(&repo, &index)
        .load(&tree.nodes[0].subtree.unwrap())
        .unwrap();
    let blob = sub.nodes[0].content[0];
    let pack = index.pack_id(index.get(&blob).unwrap().pack);
    s.repo_dir.join(lifeboat::repository::pack::pack_key(&pack))
}

#[test]
fn flipped_byte_in_a_pack_is_found_and_only_its_files_fail() {
    let s = setup();
    let pack = data_pack_of(&s, "a");
    flip_byte(&pack, 100);
    let repo = open_repo(&s.repo_dir);
    let report = check::check(&repo, ReadData::All).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(!report.errors.is_empty());
    assert!(
        report.errors.iter().all(|e| e.contains(&name)),
        "{:?}",
        report.errors
    );

    let (_, snap) = repo.find_snapshot("latest", Some("a")).unwrap();
    let r = lifeboat::restore::restore(
        &repo,
        &snap,
        &lifeboat::restore::RestoreOptions::new(s.root.join("ta")),
    )
    .unwrap();
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].contains("one.bin") && r.errors[0].contains("damaged"),
        "{}",
        r.errors[0]
    );

    let r = restore_latest(&repo, "b", &s.root.join("tb"));
    assert!(r.errors.is_empty());
    assert_eq!(
        fs::read(s.root.join("tb/two.bin")).unwrap(),
        random_bytes(300_000, 2)
    );
}

#[test]
fn damaged_pack_header_is_found_without_reading_data() {
    let s = setup();
    let pack = data_pack_of(&s, "a");
    flip_byte(&pack, -10);
    let report = check::check(&open_repo(&s.repo_dir), ReadData::None).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains(&name) && e.contains("pack header")),
        "{:?}",
        report.errors
    );
}

#[test]
fn flipped_byte_in_an_index_is_named() {
    let s = setup();
    let idx = objects(&s.repo_dir, "index");
    flip_byte(&idx[0], 50);
    // Readers skip it (with a warning naming it); the strict reading prune and repair use
    // fails, naming the object; check reports it.
    let repo = open_repo(&s.repo_dir);
    assert!(repo.load_index().is_ok());
    let err = repo.index_files().unwrap_err().to_string();
    let name = idx[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name), "{err}");
    let report = check::check(&repo, ReadData::None).unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains(&name)),
        "{:?}",
        report.errors
    );
}

#[test]
fn flipped_byte_in_a_snapshot_is_named_and_the_other_snapshot_restores() {
    let s = setup();
    let repo = open_repo(&s.repo_dir);
    let (a_id, _) = repo.find_snapshot("latest", Some("a")).unwrap();
    let snap_file = s.repo_dir.join(format!("snapshots/{a_id}"));
    flip_byte(&snap_file, 30);
    let repo = open_repo(&s.repo_dir);
    let report = check::check(&repo, ReadData::None).unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].contains(&a_id.to_hex()),
        "{}",
        report.errors[0]
    );
    // `latest` of volume a is refused, naming the damaged object (it may be the newest).
    let err = repo
        .find_snapshot("latest", Some("a"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&a_id.to_hex()), "{err}");
    // Volume b's snapshot restores (asked for with --fallback semantics: a damaged object of
    // unknown volume stored after it would otherwise make `latest` refuse).
    let (_, b_snap) = repo.find_latest(Some("b"), true).unwrap();
    let r = lifeboat::restore::restore(
        &repo,
        &b_snap,
        &lifeboat::restore::RestoreOptions::new(s.root.join("tb")),
    )
    .unwrap();
    assert!(r.errors.is_empty());
}

#[test]
fn truncated_and_missing_packs_are_reported() {
    let s = setup();
    let pack = data_pack_of(&s, "b");
    let bytes = fs::read(&pack).unwrap();
    fs::write(&pack, &bytes[..bytes.len() / 2]).unwrap();
    let report = check::check(&open_repo(&s.repo_dir), ReadData::None).unwrap();
    assert!(!report.errors.is_empty());
    fs::remove_file(&pack).unwrap();
    let report = check::check(&open_repo(&s.repo_dir), ReadData::None).unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains("missing")),
        "{:?}",
        report.errors
    );
}

#[test]
fn restore_never_writes_outside_the_target() {
    // A snapshot whose root entries are named `..` and `a/../../x` (only a key holder could write
    // one; the restorer must refuse it anyway).
    use lifeboat::repository::tree::{Node, NodeKind, Tree};
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(&tmp.path().join("repo"));
    write(&tmp.path().join("src/f"), b"payload");
    let good = backup_dir(&repo, &tmp.path().join("src"), "v");
    let mut evil = Tree::default();
    for name in ["..", "a/../../x"] {
        let mut n = Node::new(std::ffi::OsStr::new(name), NodeKind::Dir);
        n.mode = 0o755;
        n.subtree = Some(
            lifeboat::repository::TreeLoader::new(&repo, &repo.load_index().unwrap())
                .load(&good.snapshot.tree)
                .unwrap()
                .nodes[0]
                .subtree
                .unwrap(),
        );
        evil.nodes.push(n);
    }
    // Store the hostile root tree through the normal pipeline's sealing, in its own pack.
    let bytes = evil.to_bytes();
    let id = repo.key().blob_id(&bytes);
    let sealed = repo
        .key()
        .sealer(lifeboat::crypto::Kind::TreeBlob)
        .seal(&id.0, &bytes);
    let entry = lifeboat::repository::pack::PackEntry {
        id,
        kind: lifeboat::repository::pack::BlobType::Tree,
        flags: 0,
        offset: 0,
        length: sealed.len() as u32,
        raw_length: bytes.len() as u32,
    };
    let mut pack = sealed.clone();
    pack.extend_from_slice(&lifeboat::repository::pack::encode_header(
        repo.key(),
        &[entry],
    ));
    let pack_id = lifeboat::Id::of_bytes(&pack);
    write(
        &tmp.path()
            .join("repo")
            .join(lifeboat::repository::pack::pack_key(&pack_id)),
        &pack,
    );
    repo.save_index(&lifeboat::repository::index::IndexFile {
        supersedes: vec![],
        packs: vec![(pack_id, vec![entry])],
    })
    .unwrap();
    let mut snap = good.snapshot.clone();
    snap.tree = id;
    snap.paths = vec!["/a".into(), "/b".into()];
    let repo = open_repo(&tmp.path().join("repo"));
    let target = tmp.path().join("deep/target");
    let out = lifeboat::restore::restore(
        &repo,
        &snap,
        &lifeboat::restore::RestoreOptions::new(&target),
    )
    .unwrap();
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert!(out.errors.iter().all(|e| e.contains("unsafe entry name")));
    assert!(!tmp.path().join("deep/f").exists() && !tmp.path().join("x").exists());
    assert_eq!(out.files, 0);
}
