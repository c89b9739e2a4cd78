//! The Akash add-on: every snippet in `sdl-snippets/` passes the SDL rule checker; the checker
//! catches each rule it claims; `sdl inject` turns the plain postgres snippet into the
//! lifeboat one, keeps the rest of the file, and refuses what it cannot do; and the bootstrap
//! command fails closed on a checksum mismatch.

use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat::sdl::{self, InjectOptions, Mode, rules};

fn snippets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdl-snippets")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
}

fn opts(service: &str) -> InjectOptions {
    InjectOptions {
        service: service.into(),
        entrypoint: None,
        cmd: None,
        name: None,
        repo: None,
        mode: Mode::Image,
        image: None,
        release_url: None,
        sha256: None,
    }
}

#[test]
fn every_snippet_passes_the_rules_and_the_readme_lists_it() {
    let readme = std::fs::read_to_string(snippets().join("README.md")).unwrap();
    let mut versions = Vec::new();
    let mut n = 0;
    for e in std::fs::read_dir(snippets()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        let v = rules::parse(&text, &p.display().to_string()).unwrap();
        let problems = sdl::check(&v);
        assert!(problems.is_empty(), "{}: {problems:?}", p.display());
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(readme.contains(name), "README.md does not explain {name}");
        versions.push(rules::get(&v, "version").and_then(rules::str_of).unwrap());
        let out = bin().args(["sdl", "check"]).arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(n >= 7, "only {n} snippets");
    assert!(versions.iter().any(|v| v == "2.0") && versions.iter().any(|v| v == "2.1"));
}

/// Applies `edit` to the plain postgres snippet and returns the checker's problems.
fn problems_after(edit: impl FnOnce(&mut serde_yaml_ng::Value)) -> Vec<String> {
    let text = std::fs::read_to_string(snippets().join("postgres-lifeboat.yaml")).unwrap();
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    edit(&mut v);
    sdl::check(&v)
}

fn at<'a>(v: &'a mut serde_yaml_ng::Value, path: &[&str]) -> &'a mut serde_yaml_ng::Value {
    let mut cur = v;
    for k in path {
        cur = match k.parse::<usize>() {
            Ok(i) => &mut cur.as_sequence_mut().unwrap()[i],
            Err(_) => cur.as_mapping_mut().unwrap().get_mut(*k).unwrap(),
        };
    }
    cur
}

#[test]
fn the_checker_catches_each_rule() {
    use serde_yaml_ng::Value;
    let storage = ["profiles", "compute", "postgres", "resources", "storage"];
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "version",
            Box::new(|v| *at(v, &["version"]) = Value::String("3.0".into())),
        ),
        (
            "no image",
            Box::new(|v| {
                at(v, &["services", "postgres"])
                    .as_mapping_mut()
                    .unwrap()
                    .remove("image");
            }),
        ),
        (
            "KEY=VALUE",
            Box::new(|v| {
                at(v, &["services", "postgres", "env"])
                    .as_sequence_mut()
                    .unwrap()
                    .push(Value::String("JUST_A_KEY".into()))
            }),
        ),
        (
            "never mounted",
            Box::new(|v| {
                at(v, &["services", "postgres", "params", "storage"])
                    .as_mapping_mut()
                    .unwrap()
                    .remove("pgdata");
            }),
        ),
        (
            "only allowed with persistent",
            Box::new(move |v| {
                *at(
                    v,
                    &[
                        storage[0],
                        storage[1],
                        storage[2],
                        storage[3],
                        storage[4],
                        "1",
                        "attributes",
                        "persistent",
                    ],
                ) = Value::Bool(false)
            }),
        ),
        (
            "ram can never be persistent",
            Box::new(move |v| {
                *at(
                    v,
                    &[
                        storage[0],
                        storage[1],
                        storage[2],
                        storage[3],
                        storage[4],
                        "1",
                        "attributes",
                        "class",
                    ],
                ) = Value::String("ram".into())
            }),
        ),
        (
            "absolute path",
            Box::new(|v| {
                *at(
                    v,
                    &[
                        "services", "postgres", "params", "storage", "pgdata", "mount",
                    ],
                ) = Value::String("var/lib/postgresql".into())
            }),
        ),
        (
            "one per service",
            Box::new(move |v| {
                let s = at(v, &storage).as_sequence_mut().unwrap();
                let mut extra = s[1].clone();
                *at(&mut extra, &["name"]) = Value::String("wal".into());
                s.push(extra);
            }),
        ),
        (
            "used twice",
            Box::new(move |v| {
                let s = at(v, &storage).as_sequence_mut().unwrap();
                let mut extra = s[0].clone();
                extra
                    .as_mapping_mut()
                    .unwrap()
                    .insert("name".into(), Value::String("scratch".into()));
                s.push(extra);
                at(v, &["services", "postgres", "params", "storage"])
                    .as_mapping_mut()
                    .unwrap()
                    .insert(
                        "scratch".into(),
                        serde_yaml_ng::from_str("{mount: /var/lib/postgresql/data}").unwrap(),
                    );
            }),
        ),
        (
            "control port",
            Box::new(|v| {
                at(v, &["services", "postgres", "env"])
                    .as_sequence_mut()
                    .unwrap()
                    .push(Value::String("LIFEBOAT_LISTEN=0.0.0.0:5432".into()))
            }),
        ),
        (
            "not in profiles.compute",
            Box::new(|v| {
                *at(v, &["deployment", "postgres", "akash", "profile"]) =
                    Value::String("nope".into())
            }),
        ),
    ];
    for (want, edit) in cases {
        let p = problems_after(edit);
        assert!(
            p.iter().any(|e| e.contains(want)),
            "expected a problem mentioning {want:?}, got {p:?}"
        );
    }
}

