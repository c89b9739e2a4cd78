//! container/k8s/*.yaml run with `podman kube play` (issue 21): the Kubernetes examples as far as
//! this machine can run them.
//!
//! - `vaultwarden.yaml` (SQLite app, lifeboat as a restore init container and a replicating
//!   sidecar): a first start on an empty volume, rows committed continuously, a graceful stop
//!   (the app first, then the sidecar's final backup), a new empty volume restored by the init
//!   container with every row back; then the pod killed (SIGKILL to every container: a node that
//!   vanishes) and a new volume restored to within about a second of the last commit.
//! - `postgres.yaml` (PostgreSQL with lifeboat as the image's entrypoint): rows written, the pod
//!   stopped, a new empty volume restored before PostgreSQL starts, every row back.
//!
//! podman 4.3 runs Pods and Deployments but not StatefulSets, and knows no native sidecars, so
//! each test turns the example's pod template into a Pod, and nothing else is changed but what a
//! machine without a registry or a cluster needs (each in `pod_from`): images built here stand in
//! for the published ones, the volume claim template becomes a named volume, the pod uses the
//! host's network (the S3 server is SeaweedFS on 127.0.0.1), ports go to free ones, and the
//! native sidecar (an init container with `restartPolicy: Always`) runs as an ordinary container,
//! stopped after the app as Kubernetes stops a native sidecar. Secrets are podman secrets holding
//! the Secret's `data` map. The lease's TTL is shortened to 5 s so that the pod started after the
//! kill takes the dead pod's lease over in seconds (the default is 60 s).

mod common;
mod podman;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_yaml_ng::{Mapping, Value};

use podman::{Cleanup, PG_CHECK as CHECK, podman, podman_ok, psql, unique};

const REPO_PASSWORD: &str = "kubernetes e2e repository password";

/// The tests here run one at a time: the kill test's recovery-point bound (commits 2.5 s before
/// the kill are back) should measure lifeboat, not two PostgreSQL loads on the same 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn s3_repo(bucket: &str, prefix: &str) -> String {
    format!(
        "s3:http://{}/{bucket}/{prefix}",
        common::seaweed::server().s3
    )
}

/// A podman secret named `name` holding `data` as a Kubernetes Secret's `data` map (base64
/// values), which is what `secretKeyRef` reads under podman 4.3.
fn secret(clean: &mut Cleanup, name: &str, data: &[(&str, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                base64::engine::general_purpose::STANDARD.encode(v).into(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret.json");
    std::fs::write(&file, serde_json::to_string(&map).unwrap()).unwrap();
    let _ = podman(&["secret", "rm", name]);
    podman_ok(&["secret", "create", name, file.to_str().unwrap()]);
    clean.secrets.push(name.to_string());
}

/// The examples' `lifeboat` Secret (repository password, S3 keys) for the test S3 server.
fn lifeboat_secret(clean: &mut Cleanup, name: &str) {
    secret(
        clean,
        name,
        &[
            ("password", REPO_PASSWORD),
            ("aws-access-key-id", common::seaweed::ACCESS_KEY),
            ("aws-secret-access-key", common::seaweed::SECRET_KEY),
        ],
    );
}

/// What a test changes in an example besides the pod-level adaptations.
struct Adapt<'a> {
    /// The Pod's name (containers are named POD-CONTAINER).
    pod: String,
    /// The named volume standing in for the claim `data`.
    volume: String,
    /// (published image prefix, local image).
    images: &'a [(&'a str, &'a str)],
    /// (secret name in the example, podman secret).
    secrets: &'a [(&'a str, &'a str)],
    /// Env values replaced, in every container that sets them.
    set: &'a [(&'a str, String)],
    /// Env added to every container that has LIFEBOAT_REPOSITORY.
    add: &'a [(&'a str, String)],
    /// The port that the example's 9090 (lifeboat's HTTP) becomes.
    http_port: u16,
}

