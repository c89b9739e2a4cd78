//! The command line: exit codes, one-line errors that name the problem, JSON output, keys,
//! command streaming.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn wrong_password_and_missing_repository_have_their_own_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let out = lifeboat(&repo).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stderr(&out).contains("no repository at"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);

    cli_init(&repo);
    let out = lifeboat(&repo)
        .env("LIFEBOAT_PASSWORD", "nope")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));

    let out = lifeboat(&repo)
        .env_remove("LIFEBOAT_PASSWORD")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("LIFEBOAT_PASSWORD"),
        "{}",
        stderr(&out)
    );

    // init twice refuses, and the existing repository still opens.
    let out = lifeboat(&repo).arg("init").output().unwrap();
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(
        lifeboat(&repo)
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn repository_of_format_1_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init_repo(&repo_dir);
    // A format-1 config: an envelope with type byte 0x01 (no associated data).
    for name in ["config", "config.1"] {
        let mut bytes = fs::read(repo_dir.join(name)).unwrap();
        bytes[0] = 0x01;
        fs::write(repo_dir.join(name), bytes).unwrap();
    }
    let out = lifeboat(&repo_dir).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("repository format 1") && err.contains("format 2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn repository_of_a_newer_format_is_refused_with_upgrade_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = init_repo(&repo_dir);
    let mut cfg: serde_json::Value = serde_json::from_str(&repo.config_json()).unwrap();
    cfg["version"] = 3.into();
    let sealed = repo
        .key()
        .sealer(lifeboat::crypto::Kind::Config)
        .seal(b"config", &serde_json::to_vec(&cfg).unwrap());
    fs::write(repo_dir.join("config"), sealed).unwrap();
    let out = lifeboat(&repo_dir).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format version 3") && stderr(&out).contains("upgrade lifeboat"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_files_give_a_partial_snapshot_and_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = tmp.path().join("src");
    write(&src.join("ok.txt"), b"fine");
    write(&src.join("secret.txt"), b"unreadable");
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    // Run as an unprivileged user when we are root, since root reads mode-000 files.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        std::process::Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&repo)
            .status()
            .unwrap();
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_lifeboat"),
        ])
        .env("LIFEBOAT_REPOSITORY", &repo)
        .env("LIFEBOAT_PASSWORD", PASSWORD);
        c
    } else {
        let mut c = lifeboat(&repo);
        c.arg("--");
        c
    };
    let out = cmd
        .args(["backup", "--name", "v"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("secret.txt"), "{}", stderr(&out));
    let ls = lifeboat(&repo).args(["ls", "latest"]).output().unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains("/src/ok.txt") && !listing.contains("secret"),
        "{listing}"
    );
}

