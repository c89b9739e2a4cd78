//! Maintenance commands: `forget` (retention per volume name) and `repair index`; and the
//! decoders of stored objects fed hostile plaintext.

mod common;

use std::path::Path;

use common::{assert_same_tree, cli_init, lifeboat};
use lifeboat::crypto::{Kind, MasterKey};
use lifeboat::id::Id;
use lifeboat::repository::index::IndexFile;
use lifeboat::repository::pack;
use lifeboat::repository::tree::Tree;
use proptest::prelude::*;

fn json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let out = lifeboat(repo).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(repo: &Path, name: &str) -> usize {
    json(repo, &["snapshots", "--name", name])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn forget_applies_the_policy_per_volume_name_and_dry_run_removes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    for (name, n) in [("a", 5), ("b", 2)] {
        for i in 0..n {
            common::write(&src.join("f"), format!("{name}{i}").as_bytes());
            let out = lifeboat(&repo)
                .args(["backup", "--name", name])
                .arg(&src)
                .output()
                .unwrap();
            assert!(out.status.success());
        }
    }
    let dry = json(&repo, &["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(count(&repo, "a"), 5);
    let groups = dry["groups"].as_array().unwrap();
    let a = groups.iter().find(|g| g["name"] == "a").unwrap();
    let removed: Vec<_> = a["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .collect();
    assert_eq!(removed.len(), 3);
    let kept = a["decisions"].as_array().unwrap()[0].clone();
    assert_eq!(kept["reasons"], serde_json::json!(["last"]));

    json(&repo, &["forget", "--keep-last", "2"]);
    assert_eq!(count(&repo, "a"), 2);
    assert_eq!(count(&repo, "b"), 2);
    // The newest of each name is still there and restores.
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--name", "a", "--target"])
        .arg(t.path().join("r"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(t.path().join("r/f")).unwrap(), b"a4");
    // No rule: refuse rather than remove everything.
    let out = lifeboat(&repo).args(["forget"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keep rule"));
    assert_eq!(count(&repo, "a"), 2);
}

#[test]
fn forget_can_group_by_tags_too() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    for (i, tag) in ["daily", "weekly", "daily", "weekly", "daily"]
        .iter()
        .enumerate()
    {
        common::write(&src.join("f"), format!("{i}").as_bytes());
        let out = lifeboat(&repo)
            .args(["backup", "--name", "v", "--tag", tag])
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let bad = lifeboat(&repo)
        .args(["forget", "--keep-last", "1", "--group-by", "name,color"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--group-by"));
    let v = json(
        &repo,
        &["forget", "--keep-last", "1", "--group-by", "name,tags"],
    );
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    assert!(
        groups
            .iter()
            .any(|g| g["tags"] == serde_json::json!(["weekly"]))
    );
    // One per tag set survives, where grouping by name alone would have kept one in all.
    assert_eq!(count(&repo, "v"), 2);
}

#[test]
fn repair_index_rebuilds_lost_and_damaged_index_objects_from_pack_headers() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    cli_init(&repo);
    let src = t.path().join("src");
    common::write(&src.join("big.bin"), &common::random_bytes(3 << 20, 9));
    common::write(&src.join("d/small.txt"), b"small");
    for name in ["one", "two"] {
        common::write(&src.join(format!("{name}.txt")), name.as_bytes());
        let out = lifeboat(&repo)
            .args(["backup", "--name", "v"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let mut idx = common::objects(&repo, "index");
    assert_eq!(idx.len(), 2);
    // One index object is lost, the other damaged.
    std::fs::remove_file(idx.pop().unwrap()).unwrap();
    common::flip_byte(&idx[0], 30);
    let out = lifeboat(&repo).args(["check"]).output().unwrap();
    assert!(!out.status.success(), "check missed the damaged index");

    let out = lifeboat(&repo).args(["repair", "index"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("index rebuilt"));
    let out = lifeboat(&repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let target = t.path().join("restored");
    let out = lifeboat(&repo)
        .args(["restore", "latest", "--name", "v", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_same_tree(&src, &target);
    // The next backup builds on the repaired index: nothing is uploaded again.
    let out = json(&repo, &["backup", "--name", "v", src.to_str().unwrap()]);
    assert_eq!(out["summary"]["data_blobs_added"], 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Authenticated but hostile plaintext (a leaked key, a buggy writer) never panics a decoder
    /// or makes it allocate beyond what it was given.
    #[test]
    fn decoders_reject_hostile_plaintext_without_panicking(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in 0usize..4,
        size in 0u64..(1 << 40),
    ) {
        let key = MasterKey::generate();
        // Start some inputs with a valid magic and version so parsing gets past the first check.
        let mut plain = match prefix {
            0 => b"LBIX\x01".to_vec(),
            1 => b"LBPH\x01".to_vec(),
            _ => Vec::new(),
        };
        plain.extend_from_slice(&body);
        let sealed = key.sealer(Kind::Index).seal(b"", &plain);
        let _ = IndexFile::decode(&key, "index/x", &sealed);
        let sealed = key.sealer(Kind::PackHeader).seal(b"", &plain);
        let _ = pack::decode_header(&key, "data/x", &sealed, size);
        let _ = Tree::from_bytes(&plain, &Id([0; 32]));
        let _ = serde_json::from_slice::<lifeboat::repository::snapshot::Snapshot>(&plain);
    }

    /// Counts that claim more entries than the bytes hold are rejected up front.
    #[test]
    fn index_counts_beyond_the_input_are_rejected(n in 1u32..u32::MAX) {
        let key = MasterKey::generate();
        let mut plain = b"LBIX\x01".to_vec();
        plain.extend_from_slice(&0u32.to_le_bytes());
        plain.extend_from_slice(&n.to_le_bytes());
        let sealed = key.sealer(Kind::Index).seal(b"", &plain);
        prop_assert!(IndexFile::decode(&key, "index/x", &sealed).is_err());
    }
}