/// The StatefulSet in `file` as a Pod podman 4.3 runs, written to `dir`; returns its path.
fn pod_from(file: &str, dir: &Path, a: &Adapt) -> std::path::PathBuf {
    let set: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(podman::root().join(file)).unwrap())
            .unwrap();
    assert_eq!(set["kind"], "StatefulSet", "{file}");
    assert_eq!(set["spec"]["replicas"], 1, "{file}: one writer");
    let claims = set["spec"]["volumeClaimTemplates"].as_sequence().unwrap();
    assert_eq!(claims.len(), 1);
    let claim = claims[0]["metadata"]["name"].as_str().unwrap().to_string();
    let mut spec = set["spec"]["template"]["spec"].clone();

    // A native sidecar runs as an ordinary container here.
    let mut inits = Vec::new();
    let mut sidecars = Vec::new();
    if let Some(seq) = spec.get("initContainers").and_then(Value::as_sequence) {
        for c in seq {
            if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
                let mut c = c.clone();
                let m = c.as_mapping_mut().unwrap();
                m.remove("restartPolicy");
                // podman 4.3 would run a startup probe as a health check that restarts nothing;
                // the test waits for the sidecar's log instead.
                m.remove("startupProbe");
                sidecars.push(Value::Mapping(m.clone()));
            } else {
                inits.push(c.clone());
            }
        }
    }
    let mut containers: Vec<Value> = spec["containers"].as_sequence().unwrap().clone();
    containers.extend(sidecars);
    let m = spec.as_mapping_mut().unwrap();
    if inits.is_empty() {
        m.remove("initContainers");
    } else {
        m.insert("initContainers".into(), Value::Sequence(inits));
    }
    m.insert("containers".into(), Value::Sequence(containers));
    m.insert("hostNetwork".into(), true.into());
    m.insert("restartPolicy".into(), "Never".into());
    let mut pvc = Mapping::new();
    pvc.insert("claimName".into(), a.volume.as_str().into());
    let mut vol = Mapping::new();
    vol.insert("name".into(), claim.into());
    vol.insert("persistentVolumeClaim".into(), Value::Mapping(pvc));
    m.insert("volumes".into(), Value::Sequence(vec![Value::Mapping(vol)]));

    for key in ["initContainers", "containers"] {
        let Some(seq) = spec.get_mut(key).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for c in seq {
            adapt_container(c, a);
        }
    }
    let mut meta = Mapping::new();
    meta.insert("name".into(), a.pod.as_str().into());
    meta.insert(
        "labels".into(),
        set["spec"]["template"]["metadata"]["labels"].clone(),
    );
    let mut pod = Mapping::new();
    pod.insert("apiVersion".into(), "v1".into());
    pod.insert("kind".into(), "Pod".into());
    pod.insert("metadata".into(), Value::Mapping(meta));
    pod.insert("spec".into(), spec);
    let out = dir.join(format!("{}.yaml", a.pod));
    std::fs::write(
        &out,
        serde_yaml_ng::to_string(&Value::Mapping(pod)).unwrap(),
    )
    .unwrap();
    out
}

fn adapt_container(c: &mut Value, a: &Adapt) {
    let m = c.as_mapping_mut().unwrap();
    let image = m["image"].as_str().unwrap().to_string();
    let local = a
        .images
        .iter()
        .find(|(published, _)| image.starts_with(published))
        .unwrap_or_else(|| panic!("no local image for {image}"))
        .1;
    m.insert("image".into(), local.into());
    // hostNetwork: podman refuses container ports.
    m.remove("ports");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe)
            && let Some(h) = p.get_mut("httpGet")
        {
            assert_eq!(h["port"], 9090, "{probe} of {image}");
            h.as_mapping_mut()
                .unwrap()
                .insert("port".into(), a.http_port.into());
        }
    }
    let Some(env) = m.get_mut("env").and_then(Value::as_sequence_mut) else {
        return;
    };
    let lifeboat = env.iter().any(|e| e["name"] == "LIFEBOAT_REPOSITORY");
    for e in env.iter_mut() {
        let name = e["name"].as_str().unwrap().to_string();
        if let Some((_, v)) = a.set.iter().find(|(k, _)| *k == name) {
            e.as_mapping_mut()
                .unwrap()
                .insert("value".into(), v.as_str().into());
        }
        if let Some(r) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("secretKeyRef"))
        {
            let from = r["name"].as_str().unwrap().to_string();
            let to = a
                .secrets
                .iter()
                .find(|(s, _)| *s == from)
                .unwrap_or_else(|| panic!("no secret stands in for {from}"))
                .1;
            r.as_mapping_mut().unwrap().insert("name".into(), to.into());
        }
    }
    if lifeboat {
        for (k, v) in a.add {
            let mut e = Mapping::new();
            e.insert("name".into(), (*k).into());
            e.insert("value".into(), v.as_str().into());
            env.push(Value::Mapping(e));
        }
    }
}

