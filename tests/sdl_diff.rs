//! `sdl check` against Akash's own validator (issue 19): seeded mutations of the shipped
//! snippets and of a small reference SDL, each run through `lifeboat::sdl::akash::validate` and
//! through `@akashnetwork/chain-sdk`'s `generateManifest(sdl, "mainnet")` with manifest and
//! deployment-group generation (`tests/sdl-validator/validate.js`, installed from npm by
//! `tests/sdl-validator/install.sh`). Any disagreement on whether a file is accepted fails.
//!
//! Size: LIFEBOAT_SDL_DIFF_N mutations (default 2000), seed LIFEBOAT_DRILL_SEED (default 19).
//! Needs node and npm (the machine has them; the install script says so when they are missing).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Rng;
use serde_yaml_ng::Value;

const REFERENCE: &str = r#"version: '2.0'
services:
  web:
    image: nginx:1.25
    command: [/bin/sh, -c]
    args: ["exec nginx -g 'daemon off;'"]
    env: [FOO=bar]
    expose:
      - {port: 80, as: 80, to: [{global: true}], http_options: {max_body_size: 1048576, next_cases: [error, timeout]}}
      - {port: 9090, to: [{service: web}]}
      - {port: 5000, as: 5000, proto: udp, to: [{global: true, ip: myip}]}
    params:
      storage:
        data: {mount: /data, readOnly: false}
    credentials: {host: ghcr.io, username: me, password: secret123}
profiles:
  compute:
    web:
      resources:
        cpu: {units: 1}
        memory: {size: 1Gi}
        storage:
          - {size: 1Gi}
          - {name: data, size: 10Gi, attributes: {persistent: true, class: beta2}}
        gpu:
          units: 1
          attributes: {vendor: {nvidia: [{model: a100, ram: 80Gi, interface: sxm}]}}
  placement:
    akash:
      attributes: {region: us-west}
      signedBy: {anyOf: [akash1xyz]}
      pricing:
        web: {denom: uakt, amount: 10000}
endpoints:
  myip: {kind: ip}
deployment:
  web:
    akash: {profile: web, count: 1}
"#;

const MAINNET_USDC: &str = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1";

fn y(s: &str) -> Value {
    serde_yaml_ng::from_str(s).unwrap()
}

