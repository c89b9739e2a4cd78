//! The container files stay true to the build: every file `container/Dockerfile` copies exists,
//! its build step is `container/build-static.sh`, the binary it copies out is the one that
//! script produces (as container/README.md documents), and the compose and Kubernetes examples
//! parse and call lifeboat commands that exist; the Kubernetes ones also pass the Kubernetes
//! API's types (tests/sdl-validator/k8s.mjs), which catch a misspelled or mistyped field.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn dockerfile_copies_what_exists_and_runs_the_documented_static_build() {
    let df = read("container/Dockerfile");
    let script = read("container/build-static.sh");
    let readme = read("container/README.md");
    let mut copies = 0;
    for line in df.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copies += 1;
        }
    }
    assert!(copies >= 3);
    assert!(
        df.contains("RUN ./container/build-static.sh"),
        "the Dockerfile must build with container/build-static.sh"
    );
    // The script's command is the one the README documents, word for word.
    let flags = "RUSTFLAGS=\"-C target-feature=+crt-static\"";
    let cmd = "cargo build --release --locked --target x86_64-unknown-linux-gnu --bin lifeboat";
    assert!(script.contains(flags) && script.contains(cmd), "{script}");
    assert!(
        readme.contains(&format!("{flags} {cmd}")),
        "README does not document the build"
    );
    // The binary that build puts out is what container/stage-rootfs.sh stages, and the staged
    // root filesystem is all the final image holds.
    let out = "target/x86_64-unknown-linux-gnu/release/lifeboat";
    assert!(
        df.contains(&format!("./container/stage-rootfs.sh {out} /rootfs")),
        "{df}"
    );
    assert!(df.contains("ENTRYPOINT [\"/usr/local/bin/lifeboat\"]"));
    assert!(df.contains("FROM scratch") && df.contains("USER 65532"));
    // The image the test suite builds without a registry (container/Containerfile) is the
    // published one's final stage line for line, but for where the staged directory comes from.
    let cf = read("container/Containerfile");
    let final_stage = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| *l != "FROM scratch")
            .map(|l| {
                l.replace("COPY --from=build ", "COPY ")
                    .replace(" /rootfs/", " rootfs/")
            })
            .collect()
    };
    assert!(final_stage(&df).len() > 5);
    assert_eq!(
        final_stage(&df),
        final_stage(&cf),
        "container/Dockerfile's final stage and container/Containerfile differ"
    );
    assert!(df.contains("org.opencontainers.image.source"));
    // The Rust image is the toolchain this project builds with.
    let rustc = Command::new("rustc").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&rustc.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_string();
    assert!(
        df.contains(&format!("FROM rust:{minor}-")),
        "Dockerfile's rust image is not {minor}"
    );
    // If this machine built the static binary, it really is static.
    let built = root().join(out);
    if built.exists() {
        let ldd = Command::new("ldd").arg(&built).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&ldd.stdout),
            String::from_utf8_lossy(&ldd.stderr)
        );
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "{text}"
        );
    }
}