#[test]
fn stdin_from_command_streams_a_dump_and_fails_without_a_snapshot_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let out = lifeboat(&repo)
        .args([
            "backup",
            "--stdin-from-command",
            "seq 1 100000",
            "--stdin-filename",
            "dump.sql",
            "--name",
            "db",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = tmp.path().join("t");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--name", "db", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    let expected: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        fs::read_to_string(target.join("dump.sql")).unwrap(),
        expected
    );

    let out = lifeboat(&repo)
        .args([
            "backup",
            "--stdin-from-command",
            "echo partial; exit 3",
            "--stdin-filename",
            "dump.sql",
            "--name",
            "db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exit status: 3") && stderr(&out).contains("no snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(objects(&repo, "snapshots").len(), 1);
}

#[test]
fn json_outputs_parse_and_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a/b.txt"), b"hello");
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let b = lifeboat(&repo)
        .args([
            "backup",
            "--json",
            "--tag",
            "nightly",
            "--label",
            "akash.dseq=42",
            "--name",
            "vol",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", stderr(&b));
    let b: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(b["summary"]["files_new"], 1);
    assert!(b["requests"]["put"].as_u64().unwrap() >= 3);
    let s = lifeboat(&repo)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(s[0]["id"], b["snapshot"]);
    assert_eq!(s[0]["name"], "vol");
    assert_eq!(s[0]["tags"][0], "nightly");
    assert_eq!(s[0]["labels"]["akash.dseq"], "42");
    // `snapshots` and `ls` read LIFEBOAT_NAME like backup and restore do.
    let other = lifeboat(&repo)
        .env("LIFEBOAT_NAME", "other")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let other: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(other.as_array().unwrap().len(), 0, "{other}");
    let named = lifeboat(&repo)
        .env("LIFEBOAT_NAME", "vol")
        .args(["ls", "latest", "--json"])
        .output()
        .unwrap();
    assert!(named.status.success(), "{}", stderr(&named));
    let ls = lifeboat(&repo)
        .args(["ls", "latest", "/src/a", "--json"])
        .output()
        .unwrap();
    // JSON lines: one object per entry.
    let ls: Vec<serde_json::Value> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[1]["path"], "/src/a/b.txt");
    let t = tmp.path().join("t");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--json", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["restored"]["files"], 1);

    let bad = lifeboat(&repo)
        .args(["backup", "--label", "novalue"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(stderr(&bad).contains("KEY=VALUE"), "{}", stderr(&bad));
    let bad = lifeboat(&repo)
        .args(["restore", "zz", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        stderr(&bad).contains("not a snapshot id"),
        "{}",
        stderr(&bad)
    );
    let bad = lifeboat(&repo)
        .args(["backup"])
        .arg(tmp.path().join("nope"))
        .output()
        .unwrap();
    assert!(stderr(&bad).contains("does not exist"), "{}", stderr(&bad));
}

#[test]
fn restore_into_non_empty_target_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("f"), b"x");
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    assert!(
        lifeboat(&repo)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    let t = tmp.path().join("t");
    write(&t.join("precious"), b"keep me");
    let r = lifeboat(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains("not empty") && stderr(&r).contains("--overwrite"),
        "{}",
        stderr(&r)
    );
    assert_eq!(fs::read(t.join("precious")).unwrap(), b"keep me");
}

#[test]
fn keys_can_be_added_listed_changed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let add = lifeboat(&repo)
        .args(["key", "add"])
        .env("LIFEBOAT_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", stderr(&add));
    let list = lifeboat(&repo)
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        lifeboat(&repo)
            .env("LIFEBOAT_PASSWORD", "second")
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .success()
    );

    // The key in use cannot be removed; the other one can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rm = lifeboat(&repo)
        .args(["key", "remove", &current[..8]])
        .output()
        .unwrap();
    assert!(
        !rm.status.success() && stderr(&rm).contains("refusing"),
        "{}",
        stderr(&rm)
    );
    let rm = lifeboat(&repo)
        .args(["key", "remove", &other[..8]])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert_eq!(
        lifeboat(&repo)
            .env("LIFEBOAT_PASSWORD", "second")
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .code(),
        Some(12)
    );

    let pw = lifeboat(&repo)
        .args(["key", "passwd"])
        .env("LIFEBOAT_NEW_PASSWORD", "third")
        .output()
        .unwrap();
    assert!(pw.status.success(), "{}", stderr(&pw));
    assert_eq!(
        lifeboat(&repo)
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .code(),
        Some(12)
    );
    assert!(
        lifeboat(&repo)
            .env("LIFEBOAT_PASSWORD", "third")
            .arg("snapshots")
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn check_passes_on_a_healthy_repository_and_reads_subsets() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("f"), &random_bytes(3 << 20, 3));
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    assert!(
        lifeboat(&repo)
            .arg("backup")
            .arg(&src)
            .output()
            .unwrap()
            .status
            .success()
    );
    for args in [
        vec!["check"],
        vec!["check", "--read-data"],
        vec!["check", "--read-data-subset", "50%"],
        vec!["check", "--read-data-subset", "1/2"],
    ] {
        let out = lifeboat(&repo).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("no errors"));
    }
    let bad = lifeboat(&repo)
        .args(["check", "--read-data-subset", "3/2"])
        .output()
        .unwrap();
    assert!(
        stderr(&bad).contains("--read-data-subset"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn help_is_grouped_lists_every_agent_variable_and_sdl_hides_repository_flags() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let run = help(&["run"]);
    for heading in [
        "Repository:",
        "Global options:",
        "Volume:",
        "Schedule:",
        "Retention:",
        "Capture:",
        "Restore gate:",
        "HTTP (metrics, health, control):",
        "Settings without a flag",
    ] {
        assert!(run.contains(heading), "run --help lacks {heading}");
    }
    // Every variable the agent reads appears in its help, as a flag's [env: …] or in the list of
    // settings without a flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["config", "check", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    for v in [
        "LIFEBOAT_CONTROL_TOKEN",
        "LIFEBOAT_PING_URL",
        "LIFEBOAT_WEBHOOK_URL",
        "LIFEBOAT_LOG_FORMAT",
        "LIFEBOAT_CONFIG",
        "LIFEBOAT_HEARTBEAT",
        "LIFEBOAT_CACHE_DIR",
        "LIFEBOAT_SCHEDULE",
        "LIFEBOAT_SQLITE",
        "LIFEBOAT_LIMIT_UPLOAD",
    ] {
        assert!(run.contains(v), "run --help does not mention {v}");
        assert!(
            help(&["daemon"]).contains(v),
            "daemon --help does not mention {v}"
        );
    }
    let check = help(&["sdl", "check"]);
    for flag in [
        "--repo",
        "--password-file",
        "--password-command",
        "--no-cache",
    ] {
        assert!(!check.contains(flag), "sdl check --help lists {flag}");
    }
    let inject = help(&["sdl", "inject"]);
    assert!(!inject.contains("--password-file"), "{inject}");
    // Hidden, still accepted where it means something.
    assert!(inject.contains("--repo"));
}

#[test]
fn backup_and_restore_count_the_same_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let data = tmp.path().join("data");
    for d in ["a", "a/b", "c"] {
        write(&data.join(d).join("f"), d.as_bytes());
    }
    let out = lifeboat(&repo)
        .args(["--json", "backup"])
        .arg(&data)
        .output()
        .unwrap();
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = lifeboat(&repo)
        .args(["--json", "restore", "latest", "-t"])
        .arg(tmp.path().join("r"))
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["summary"]["dirs"], 4, "{b}");
    assert_eq!(r["restored"]["dirs"], b["summary"]["dirs"], "{r}");
}

