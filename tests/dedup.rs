//! Deduplication: unchanged data adds nothing, a 1-byte edit adds about one chunk, and the
//! parent snapshot lets unchanged files be skipped without reading.

mod common;

use std::fs;

use common::*;

#[test]
fn second_backup_of_unchanged_data_adds_no_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..50 {
        write(
            &src.join(format!("d{}/f{i}", i % 5)),
            &random_bytes(10_000 + i * 1000, i as u64),
        );
    }
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    let first = backup_dir(&repo, &src, "v");
    assert_eq!(first.snapshot.summary.files_new, 50);
    let packs_before = objects(&repo_dir, "data");

    let second = backup_dir(&repo, &src, "v");
    let s = &second.snapshot.summary;
    assert_eq!(
        (s.files_unmodified, s.files_new, s.files_changed),
        (50, 0, 0)
    );
    assert_eq!(s.bytes_read, 0, "unchanged files are not read");
    assert_eq!(s.packs_written, 0);
    assert_eq!(objects(&repo_dir, "data"), packs_before);
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(second.snapshot.tree, first.snapshot.tree);
}

#[test]
fn one_byte_edit_in_a_large_file_adds_about_one_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let big = random_bytes(8 << 20, 42); // 8 MiB: ~512 chunks of 16 KiB average
    write(&src.join("big.db"), &big);
    let repo = init_repo(&tmp.path().join("repo"));
    let first = backup_dir(&repo, &src, "v");
    let chunks = first.snapshot.summary.data_blobs_added;
    assert!(chunks > 200, "{chunks} chunks");

    let mut edited = big.clone();
    edited[5_000_000] ^= 0xff;
    fs::write(src.join("big.db"), &edited).unwrap();
    let second = backup_dir(&repo, &src, "v");
    let s = &second.snapshot.summary;
    assert_eq!(s.files_changed, 1);
    assert_eq!(s.bytes_read, 8 << 20);
    assert!(
        (1..=2).contains(&s.data_blobs_added),
        "a 1-byte edit added {} data blobs",
        s.data_blobs_added
    );
    assert!(s.bytes_added < 200_000, "added {} bytes", s.bytes_added);

    // An insertion shifts everything after it; content-defined chunking resynchronizes.
    let mut inserted = edited.clone();
    inserted.splice(1_000_000..1_000_000, b"inserted bytes".iter().copied());
    fs::write(src.join("big.db"), &inserted).unwrap();
    let third = backup_dir(&repo, &src, "v");
    assert!(
        third.snapshot.summary.data_blobs_added <= 3,
        "{}",
        third.snapshot.summary.data_blobs_added
    );

    let target = tmp.path().join("t");
    restore_latest(&repo, "v", &target);
    assert!(fs::read(target.join("big.db")).unwrap() == inserted);
}

#[test]
fn identical_files_and_directories_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let payload = random_bytes(500_000, 7);
    for d in ["a", "b", "c"] {
        write(&src.join(d).join("same.bin"), &payload);
    }
    let repo = init_repo(&tmp.path().join("repo"));
    let out = backup_dir(&repo, &src, "v");
    let s = &out.snapshot.summary;
    assert_eq!(s.bytes_read, 1_500_000);
    assert!(s.bytes_added < 520_000 + 10_000, "added {}", s.bytes_added);
    // Tree nodes carry inode numbers (for change detection and hard links), so the three
    // directories are three trees: root, src, a, b, c.
    assert_eq!(s.tree_blobs_added, 5);
}

#[test]
fn volumes_have_separate_histories() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&a.join("f"), b"volume a");
    write(&b.join("f"), b"volume b");
    let repo = init_repo(&tmp.path().join("repo"));
    backup_dir(&repo, &a, "vol-a");
    backup_dir(&repo, &b, "vol-b");
    let t = tmp.path().join("t");
    restore_latest(&repo, "vol-a", &t);
    assert_eq!(fs::read(t.join("f")).unwrap(), b"volume a");
    // The parent is chosen by volume name: vol-b's second backup chains to vol-b's first.
    let again = backup_dir(&repo, &b, "vol-b");
    let (b_first, _) = repo.find_snapshot("latest", Some("vol-b")).unwrap();
    assert_eq!(again.id, b_first);
    assert_eq!(again.snapshot.summary.files_unmodified, 1);
}