fn lifeboat_has(sub: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(sub)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lifeboat {sub:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_and_kubernetes_examples_parse_and_use_real_commands() {
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("container/docker-compose.yaml")).unwrap();
    let services = compose.get("services").unwrap();
    let restore: Vec<String> =
        serde_yaml_ng::from_value(services["restore"]["command"].clone()).unwrap();
    assert_eq!(&restore[..3], ["restore", "latest", "--if-empty"]);
    assert_eq!(services["lifeboat"]["command"][0], "daemon");
    assert_eq!(
        services["app"]["depends_on"]["restore"]["condition"],
        "service_completed_successfully"
    );
    // The app stops before the sidecar; the restore and the sidecar share one settings block.
    assert_eq!(
        services["app"]["depends_on"]["lifeboat"]["condition"],
        "service_started"
    );
    assert_eq!(
        services["restore"]["environment"],
        services["lifeboat"]["environment"]
    );
    assert_eq!(
        services["lifeboat"]["environment"]["LIFEBOAT_SQLITE"],
        "/data/db.sqlite3"
    );
    // Kubernetes, SQLite app: restore init container, then a native sidecar running the daemon,
    // both reading one settings list (an anchor), which names the database.
    let vw: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("container/k8s/vaultwarden.yaml")).unwrap();
    let spec = &vw["spec"]["template"]["spec"];
    let inits = spec["initContainers"].as_sequence().unwrap();
    assert_eq!(inits.len(), 2);
    let (restore, sidecar) = (&inits[0], &inits[1]);
    let args: Vec<String> = serde_yaml_ng::from_value(restore["args"].clone()).unwrap();
    assert_eq!(&args[..3], ["restore", "latest", "--if-empty"]);
    assert!(restore.get("restartPolicy").is_none());
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(sidecar["args"][0], "daemon");
    assert_eq!(restore["env"], sidecar["env"]);
    let env = |c: &serde_yaml_ng::Value, k: &str| {
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == k)
            .map(|e| e["value"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(env(sidecar, "LIFEBOAT_PATH").as_deref(), Some("/data"));
    assert_eq!(
        env(sidecar, "LIFEBOAT_SQLITE").as_deref(),
        Some("/data/db.sqlite3")
    );
    // Kubernetes, PostgreSQL: one container, lifeboat as the image's entrypoint (the image
    // `sdl inject --mode image` makes), the postgres method.
    let pg: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("container/k8s/postgres.yaml")).unwrap();
    let spec = &pg["spec"]["template"]["spec"];
    assert!(spec.get("initContainers").is_none());
    let containers = spec["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        env(&containers[0], "LIFEBOAT_METHOD").as_deref(),
        Some("postgres")
    );
    assert!(
        containers[0]["image"]
            .as_str()
            .unwrap()
            .ends_with("/postgres-lifeboat:16")
    );
    lifeboat_has(&["restore"]);
    lifeboat_has(&["daemon"]);
    lifeboat_has(&["sdl", "inject"]);
}

/// `node tests/sdl-validator/k8s.mjs FILE…`: (passed, output).
fn k8s_check(files: &[&Path]) -> (bool, String) {
    let out = Command::new("node")
        .arg(root().join("tests/sdl-validator/k8s.mjs"))
        .args(files)
        .output()
        .expect("node (tests/sdl-validator/install.sh checks it is installed)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn kubernetes_examples_pass_the_apis_types_and_a_mistake_does_not() {
    let install = Command::new("bash")
        .arg(root().join("tests/sdl-validator/install.sh"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "tests/sdl-validator/install.sh: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let examples = [
        "container/k8s/vaultwarden.yaml",
        "container/k8s/postgres.yaml",
    ];
    for e in examples {
        let (ok, out) = k8s_check(&[&root().join(e)]);
        assert!(ok && out.contains(": ok StatefulSet"), "{e}: {out}");
    }
    // Each mistake, made once in a copy, is named.
    let tmp = tempfile::tempdir().unwrap();
    let mistakes = [
        (
            examples[0],
            "\n          restartPolicy: Always",
            "\n          restartpolicy: Always",
            "unknown field",
        ),
        (
            examples[1],
            "containerPort: 5432",
            "containerPort: \"5432\"",
            "not a number",
        ),
        (
            examples[0],
            "volumeMounts: [{name: data, mountPath: /data}]",
            "volumeMounts: [{name: data}]",
            "required property mountPath",
        ),
        (
            examples[1],
            "serviceName: postgres",
            "serviceName: [postgres]",
            "not a string",
        ),
    ];
    for (i, (file, from, to, said)) in mistakes.iter().enumerate() {
        let text = read(file);
        assert!(text.contains(from), "{file} lacks {from:?}");
        let bad = tmp.path().join(format!("{i}.yaml"));
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = k8s_check(&[&bad]);
        assert!(!ok && out.contains(said), "{file} with {to:?}: {out}");
    }
}