#[test]
fn inject_turns_the_plain_postgres_snippet_into_the_lifeboat_one() {
    let plain = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();
    let want = std::fs::read_to_string(snippets().join("postgres-lifeboat.yaml")).unwrap();
    let out = sdl::inject(&plain, &opts("postgres")).unwrap();
    assert!(out.layout_kept);
    assert_eq!(
        rules::parse(&out.sdl, "out").unwrap(),
        rules::parse(&want, "want").unwrap()
    );
    // Everything outside the service is kept byte for byte, comments included.
    let tail = &plain[plain.find("\nprofiles:").unwrap()..];
    assert!(out.sdl.ends_with(tail));
    assert!(
        out.sdl
            .starts_with(&plain[..plain.find("services:").unwrap()])
    );
    let df = out.dockerfile.unwrap();
    assert!(df.contains("FROM postgres:16\n"), "{df}");
    assert!(df.contains("COPY --from=lifeboat /usr/local/bin/lifeboat /usr/local/bin/lifeboat"));

    // Through the CLI, writing files.
    let t = tempfile::tempdir().unwrap();
    let o = t.path().join("out.yaml");
    let d = t.path().join("Dockerfile");
    let r = bin()
        .args(["sdl", "inject"])
        .arg(snippets().join("postgres.yaml"))
        .args(["--service", "postgres", "-o"])
        .arg(&o)
        .arg("--dockerfile")
        .arg(&d)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        rules::parse(&std::fs::read_to_string(&o).unwrap(), "o").unwrap(),
        rules::parse(&want, "want").unwrap()
    );
    assert!(std::fs::read_to_string(&d).unwrap().contains("ENTRYPOINT"));
}

#[test]
fn inject_wraps_stated_commands_and_needs_the_entrypoint_otherwise() {
    let base = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();
    // A stated command and args are wrapped as they are.
    let stated = base.replace(
        "    image: postgres:16\n",
        "    image: ghcr.io/acme/db:2\n    command: [\"/bin/db\"]\n    args: [\"--fast\"]\n",
    );
    let out = sdl::inject(&stated, &opts("postgres")).unwrap();
    let v = rules::parse(&out.sdl, "o").unwrap();
    let svc = rules::get(rules::get(&v, "services").unwrap(), "postgres").unwrap();
    let args: Vec<String> = rules::get(svc, "args")
        .unwrap()
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(rules::str_of)
        .collect();
    assert_eq!(args, ["/bin/db", "--fast"]);
    // An unknown image without a stated command needs --entrypoint/--cmd.
    let unknown = base.replace("image: postgres:16", "image: ghcr.io/acme/db:2");
    let err = sdl::inject(&unknown, &opts("postgres")).unwrap_err();
    assert!(err.contains("--entrypoint"), "{err}");
    let mut o = opts("postgres");
    o.entrypoint = Some(vec!["/entry".into()]);
    o.cmd = Some(vec!["serve".into()]);
    assert!(sdl::inject(&unknown, &o).is_ok());
    // Refusals, each one clear line through the CLI.
    let t = tempfile::tempdir().unwrap();
    let cases = [
        ("postgres", base.as_str(), "no service \"web\""),
        ("postgres", "version: [unclosed", "not valid YAML"),
        (
            "postgres",
            &base
                .replace("persistent: true", "persistent: false")
                .replace("              class: beta3\n", ""),
            "no persistent volume",
        ),
    ];
    for (i, (_, text, want)) in cases.iter().enumerate() {
        let f = t.path().join(format!("c{i}.yaml"));
        std::fs::write(&f, text).unwrap();
        let service = if want.contains("web") {
            "web"
        } else {
            "postgres"
        };
        let r = bin()
            .args(["sdl", "inject"])
            .arg(&f)
            .args(["--service", service])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{want}");
        assert!(err.contains(want), "{want}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // Already wrapped.
    let wrapped = std::fs::read_to_string(snippets().join("postgres-lifeboat.yaml")).unwrap();
    assert!(
        sdl::inject(&wrapped, &opts("postgres"))
            .unwrap_err()
            .contains("already")
    );
}

#[test]
fn bootstrap_verifies_the_download_and_fails_closed() {
    let t = tempfile::tempdir().unwrap();
    // A stand-in "release": a script that prints its arguments.
    let rel = t.path().join("lifeboat-release");
    std::fs::write(&rel, "#!/bin/sh\necho \"wrapper got: $*\"\n").unwrap();
    let sum = sha256_of(&rel);
    let base = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();
    let run = |sha: &str| {
        let mut o = opts("postgres");
        o.mode = Mode::Bootstrap;
        o.release_url = Some(format!("file://{}", rel.display()));
        o.sha256 = Some(sha.into());
        let out = sdl::inject(&base, &o).unwrap();
        assert!(out.dockerfile.is_none());
        let v = rules::parse(&out.sdl, "o").unwrap();
        let svc = rules::get(rules::get(&v, "services").unwrap(), "postgres").unwrap();
        let words = |k| -> Vec<String> {
            rules::get(svc, k)
                .unwrap()
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(rules::str_of)
                .collect()
        };
        let mut argv = words("command");
        argv.extend(words("args"));
        // Where curl is missing, a PATH with only what the script needs plus a curl stand-in.
        Command::new(&argv[0])
            .args(&argv[1..])
            .env("TMPDIR", t.path())
            .output()
            .unwrap()
    };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed: bootstrap test skipped");
        return;
    }
    let ok = run(&sum);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "wrapper got: run -- docker-entrypoint.sh postgres"
    );
    let bad = run(&"0".repeat(64));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("checksum mismatch"));
    assert!(bad.stdout.is_empty(), "the unverified binary ran");
}

fn sha256_of(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