#[test]
fn readme_settings_table_names_the_flags_the_binary_has() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    // flag -> the variable it reads: each option's block starts with a line `  [-x, ]--flag` and
    // holds `[env: LIFEBOAT_X=]` somewhere in its (wrapped) description.
    let mut flag_env = std::collections::HashMap::new();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let opt = t.strip_prefix("-").and_then(|_| {
            let t = t.split_once(", ").map_or(
                t,
                |(short, rest)| {
                    if short.len() == 2 { rest } else { t }
                },
            );
            t.strip_prefix("--")
                .map(|f| format!("--{}", f.split([' ', '.']).next().unwrap()))
        });
        match opt {
            Some(f) if line.starts_with("  ") => blocks.push((f, t.to_string())),
            _ => {
                if let Some(b) = blocks.last_mut() {
                    b.1.push(' ');
                    b.1.push_str(t);
                }
            }
        }
    }
    for (flag, text) in blocks {
        if let Some(rest) = text.split("[env: ").nth(1) {
            let var: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            flag_env.insert(flag, var);
        }
    }
    assert!(flag_env.len() > 40, "{flag_env:?}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "| variable | flag | default | meaning |")
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(rows.len() > 40);
    let mut vars_in_table = String::new();
    for row in &rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        let (vars, flags) = (cells[0], cells[1]);
        vars_in_table.push_str(vars);
        for f in flags.split(['`', ',', ' ']).filter(|f| f.starts_with("--")) {
            let env = flag_env
                .get(f)
                .unwrap_or_else(|| panic!("README names {f}, which run --help does not have"));
            let short = env.trim_start_matches("LIFEBOAT_");
            // `LIFEBOAT_X` / `_FILE` covers LIFEBOAT_X_FILE.
            let file_form = env
                .strip_suffix("_FILE")
                .is_some_and(|base| vars.contains(base) && vars.contains("`_FILE`"));
            let keep = env
                .strip_prefix("LIFEBOAT_KEEP_")
                .is_some_and(|k| vars.contains("LIFEBOAT_KEEP_") && vars.contains(k));
            assert!(
                vars.contains(env.as_str()) || vars.contains(short) || file_form || keep,
                "README row {vars} names {f}, which reads {env}"
            );
        }
    }
    for (flag, env) in &flag_env {
        let short = env.trim_start_matches("LIFEBOAT_KEEP_");
        let file_form = env
            .strip_suffix("_FILE")
            .is_some_and(|base| vars_in_table.contains(&format!("`{base}` / `_FILE`")));
        assert!(
            vars_in_table.contains(env.as_str())
                || file_form
                || (env.starts_with("LIFEBOAT_KEEP_") && vars_in_table.contains(short)),
            "{env} ({flag}) is missing from the README's settings table"
        );
    }
}

/// `lifeboat backup` of a directory holding a database that is open and being written (SQLite
/// in WAL mode, with frames in its log) is refused before anything is stored, in one line that
/// names the file and the ways out; `--allow-live-database` accepts the copy.
#[test]
fn backup_of_a_live_database_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    cli_init(&repo);
    let data = tmp.path().join("data");
    fs::create_dir_all(data.join("app")).unwrap();
    fs::write(data.join("app/notes.txt"), "x").unwrap();
    let db = rusqlite::Connection::open(data.join("app/app.db")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let out = lifeboat(&repo).arg("backup").arg(&data).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("live SQLite database")
            && err.contains("app.db")
            && err.contains("--allow-live-database"),
        "{err}"
    );
    let snaps = lifeboat(&repo)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&snaps.stdout).trim(), "[]");
    // What the backup excludes is not a reason to refuse it.
    for exclude in ["app", "app.db"] {
        let out = lifeboat(&repo)
            .args(["backup", "--exclude", exclude])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "--exclude {exclude}: {}",
            stderr(&out)
        );
    }
    let out = lifeboat(&repo)
        .args(["backup", "--allow-live-database"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(db);
    // Closed cleanly, the database has no log left: an ordinary backup.
    let out = lifeboat(&repo).arg("backup").arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