fn state(container: &str) -> (String, i32) {
    let s = podman_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        container,
    ]);
    let (status, code) = s.trim().split_once(' ').unwrap();
    (status.to_string(), code.parse().unwrap())
}

/// Waits until `f` gives Some, failing with the pod's logs after `limit`.
fn wait_for<T>(what: &str, pod: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t.elapsed() > limit {
            let logs = podman_ok(&["ps", "-a", "--pod", "--filter", &format!("pod={pod}")]);
            let mut all = logs;
            for c in podman_ok(&[
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                &format!("pod={pod}"),
            ])
            .lines()
            {
                all += &format!("--- {c}:\n{}\n", podman::logs(c));
            }
            panic!("{what}: not within {limit:?}\n{all}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The restore gate's marker (written when it restored a snapshot onto the volume).
fn restored_marker(volume: &str) -> bool {
    podman::volume_dir(volume)
        .join(".lifeboat/restored")
        .is_file()
}

/// `sqlite3 DB SQL` inside the app container.
fn sqlite(container: &str, sql: &str) -> Option<String> {
    let out = podman(&["exec", container, "sqlite3", "/data/db.sqlite3", sql]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The highest row committed on a stopped pod's volume, read on the host.
fn committed_on(volume: &str) -> i64 {
    let db = podman::volume_dir(volume).join("db.sqlite3");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.query_row("SELECT max(id) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Seconds between the commits of rows `a` and `b` on a stopped pod's volume.
fn seconds_between(volume: &str, a: i64, b: i64) -> f64 {
    let db = podman::volume_dir(volume).join("db.sqlite3");
    let c = rusqlite::Connection::open(&db).unwrap();
    let at = |id: i64| -> chrono::NaiveDateTime {
        let s: String = c
            .query_row("SELECT at FROM t WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f").unwrap()
    };
    (at(b) - at(a)).as_seconds_f64()
}

/// One start of the Vaultwarden pod on `volume`: waits for the init container's restore, the
/// sidecar's replication and the app's first rows; returns the row number the app found
/// restored.
fn start_vaultwarden(work: &Path, a: &Adapt, pods: &mut Vec<String>) -> i64 {
    let yaml = pod_from("container/k8s/vaultwarden.yaml", work, a);
    let _ = podman(&["volume", "create", &a.volume]);
    pods.push(a.pod.clone());
    podman_ok(&["kube", "play", yaml.to_str().unwrap()]);
    // podman removes an init container once it has run (its logs with it), and starts the
    // pod's other containers only after it exited 0: the app's start is the restore's success.
    let (app, sidecar) = (
        format!("{}-vaultwarden", a.pod),
        format!("{}-lifeboat", a.pod),
    );
    wait_for(
        "the sidecar replicating",
        &a.pod,
        Duration::from_secs(60),
        || {
            podman::logs(&sidecar)
                .contains("SQLite replication generation begins")
                .then_some(())
        },
    );
    let restored: i64 = wait_for("the app's start", &a.pod, Duration::from_secs(30), || {
        sqlite(
            &app,
            "SELECT restored FROM starts ORDER BY rowid DESC LIMIT 1",
        )
        .and_then(|s| s.parse().ok())
    });
    // Every row up to the restored one is there, and the database is whole.
    assert_eq!(
        sqlite(
            &app,
            &format!("SELECT count(*) FROM t WHERE id <= {restored}")
        )
        .unwrap(),
        restored.to_string(),
        "gaps below the restored row {restored}"
    );
    assert_eq!(
        sqlite(&app, "PRAGMA integrity_check").unwrap(),
        "ok",
        "restored database"
    );
    restored
}

fn max_row(app: &str) -> i64 {
    sqlite(app, "SELECT coalesce(max(id), 0) FROM t")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kubernetes_sqlite_sidecar_restores_in_its_init_container_and_loses_at_most_a_second() {
    let _serial = one_at_a_time();
    podman::install();
    let mut clean = Cleanup::default();
    let work = tempfile::tempdir().unwrap();
    let (lifeboat, app_image) = {
        let app = std::thread::spawn(podman::sqlite_app_image);
        (podman::lifeboat_image(), app.join().unwrap())
    };
    let lb_secret = unique("vw-lifeboat-secret");
    lifeboat_secret(&mut clean, &lb_secret);
    let repo = s3_repo(&unique("k8s"), "vaultwarden");
    let http_port = common::free_port();
    let images = [
        ("ghcr.io/lifeboat-backup/lifeboat:", lifeboat),
        ("vaultwarden/server:", app_image),
    ];
    let secrets = [("lifeboat", lb_secret.as_str())];
    let set = [
        ("LIFEBOAT_REPOSITORY", repo.clone()),
        ("LIFEBOAT_LISTEN", format!("127.0.0.1:{http_port}")),
    ];
    // A short lease for the takeover after a kill; and lifeboat's own checkpoints (under
    // SQLite's write lock, across containers) every 100 frames, about every 2 s here, so that
    // the app is seen to commit through them without a gap.
    let add = [
        ("LIFEBOAT_LEASE_TTL", "5s".to_string()),
        ("LIFEBOAT_SQLITE_CHECKPOINT_PAGES", "100".to_string()),
    ];
    let pod = unique("vw");
    let kills: usize = std::env::var("LIFEBOAT_K8S_KILLS")
        .ok()
        .map(|v| v.parse().expect("LIFEBOAT_K8S_KILLS: a number"))
        .unwrap_or(1);
    let seed: u64 = std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .map(|v| v.parse().expect("LIFEBOAT_DRILL_SEED: a number"))
        .unwrap_or(21);
    let volumes: Vec<String> = (0..kills + 2)
        .map(|i| unique(&format!("vw-data{i}")))
        .collect();
    for v in &volumes {
        clean.volume(v);
    }
    let adapt = |volume: &String| Adapt {
        pod: pod.clone(),
        volume: volume.clone(),
        images: &images,
        secrets: &secrets,
        set: &set,
        add: &add,
        http_port,
    };
    let app = format!("{pod}-vaultwarden");
    let sidecar = format!("{pod}-lifeboat");

    // 1. First start on an empty volume: the init container finds no snapshot, the app starts
    // from nothing, the sidecar replicates.
    let first = start_vaultwarden(work.path(), &adapt(&volumes[0]), &mut clean.pods);
    assert_eq!(first, 0, "a new deployment restored something");
    assert!(
        !restored_marker(&volumes[0]),
        "a restore marker on a first deployment"
    );
    wait_for("500 rows", &pod, Duration::from_secs(60), || {
        (max_row(&app) >= 500).then_some(())
    });

    // 2. Graceful stop, in Kubernetes' order for a native sidecar: the app, then the sidecar
    // (its final backup).
    let t = Instant::now();
    podman_ok(&["stop", "-t", "30", &app]);
    podman_ok(&["stop", "-t", "60", &sidecar]);
    let stop_seconds = t.elapsed().as_secs_f64();
    let side_log = podman::logs(&sidecar);
    for want in [
        "sqlite checkpoint done",
        "final backup done",
        "volume lease released",
    ] {
        assert!(
            side_log.contains(want),
            "sidecar log lacks {want:?}:\n{side_log}"
        );
    }
    assert_eq!(state(&app).1, 0, "app: {}", podman::logs(&app));
    podman_ok(&["pod", "rm", "-f", &pod]);
    let written = committed_on(&volumes[0]);

    // 3. A new empty volume: the init container restores, and every row is back.
    let t = Instant::now();
    let back = start_vaultwarden(work.path(), &adapt(&volumes[1]), &mut clean.pods);
    let restore_seconds = t.elapsed().as_secs_f64();
    assert_eq!(back, written, "rows after a graceful stop and a new volume");
    assert!(
        restored_marker(&volumes[1]),
        "no restore marker on the new volume"
    );

    // 4. The node vanishes: SIGKILL to every container, no final backup; a new pod on a new
    // volume. The rows committed a second (the sync interval) and more before the kill must
    // come back. Repeated LIFEBOAT_K8S_KILLS times (1 in the short tier), each kill at a seeded
    // moment, each restore starting from the previous one's volume history.
    let mut rng = common::Rng(seed);
    let (mut previous, mut volume) = (back, 1);
    let (mut lost_rows, mut worst) = (0i64, 0f64);
    for kill in 0..kills {
        wait_for(
            "rows past the restore",
            &pod,
            Duration::from_secs(60),
            || (max_row(&app) >= previous + 300).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(rng.range(0, 1000)));
        let seen = max_row(&app);
        std::thread::sleep(Duration::from_millis(2500));
        podman_ok(&["pod", "kill", &pod]);
        let committed = committed_on(&volumes[volume]);
        assert!(committed >= seen, "{committed} < {seen}");
        podman_ok(&["pod", "rm", "-f", &pod]);
        volume += 1;
        let after_kill = start_vaultwarden(work.path(), &adapt(&volumes[volume]), &mut clean.pods);
        assert!(
            after_kill >= seen && after_kill <= committed,
            "kill {kill} (seed {seed}): restored up to row {after_kill}; {seen} were committed \
             2.5 s before the kill and {committed} at it"
        );
        assert!(
            restored_marker(&volumes[volume]),
            "no restore marker on the new volume"
        );
        let lost_seconds = seconds_between(&volumes[volume - 1], after_kill, committed);
        assert!(
            lost_seconds <= 2.5,
            "kill {kill} (seed {seed}): {lost_seconds:.2}s of commits lost (sync interval 1 s)"
        );
        eprintln!(
            "kill {kill}: committed {committed}, restored {after_kill}, lost {} rows = {lost_seconds:.2}s",
            committed - after_kill
        );
        lost_rows += committed - after_kill;
        worst = worst.max(lost_seconds);
        previous = after_kill;
    }
    podman_ok(&["pod", "stop", "-t", "30", &pod]);
    eprintln!(
        "CONTAINER-K8S-SQLITE rows_written={written} rows_back={back} stop_seconds={stop_seconds:.1} \
         restore_to_app_seconds={restore_seconds:.1} kills={kills} seed={seed} \
         lost_rows_total={lost_rows} worst_lost_seconds_of_commits={worst:.2}"
    );
}

#[test]
fn kubernetes_postgres_statefulset_restores_a_new_volume_before_postgres_starts() {
    let _serial = one_at_a_time();
    podman::install();
    let mut clean = Cleanup::default();
    let work = tempfile::tempdir().unwrap();
    let (image, _) = podman::postgres_app_image(work.path());
    let (lb_secret, pg_secret) = (unique("pg-lifeboat-secret"), unique("pg-postgres-secret"));
    lifeboat_secret(&mut clean, &lb_secret);
    secret(
        &mut clean,
        &pg_secret,
        &[("password", "k8s-e2e-pg-password")],
    );
    let repo = s3_repo(&unique("k8spg"), "postgres");
    let (http_port, pg_port) = (common::free_port(), common::free_port());
    let images = [("<your registry>/postgres-lifeboat:16", image.as_str())];
    let secrets = [
        ("lifeboat", lb_secret.as_str()),
        ("postgres", pg_secret.as_str()),
    ];
    let set = [
        ("LIFEBOAT_REPOSITORY", repo),
        ("LIFEBOAT_LISTEN", format!("127.0.0.1:{http_port}")),
    ];
    // hostNetwork: PostgreSQL on a free port.
    let add = [("PGPORT", pg_port.to_string())];
    let pod = unique("pg");
    let container = format!("{pod}-postgres");
    let volumes: Vec<String> = (1..=2).map(|i| unique(&format!("pg-data{i}"))).collect();
    let mut start = |volume: &String| {
        clean.volume(volume);
        let a = Adapt {
            pod: pod.clone(),
            volume: volume.clone(),
            images: &images,
            secrets: &secrets,
            set: &set,
            add: &add,
            http_port,
        };
        let yaml = pod_from("container/k8s/postgres.yaml", work.path(), &a);
        let _ = podman(&["volume", "create", volume]);
        clean.pods.push(pod.clone());
        podman_ok(&["kube", "play", yaml.to_str().unwrap()]);
    };

    // 1. An empty volume: PostgreSQL initialises it; rows are written.
    start(&volumes[0]);
    wait_for("PostgreSQL", &pod, Duration::from_secs(180), || {
        psql(&container, "select 1")
    });
    psql(
        &container,
        "create table t (id int primary key, v text); \
         insert into t select g, md5(g::text) from generate_series(1, 50000) g",
    )
    .expect("create and fill t");
    let written = psql(&container, CHECK).unwrap();
    assert!(written.starts_with("50000:"), "{written}");

    // 2. The pod stopped (SIGINT, the image's stop signal, to lifeboat as PID 1, within the
    // example's grace period): PostgreSQL's shutdown, the last WAL, the lease released.
    let t = Instant::now();
    podman_ok(&["pod", "stop", "-t", "90", &pod]);
    let stop_seconds = t.elapsed().as_secs_f64();
    let log1 = podman::logs(&container);
    assert_eq!(state(&container).1, 0, "exit code after the stop:\n{log1}");
    for want in ["final backup done", "volume lease released"] {
        assert!(log1.contains(want), "log lacks {want:?}:\n{log1}");
    }
    podman_ok(&["pod", "rm", "-f", &pod]);

    // 3. A new empty volume (a new cluster, a lost disk): restored before PostgreSQL starts.
    let t = Instant::now();
    start(&volumes[1]);
    let back = wait_for("the restored rows", &pod, Duration::from_secs(300), || {
        psql(&container, CHECK)
    });
    let restore_seconds = t.elapsed().as_secs_f64();
    let log2 = podman::logs(&container);
    assert_eq!(back, written, "rows after the restore; log:\n{log2}");
    let restored = log2
        .find("volume restored")
        .unwrap_or_else(|| panic!("{log2}"));
    let started = log2
        .find("starting PostgreSQL")
        .unwrap_or_else(|| panic!("{log2}"));
    assert!(
        restored < started,
        "PostgreSQL started before the restore:\n{log2}"
    );
    assert!(!log2.contains("initialised an empty"), "{log2}");
    podman_ok(&["pod", "stop", "-t", "90", &pod]);
    eprintln!(
        "CONTAINER-K8S-POSTGRES rows_written=50000 rows_back={} stop_seconds={stop_seconds:.1} \
         restore_to_rows_seconds={restore_seconds:.1}",
        back.split(':').next().unwrap()
    );
}

/// A sidecar in files mode beside a running PostgreSQL (the shape the Kubernetes example had
/// before): its PID namespace is its own, so the PID in postmaster.pid tells it nothing (PID 1
/// there is lifeboat itself), but the pod's containers share one IPC namespace, where the
/// postmaster's shared memory segment shows the server running. After the server is killed
/// (every PostgreSQL process gone, postmaster.pid left behind) nobody is attached to the
/// segment and the files, no longer written, are backed up.
#[test]
fn files_mode_sidecar_judges_postgres_in_another_container_by_its_shared_memory() {
    let _serial = one_at_a_time();
    podman::install();
    let mut clean = Cleanup::default();
    let (lifeboat, pg) = {
        let pg = std::thread::spawn(podman::postgres_image);
        (podman::lifeboat_image(), pg.join().unwrap())
    };
    let pod = unique("ipc");
    clean.pods.push(pod.clone());
    podman_ok(&["pod", "create", "--name", &pod, "--network", "host"]);
    let volume = clean.volume(&unique("ipc-data"));
    let repo = tempfile::tempdir().unwrap();
    let server = clean.container(&unique("ipc-pg"));
    let port = common::free_port().to_string();
    podman_ok(&[
        "run",
        "-d",
        "--pod",
        &pod,
        "--name",
        &server,
        "-e",
        "POSTGRES_PASSWORD=x",
        "-e",
        &format!("PGPORT={port}"),
        "-v",
        &format!("{volume}:/var/lib/postgresql/data"),
        pg,
    ]);
    wait_for("PostgreSQL", &pod, Duration::from_secs(120), || {
        let out = podman(&["exec", &server, "pg_isready", "-p", &port]);
        out.status.success().then_some(())
    });
    let mount_repo = format!("{}:/repo", repo.path().display());
    let mount_data = format!("{volume}:/data");
    let lifeboat_run = |args: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--pod",
            &pod,
            "--user",
            "0",
            "-e",
            "LIFEBOAT_PASSWORD=ipc test password",
            "-e",
            "LIFEBOAT_REPOSITORY=/repo",
            "-v",
            &mount_repo,
            "-v",
            &mount_data,
            lifeboat,
        ];
        a.extend_from_slice(args);
        let out = podman(&a);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = lifeboat_run(&["init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = lifeboat_run(&["backup", "/data"]);
    assert_eq!(code, 1, "a running PostgreSQL was copied:\n{out}");
    assert!(
        out.contains("live PostgreSQL") && out.contains("processes attached"),
        "{out}"
    );
    podman_ok(&["kill", "-s", "KILL", &server]);
    podman::wait(&server);
    assert!(
        podman::volume_dir(&volume)
            .join("pgdata/postmaster.pid")
            .exists()
            || podman::volume_dir(&volume).join("postmaster.pid").exists(),
        "the kill left no postmaster.pid: the test shows nothing"
    );
    let (code, out) = lifeboat_run(&["backup", "/data"]);
    assert_eq!(code, 0, "the stopped server's files were refused:\n{out}");
    eprintln!("CONTAINER-IPC refused while running, backed up after the kill");
}