/// Values for a key, aimed at the rules about it.
fn pool(key: &str) -> Vec<Value> {
    let v = |list: &[&str]| list.iter().map(|s| y(s)).collect::<Vec<_>>();
    match key {
        "units" => v(&[
            "0", "1", "'0'", "'0m'", "'100m'", "'1.5x'", "abc", "-1", "0.5", "'1 m'", "null",
            "[1]", "'0.0'", "2",
        ]),
        "size" => v(&[
            "1Gi", "'512'", "'1 Gi'", "'-1Gi'", "''", "512", "1.5.5Gi", "0Gi", "1GB", "512Mi",
        ]),
        "denom" => {
            let mut d = v(&["uakt", "uact", "akt", "UAKT", "ibc/other", "1"]);
            d.push(Value::String(MAINNET_USDC.into()));
            d
        }
        "amount" => v(&[
            "0", "-1", "'1.5'", "abc", "1.5", "1000", "'-1'", "'1e3'", "null",
        ]),
        "count" => v(&["0", "1", "2", "1.5", "'1'", "-1", "null"]),
        "port" | "as" => v(&[
            "0", "1", "80", "65535", "65536", "'80'", "80.5", "8080.0", "null", "5000",
        ]),
        "persistent" => v(&[
            "true", "false", "'true'", "'yes'", "'off'", "'false'", "1", "'no'", "''",
        ]),
        "class" => v(&["beta3", "ram", "default", "bogus", "1", "beta1"]),
        "mount" => v(&["/data", "data", "''", "/", "1", "/other", "null"]),
        "readOnly" => v(&["true", "false", "'yes'", "1"]),
        "profile" => v(&["web", "nope", "1", "db"]),
        "global" => v(&["true", "false", "'true'", "null"]),
        "proto" => v(&["TCP", "tcp", "UDP", "udp", "http", "Tcp"]),
        "image" => v(&[
            "''",
            "nginx",
            "1",
            "'<your registry>/x:1'",
            "'vllm/vllm-openai:v0.6.2@sha256:abc'",
        ]),
        "version" => v(&["'2.0'", "'2.1'", "'3.0'", "2.0", "2.1"]),
        "env" | "command" | "args" => v(&[
            "null", "[]", "[A=1]", "[A]", "x", "[1]", "[a.b=1]", "{a: 1}",
        ]),
        "name" => v(&["data", "other", "1", "default"]),
        "ip" => v(&["myip", "other", "''", "1"]),
        "kind" => v(&["ip", "tcp"]),
        "password" => v(&["secret123", "abc", "''", "123456"]),
        "email" => v(&["a@b", "me@example.com"]),
        "host" | "username" => v(&["''", "x"]),
        "max_body_size" => v(&["0", "104857600", "104857601", "-1", "'1'"]),
        "read_timeout" | "send_timeout" => v(&["0", "60000", "60001", "1.5", "-1"]),
        "next_tries" | "next_timeout" => v(&["0", "1000", "-1", "'1'"]),
        "next_cases" => v(&[
            "[off]",
            "[off, error]",
            "[bogus]",
            "[]",
            "[500]",
            "['500']",
            "error",
            "[error, timeout]",
        ]),
        "model" | "ram" => v(&["a100", "1", "null"]),
        "interface" => v(&["pcie", "sxm", "nvlink"]),
        "nvidia" => v(&[
            "null",
            "[]",
            "[{model: h100}]",
            "{model: h100}",
            "[{vram: 1}]",
        ]),
        "vendor" => v(&["{}", "{nvidia: null}", "{amd: null}", "null"]),
        "attributes" => v(&[
            "{}",
            "null",
            "[x]",
            "{persistent: true}",
            "{vendor: {nvidia: null}}",
            "{region: eu}",
        ]),
        "anyOf" | "allOf" => v(&["[a]", "a", "[1]"]),
        "accept" => v(&["[a.example.com]", "a.example.com", "[1]"]),
        "to" => v(&[
            "[]",
            "null",
            "[{global: true}]",
            "[{ip: myip}]",
            "[{global: true, ip: myip}]",
            "[{foo: 1}]",
        ]),
        "expose" => v(&["[]", "null", "{port: 80}", "[{port: 80}]"]),
        "storage" => v(&[
            "[]",
            "{size: 1Gi}",
            "null",
            "{data: {mount: /data}}",
            "[{size: 1Gi}, {size: 2Gi}]",
        ]),
        "read" => v(&["[logs]", "[foo]", "logs"]),
        "endpoints" => v(&[
            "{}",
            "{myip: {kind: ip}}",
            "{a: {kind: ip}}",
            "{other: {kind: ip}}",
        ]),
        "gpu" => v(&[
            "{units: 0}",
            "{units: 1}",
            "{units: '0'}",
            "{units: 0, attributes: {vendor: {nvidia: null}}}",
            "null",
        ]),
        "memory" => v(&["{size: 1Gi}", "{size: 1Gi, attributes: {}}", "{}", "null"]),
        "cpu" => v(&[
            "{units: 1}",
            "{units: 1, attributes: {arch: amd64}}",
            "{}",
            "{units: 1, foo: 1}",
        ]),
        _ => Vec::new(),
    }
}

fn generic() -> Vec<Value> {
    [
        "null", "true", "1", "-1", "''", "x", "[]", "{}", "[x]", "{foo: 1}", "1.5",
    ]
    .iter()
    .map(|s| y(s))
    .collect()
}

#[derive(Clone, Debug)]
enum Seg {
    K(Value),
    I(usize),
}

/// Every node's path.
fn paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Mapping(m) => {
            for (k, c) in m {
                prefix.push(Seg::K(k.clone()));
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, c) in s.iter().enumerate() {
                prefix.push(Seg::I(i));
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::K(k) => cur.as_mapping_mut().unwrap().get_mut(k).unwrap(),
            Seg::I(i) => &mut cur.as_sequence_mut().unwrap()[*i],
        };
    }
    cur
}

