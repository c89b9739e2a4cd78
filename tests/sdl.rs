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
        let report = sdl::check(&text);
        assert!(report.errors.is_empty(), "{}: {report:?}", p.display());
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

/// Applies `edit` to the plain postgres snippet and returns the checker's report.
fn problems_after(edit: impl FnOnce(&mut serde_yaml_ng::Value)) -> sdl::Report {
    let text = std::fs::read_to_string(snippets().join("postgres-lifeboat.yaml")).unwrap();
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    edit(&mut v);
    sdl::check(&serde_yaml_ng::to_string(&v).unwrap())
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
    // (what the message says, an error (Akash or lifeboat refuses) or a warning, the edit)
    let cases: Vec<(&str, bool, Edit)> = vec![
        (
            "version",
            true,
            Box::new(|v| *at(v, &["version"]) = Value::String("3.0".into())),
        ),
        (
            "missing required key \"image\"",
            true,
            Box::new(|v| {
                at(v, &["services", "postgres"])
                    .as_mapping_mut()
                    .unwrap()
                    .remove("image");
            }),
        ),
        (
            "is not NAME=VALUE",
            false,
            Box::new(|v| {
                at(v, &["services", "postgres", "env"])
                    .as_sequence_mut()
                    .unwrap()
                    .push(Value::String("JUST_A_KEY".into()))
            }),
        ),
        (
            "needs a mount path",
            true,
            Box::new(|v| {
                at(v, &["services", "postgres", "params", "storage"])
                    .as_mapping_mut()
                    .unwrap()
                    .remove("pgdata");
            }),
        ),
        (
            "a class without persistent: true",
            false,
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
            "can never be persistent",
            true,
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
            "must be an absolute path",
            true,
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
            "providers give a service one",
            false,
            Box::new(move |v| {
                let s = at(v, &storage).as_sequence_mut().unwrap();
                let mut extra = s[1].clone();
                *at(&mut extra, &["name"]) = Value::String("wal".into());
                s.push(extra);
            }),
        ),
        (
            "is already used by volume",
            true,
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
            true,
            Box::new(|v| {
                at(v, &["services", "postgres", "env"])
                    .as_sequence_mut()
                    .unwrap()
                    .push(Value::String("LIFEBOAT_LISTEN=0.0.0.0:5432".into()))
            }),
        ),
        (
            "is not in profiles.compute",
            true,
            Box::new(|v| {
                *at(v, &["deployment", "postgres", "akash", "profile"]) =
                    Value::String("nope".into())
            }),
        ),
    ];
    for (want, error, edit) in cases {
        let r = problems_after(edit);
        let list = if error { &r.errors } else { &r.warnings };
        assert!(
            list.iter().any(|e| e.contains(want)),
            "expected {} mentioning {want:?}, got {r:?}",
            if error { "an error" } else { "a warning" }
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

/// The `args` of service `svc` in SDL text.
fn args_of(text: &str, svc: &str) -> Vec<String> {
    let v = rules::parse(text, "o").unwrap();
    let s = rules::get(rules::get(&v, "services").unwrap(), svc).unwrap();
    rules::get(s, "args")
        .and_then(|a| a.as_sequence())
        .map(|a| a.iter().filter_map(rules::str_of).collect())
        .unwrap_or_default()
}

fn env_of(text: &str, svc: &str) -> Vec<String> {
    let v = rules::parse(text, "o").unwrap();
    let s = rules::get(rules::get(&v, "services").unwrap(), svc).unwrap();
    rules::get(s, "env")
        .and_then(|a| a.as_sequence())
        .map(|a| a.iter().filter_map(rules::str_of).collect())
        .unwrap_or_default()
}

/// Issue 19's `sdl inject` defects, one by one.
#[test]
fn inject_defects_seen_on_real_files_are_fixed() {
    let base = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();

    // Comments inside the wrapped service are kept.
    let commented = base.replace(
        "    image: postgres:16\n",
        "    image: postgres:16\n    # tuned for the small profile\n",
    );
    let out = sdl::inject(&commented, &opts("postgres")).unwrap();
    assert!(
        out.sdl.contains("# tuned for the small profile"),
        "{}",
        out.sdl
    );

    // A digest-pinned image: a valid image name and tag, and the digest kept in FROM.
    let digest = "vllm/vllm-openai:v0.6.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let pinned = base.replace("image: postgres:16", &format!("image: {digest}"));
    let mut o = opts("postgres");
    o.entrypoint = Some(vec!["python3".into()]);
    o.cmd = Some(vec!["-m".into(), "vllm".into()]);
    let out = sdl::inject(&pinned, &o).unwrap();
    assert!(
        out.sdl
            .contains("image: <your registry>/vllm-openai-lifeboat:v0.6.2\n"),
        "{}",
        out.sdl
    );
    assert!(
        out.dockerfile
            .unwrap()
            .contains(&format!("FROM {digest}\n"))
    );

    // "No ENTRYPOINT": --no-entrypoint (Some(empty)) and --entrypoint '' both mean none.
    let unknown = base.replace("image: postgres:16", "image: ghcr.io/acme/db:2");
    for ep in [vec![], vec![String::new()]] {
        let mut o = opts("postgres");
        o.entrypoint = Some(ep);
        o.cmd = Some(vec!["/bin/db".into(), "serve".into()]);
        let out = sdl::inject(&unknown, &o).unwrap();
        assert_eq!(args_of(&out.sdl, "postgres"), ["/bin/db", "serve"]);
    }

    // Redis: SAVE's reply is checked, and --requirepass is used to authenticate.
    let plain_redis = base.replace("image: postgres:16", "image: redis:7");
    let hook = |text: &str| {
        env_of(text, "postgres")
            .into_iter()
            .find(|e| e.starts_with("LIFEBOAT_PRE_BACKUP="))
            .unwrap()
    };
    let out = sdl::inject(&plain_redis, &opts("postgres")).unwrap();
    assert!(
        hook(&out.sdl).contains("redis-cli SAVE | grep -qx OK"),
        "{}",
        hook(&out.sdl)
    );
    let with_pass = plain_redis.replace(
        "image: redis:7",
        "image: redis:7\n    args: [redis-server, --requirepass, s3cret]",
    );
    let out = sdl::inject(&with_pass, &opts("postgres")).unwrap();
    assert!(
        hook(&out.sdl).contains("REDISCLI_AUTH='s3cret' redis-cli SAVE"),
        "{}",
        hook(&out.sdl)
    );

    // MariaDB 10.3-10.5 run mysqld, later ones mariadbd.
    for (tag, server) in [
        ("10.5", "mysqld"),
        ("10.3.39", "mysqld"),
        ("10.6", "mariadbd"),
        ("11.4", "mariadbd"),
    ] {
        let m = base.replace("image: postgres:16", &format!("image: mariadb:{tag}"));
        let out = sdl::inject(&m, &opts("postgres")).unwrap();
        assert_eq!(
            args_of(&out.sdl, "postgres"),
            ["docker-entrypoint.sh", server],
            "mariadb:{tag}"
        );
    }

    // Bootstrap: a non-hex --sha256 is refused, the URL is one quoted shell word, the other
    // mode's flags are refused, placeholders are reported.
    let mut b = opts("postgres");
    b.mode = Mode::Bootstrap;
    b.sha256 = Some("not-a-hash".into());
    assert!(
        sdl::inject(&base, &b)
            .unwrap_err()
            .contains("64 hex digits")
    );
    b.sha256 = Some("a".repeat(64));
    b.release_url = Some("https://example.com/x$(reboot)'y".into());
    let out = sdl::inject(&base, &b).unwrap();
    assert!(
        out.sdl
            .contains(r"url='https://example.com/x$(reboot)'\''y'"),
        "{}",
        out.sdl
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("<repository password>")),
        "{:?}",
        out.warnings
    );
    let mut both = b.clone();
    both.image = Some("ghcr.io/me/x:1".into());
    assert!(
        sdl::inject(&base, &both)
            .unwrap_err()
            .contains("--mode image")
    );
    let mut img = opts("postgres");
    img.sha256 = Some("a".repeat(64));
    assert!(
        sdl::inject(&base, &img)
            .unwrap_err()
            .contains("--mode bootstrap")
    );

    // An existing AWS_ACCESS_KEY_ID gets no placeholder secret beside it, and a warning.
    let keyed = base.replace(
        "    env:\n",
        "    env:\n      - AWS_ACCESS_KEY_ID=AKIAEXAMPLE\n",
    );
    assert_ne!(keyed, base, "the snippet has an env list");
    let out = sdl::inject(&keyed, &opts("postgres")).unwrap();
    let env = env_of(&out.sdl, "postgres");
    assert!(
        !env.iter().any(|e| e.starts_with("AWS_SECRET_ACCESS_KEY")),
        "{env:?}"
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("AWS_SECRET_ACCESS_KEY")),
        "{:?}",
        out.warnings
    );

    // A string "on" stays a string for YAML 1.1 readers.
    let on = base.replace(
        "image: postgres:16",
        "image: postgres:16\n    args: [postgres, -c, \"on\"]",
    );
    let out = sdl::inject(&on, &opts("postgres")).unwrap();
    assert!(out.sdl.contains("- 'on'"), "{}", out.sdl);

    // CRLF in, CRLF out (no mixed line endings).
    let out = sdl::inject(&base.replace('\n', "\r\n"), &opts("postgres")).unwrap();
    assert!(
        !out.sdl.replace("\r\n", "").contains('\n'),
        "mixed line endings"
    );

    // What the provider can read is said.
    assert!(
        out.warnings.iter().any(|w| w.contains("provider")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn sdl_check_and_inject_speak_json_and_warn_about_what_akash_accepts_but_will_not_work() {
    let t = tempfile::tempdir().unwrap();
    // Unparsable YAML still gives one JSON object.
    let bad = t.path().join("bad.yaml");
    std::fs::write(&bad, "services: [\n").unwrap();
    let r = bin()
        .args(["--json", "sdl", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["passes"], false);
    assert!(j["errors"][0].as_str().unwrap().contains("YAML"), "{j}");
    // count > 1 with a persistent volume, a read-only and a `/` mount: warnings, not errors.
    let base = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();
    let odd = base
        .replace("count: 1", "count: 2")
        .replace("mount: /var/lib/postgresql/data", "mount: /")
        .replace("readOnly: false", "readOnly: true");
    let f = t.path().join("odd.yaml");
    std::fs::write(&f, &odd).unwrap();
    let r = bin()
        .args(["--json", "sdl", "check"])
        .arg(&f)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["passes"], true, "{j}");
    let w = j["warnings"].to_string();
    assert!(
        w.contains("count 2") && w.contains("read-only") && w.contains("mount /"),
        "{w}"
    );
    // inject --json: the variables added and the warnings.
    let r = bin()
        .args(["--json", "sdl", "inject"])
        .arg(snippets().join("postgres.yaml"))
        .args(["--service", "postgres"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["service"], "postgres");
    assert!(
        j["variables_added"]
            .to_string()
            .contains("LIFEBOAT_PASSWORD"),
        "{j}"
    );
    assert!(j["warnings"].to_string().contains("provider"), "{j}");
    assert!(j["sdl"].as_str().unwrap().contains("lifeboat"), "{j}");
}

/// Presets for the stateful images most deployed on Akash, each with the capture that suits it.
#[test]
fn presets_cover_the_common_stateful_images_with_their_capture() {
    let base = std::fs::read_to_string(snippets().join("postgres.yaml")).unwrap();
    for (image, args, env) in [
        (
            "mongo:7",
            vec!["docker-entrypoint.sh", "mongod"],
            "LIFEBOAT_PAUSE=true",
        ),
        (
            "vaultwarden/server:1.32.0",
            vec!["/start.sh"],
            "LIFEBOAT_METHOD=sqlite",
        ),
        (
            "docker.io/louislam/uptime-kuma:1",
            vec!["/usr/bin/dumb-init", "--", "node", "server/server.js"],
            "LIFEBOAT_METHOD=sqlite",
        ),
        (
            "gogs/gogs:0.13",
            vec![
                "/app/gogs/docker/start.sh",
                "/bin/s6-svscan",
                "/app/gogs/docker/s6/",
            ],
            "LIFEBOAT_METHOD=sqlite",
        ),
        (
            "n8nio/n8n",
            vec!["tini", "--", "/docker-entrypoint.sh"],
            "LIFEBOAT_METHOD=sqlite",
        ),
        (
            "minio/minio:latest",
            vec!["/usr/bin/docker-entrypoint.sh", "minio"],
            "LIFEBOAT_PAUSE=true",
        ),
        (
            "library/postgres:16",
            vec!["docker-entrypoint.sh", "postgres"],
            "LIFEBOAT_METHOD=postgres",
        ),
    ] {
        let text = base.replace("image: postgres:16", &format!("image: {image}"));
        let out = sdl::inject(&text, &opts("postgres")).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(args_of(&out.sdl, "postgres"), args, "{image}");
        assert!(
            env_of(&out.sdl, "postgres").iter().any(|e| e == env),
            "{image}"
        );
        assert!(sdl::check(&out.sdl).errors.is_empty(), "{image}");
    }
    // Only Docker Hub's: the same name on another registry has no preset.
    let other = base.replace(
        "image: postgres:16",
        "image: ghcr.io/louislam/uptime-kuma:1",
    );
    assert!(
        sdl::inject(&other, &opts("postgres"))
            .unwrap_err()
            .contains("--entrypoint")
    );
}
