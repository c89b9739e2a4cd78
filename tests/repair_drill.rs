//! Corruption drills: flip a bit in, truncate or delete one object of each kind (a data pack, a
//! tree pack, an index object, a snapshot), chosen at random. `check --read-data` must name it;
//! `repair index --read-data` then `repair snapshots --forget` must leave a repository that
//! checks clean; and every file whose data did not live in the damaged object must restore
//! byte-identical. Only files that depended on the damage may go, and repair lists them.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use common::*;
use lifeboat::Id;
use lifeboat::backend::LocalBackend;
use lifeboat::repository::pack::{BlobType, pack_key};
use lifeboat::repository::tree::NodeKind;
use lifeboat::repository::{Repository, TreeLoader};

#[derive(Clone, Copy, Debug)]
enum Target {
    DataPack,
    TreePack,
    Index,
    Snapshot,
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

fn json(repo: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = lifeboat(repo).arg("--json").args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// For each snapshot, the files (relative paths) with any content blob in `pack`.
fn files_depending_on(repo: &Repository, pack: &Id) -> HashMap<Id, BTreeSet<String>> {
    let index = repo.load_index().unwrap();
    let trees = TreeLoader::new(repo, &index);
    let mut out = HashMap::new();
    for (sid, snap) in repo.snapshots().unwrap() {
        let mut hit = BTreeSet::new();
        let mut stack = vec![(snap.tree, String::new())];
        while let Some((t, path)) = stack.pop() {
            for n in trees.load(&t).unwrap().nodes {
                let p = if path.is_empty() {
                    n.name.clone()
                } else {
                    format!("{path}/{}", n.name)
                };
                match n.kind {
                    NodeKind::Dir => stack.push((n.subtree.unwrap(), p)),
                    NodeKind::File => {
                        if n.content
                            .iter()
                            .any(|b| index.get(b).is_some_and(|l| index.pack_id(l.pack) == *pack))
                        {
                            hit.insert(p);
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
        out.insert(sid, hit);
    }
    out
}

fn drill(target: Target, damage: Damage, seed: u64) {
    let t = tempfile::tempdir().unwrap();
    let repo_dir = t.path().join("repo");
    cli_init(&repo_dir);
    let src = t.path().join("vol");
    let mut expected: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for round in 0..3u64 {
        for i in 0..18u64 {
            if round == 0 || (i + round) % 4 == 0 {
                let n = 20_000 + ((i * 7919 + round * 31) % 60_000) as usize;
                write(
                    &src.join(format!("d{}/f{i}", i % 3)),
                    &random_bytes(n, i * 100 + round),
                );
            }
        }
        let (ok, v, log) = json(
            &repo_dir,
            &["backup", "--name", "vol", src.to_str().unwrap()],
        );
        assert!(ok, "{log}");
        expected.insert(v["snapshot"].as_str().unwrap().to_string(), manifest(&src));
    }

    // Pick the victim.
    let repo = Repository::open(Box::new(LocalBackend::new(&repo_dir)), PASSWORD).unwrap();
    let index = repo.load_index().unwrap();
    let mut kinds: HashMap<Id, BlobType> = HashMap::new();
    for (_, loc) in index.iter() {
        kinds.insert(index.pack_id(loc.pack), loc.kind);
    }
    let pick = |mut v: Vec<PathBuf>| {
        v.sort();
        v[(seed as usize) % v.len()].clone()
    };
    let (victim, may_lose): (PathBuf, HashMap<Id, BTreeSet<String>>) = match target {
        Target::DataPack | Target::TreePack => {
            let want = if matches!(target, Target::DataPack) {
                BlobType::Data
            } else {
                BlobType::Tree
            };
            let mut packs: Vec<&Id> = kinds
                .iter()
                .filter(|(_, k)| **k == want)
                .map(|(id, _)| id)
                .collect();
            packs.sort();
            let pack = *packs[(seed as usize) % packs.len()];
            let lose = if matches!(target, Target::DataPack) {
                files_depending_on(&repo, &pack)
            } else {
                HashMap::new()
            };
            (repo_dir.join(pack_key(&pack)), lose)
        }
        Target::Index => (pick(objects(&repo_dir, "index")), HashMap::new()),
        Target::Snapshot => (pick(objects(&repo_dir, "snapshots")), HashMap::new()),
    };
    drop(repo);
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let len = std::fs::metadata(&victim).unwrap().len();
    match damage {
        Damage::Flip => {
            // Inside a blob for packs (the header would just make the whole pack unreadable).
            let at = if matches!(target, Target::DataPack | Target::TreePack) {
                (seed * 7919) % (len / 2)
            } else {
                (seed * 7919) % len
            };
            flip_byte(&victim, at as i64);
        }
        Damage::Truncate => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap();
            f.set_len(len / 2).unwrap();
        }
        Damage::Delete => std::fs::remove_file(&victim).unwrap(),
    }

    // check names it.
    let out = lifeboat(&repo_dir)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{target:?}/{damage:?}: check passed");
    // A deleted index object cannot be named; check names what it no longer finds.
    let named = if matches!((target, damage), (Target::Index, Damage::Delete)) {
        report.contains("not in any index")
    } else {
        report.contains(&name[..16]) || report.contains(&name[..8])
    };
    assert!(
        named,
        "{target:?}/{damage:?}: check did not name {name}:\n{report}"
    );
    eprintln!(
        "{target:?}/{damage:?} of {}: check said:\n  {}",
        &name[..12],
        report
            .lines()
            .filter(|l| l.contains(&name[..8]) || l.contains("not in any index"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n  ")
    );

    // repair.
    let (_, idx, log) = json(&repo_dir, &["repair", "index", "--read-data"]);
    assert!(idx.is_object(), "{log}");
    let (ok, rep, log) = json(&repo_dir, &["repair", "snapshots", "--forget"]);
    assert!(ok, "{log}");
    let (ok, _, log) = json(&repo_dir, &["check", "--read-data"]);
    assert!(ok, "{target:?}/{damage:?}: check after repair:\n{log}");

    // Nothing else is lost.
    let mut dropped: HashMap<String, (String, BTreeSet<String>, Vec<String>)> = HashMap::new();
    let mut unreadable = HashSet::new();
    for r in rep["repaired"].as_array().unwrap() {
        let orig = r["snapshot"].as_str().unwrap().to_string();
        if r["unreadable"].is_string() {
            unreadable.insert(orig);
            continue;
        }
        let files: BTreeSet<String> = r["files_dropped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().trim_start_matches('/').to_string())
            .collect();
        let dirs: Vec<String> = r["dirs_emptied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().trim_start_matches('/').to_string())
            .collect();
        dropped.insert(
            r["replacement"].as_str().unwrap().to_string(),
            (orig, files, dirs),
        );
    }
    let (ok, snaps, log) = json(&repo_dir, &["snapshots"]);
    assert!(ok, "{log}");
    let mut lost_files = 0;
    let mut restored = 0;
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let target_dir = t.path().join(format!("restore-{id}"));
        let out = lifeboat(&repo_dir)
            .args(["restore", id, "--target"])
            .arg(&target_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        restored += 1;
        let got = manifest(&target_dir);
        let (orig, want) = match dropped.get(id) {
            Some((orig, files, dirs)) => {
                let mut want = expected[orig].clone();
                want.retain(|p, _| {
                    !files.contains(&format!("vol/{p}"))
                        && !dirs.iter().any(|d| {
                            d.is_empty() || format!("vol/{p}").starts_with(&format!("{d}/"))
                        })
                });
                lost_files += expected[orig].len() - want.len();
                if let Some(allowed) = orig.parse::<Id>().ok().and_then(|o| may_lose.get(&o)) {
                    for f in files {
                        assert!(
                            allowed.contains(f),
                            "{target:?}/{damage:?}: {f} was dropped but none of its data was in the damaged pack"
                        );
                    }
                }
                (orig.clone(), want)
            }
            None => (id.to_string(), expected[id].clone()),
        };
        assert_eq!(got, want, "{target:?}/{damage:?}: snapshot {orig}");
    }
    // Only a damaged snapshot object itself may disappear.
    assert_eq!(
        restored + unreadable.len(),
        expected.len(),
        "{target:?}/{damage:?}"
    );
    if matches!(target, Target::Index) {
        assert_eq!(lost_files, 0, "index damage must lose no file");
        assert!(dropped.is_empty() && unreadable.is_empty());
    }
    eprintln!(
        "  repaired: {} snapshot(s) rewritten, {} removed as unreadable, {lost_files} file(s) dropped; {restored} snapshot(s) restore byte-identical otherwise",
        dropped.len(),
        unreadable.len()
    );
}

#[test]
fn damaged_data_pack() {
    drill(Target::DataPack, Damage::Flip, 3);
    drill(Target::DataPack, Damage::Truncate, 5);
    drill(Target::DataPack, Damage::Delete, 7);
}

#[test]
fn damaged_tree_pack() {
    drill(Target::TreePack, Damage::Flip, 11);
    drill(Target::TreePack, Damage::Delete, 13);
}

#[test]
fn damaged_index_object() {
    drill(Target::Index, Damage::Flip, 17);
    drill(Target::Index, Damage::Delete, 19);
}

#[test]
fn damaged_snapshot_object() {
    drill(Target::Snapshot, Damage::Flip, 23);
    drill(Target::Snapshot, Damage::Truncate, 29);
}