fn key_of(path: &[Seg]) -> String {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::K(Value::String(k)) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// One seeded mutation of `base`, as text.
fn mutate(rng: &mut Rng, base: &Value) -> (String, String) {
    let mut v = base.clone();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    // Mostly one change, so that each rule is what decides; sometimes two.
    let n = if rng.below(5) == 0 { 2 } else { 1 };
    let mut what = Vec::new();
    for _ in 0..n {
        let mut all2 = Vec::new();
        paths(&v, &mut Vec::new(), &mut all2);
        if all2.is_empty() {
            break;
        }
        let p = rng.pick(&all2).clone();
        let key = key_of(&p);
        match rng.below(10) {
            0 | 1 => {
                // Delete the node.
                let (last, parent) = p.split_last().unwrap();
                let par = node(&mut v, parent);
                match (last, par) {
                    (Seg::K(k), Value::Mapping(m)) => {
                        m.remove(k);
                    }
                    (Seg::I(i), Value::Sequence(s)) => {
                        s.remove(*i);
                    }
                    _ => {}
                }
                what.push(format!("delete {}", show(&p)));
            }
            2 => {
                // An unknown key beside it.
                let (_, parent) = p.split_last().unwrap();
                if let Value::Mapping(m) = node(&mut v, parent) {
                    m.insert(Value::String("foo".into()), Value::Number(1.into()));
                    what.push(format!("add foo beside {}", show(&p)));
                }
            }
            3 => {
                // Duplicate a list item or rename a mapping key to a sibling's.
                let (last, parent) = p.split_last().unwrap();
                if let (Seg::I(i), Value::Sequence(s)) = (last, node(&mut v, parent)) {
                    let item = s[*i].clone();
                    s.push(item);
                    what.push(format!("duplicate {}", show(&p)));
                }
            }
            _ => {
                let mut choices = pool(&key);
                if choices.is_empty() || rng.below(8) == 0 {
                    choices.extend(generic());
                }
                let new = rng.pick(&choices).clone();
                what.push(format!(
                    "{} = {}",
                    show(&p),
                    serde_yaml_ng::to_string(&new).unwrap().trim()
                ));
                *node(&mut v, &p) = new;
            }
        }
    }
    let mut text = serde_yaml_ng::to_string(&v).unwrap();
    match rng.below(20) {
        0 => {
            text.insert(0, '\u{feff}');
            what.push("BOM".into());
        }
        1 => {
            text = text.replace('\n', "\r\n");
            what.push("CRLF".into());
        }
        2 => {
            text.insert_str(0, "---\n");
            what.push("---".into());
        }
        _ => {}
    }
    (what.join("; "), text)
}

fn show(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::K(k) => serde_yaml_ng::to_string(k).unwrap().trim().to_string(),
            Seg::I(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdl-validator")
}

#[test]
fn sdl_check_agrees_with_akashs_validator_on_seeded_mutations() {
    let install = Command::new("bash")
        .arg(validator().join("install.sh"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "tests/sdl-validator/install.sh: {}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    let n: usize = std::env::var("LIFEBOAT_SDL_DIFF_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("LIFEBOAT_DRILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let mut bases: Vec<(String, Value)> = vec![("reference".into(), y(REFERENCE))];
    let mut cases: Vec<(String, String, String)> = Vec::new();
    let snippets = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdl-snippets");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&snippets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        cases.push((name.clone(), "as shipped".into(), text.clone()));
        cases.push((name.clone(), "BOM".into(), format!("\u{feff}{text}")));
        bases.push((name, y(&text)));
    }
    cases.push(("reference".into(), "as written".into(), REFERENCE.into()));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for _ in 0..n {
        let (name, base) = rng.pick(&bases).clone();
        let (what, text) = mutate(&mut rng, &base);
        cases.push((name, what, text));
    }
    // Akash's verdicts, all in one node process.
    let input = serde_json::Value::Array(
        cases
            .iter()
            .enumerate()
            .map(|(i, (_, _, t))| serde_json::json!({"name": i.to_string(), "yaml": t}))
            .collect(),
    );
    let mut child = Command::new("node")
        .arg(validator().join("validate.js"))
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (tests/sdl-validator/install.sh checks it is installed)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validate.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    let mut disagree = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for (v, (base, what, text)) in verdicts.iter().zip(&cases) {
        let akash_ok = v["ok"].as_bool().unwrap();
        let ours = lifeboat::sdl::akash::validate(text);
        if akash_ok {
            accepted += 1;
        } else {
            rejected += 1;
        }
        if akash_ok != ours.is_empty() {
            disagree.push(format!(
                "{base} with {what}: Akash {} ({}), lifeboat {} ({})\n{text}",
                if akash_ok { "accepts" } else { "rejects" },
                v["errors"],
                if ours.is_empty() {
                    "accepts"
                } else {
                    "rejects"
                },
                ours.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    println!(
        "SDL_DIFF: {} files ({} shipped snippets and variants, {n} seeded mutations, seed {seed}): Akash accepts {accepted}, rejects {rejected}; disagreements {}",
        cases.len(),
        cases.len() - n,
        disagree.len()
    );
    assert!(
        disagree.is_empty(),
        "{} disagreement(s); the first ones:\n\n{}",
        disagree.len(),
        disagree
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
