//! `lifeboat sdl inject`: rewrites one service of an existing SDL so lifeboat wraps its command,
//! protects its persistent volume, and restores it on a new lease. Only that service's block is
//! rewritten; the rest of the file (comments, key order, formatting) is kept as written.

use serde_yaml_ng::Value;

use super::rules::{self, get, str_of};

/// How the lifeboat binary gets into the app's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The user builds a small image: their image plus the static binary (see the Dockerfile).
    Image,
    /// The unmodified image downloads a pinned release at start and checks its SHA-256.
    Bootstrap,
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The service to protect.
    pub service: String,
    /// The image's ENTRYPOINT, when the SDL does not state `command`.
    pub entrypoint: Option<Vec<String>>,
    /// The image's CMD, when the SDL states neither `command` nor `args`.
    pub cmd: Option<Vec<String>>,
    /// Volume name (default: the service name).
    pub name: Option<String>,
    /// Repository (default: a Storj bucket placeholder).
    pub repo: Option<String>,
    /// How the binary gets in.
    pub mode: Mode,
    /// Image mode: the image the user builds (default: a placeholder).
    pub image: Option<String>,
    /// Bootstrap mode: release URL of the static binary.
    pub release_url: Option<String>,
    /// Bootstrap mode: its SHA-256.
    pub sha256: Option<String>,
}

/// The result.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The new SDL text.
    pub sdl: String,
    /// Image mode: the Dockerfile that builds the image the SDL now names.
    pub dockerfile: Option<String>,
    /// Whether comments and layout outside the service were kept (false: re-serialized).
    pub layout_kept: bool,
}

/// Where lifeboat lives inside the app's container.
pub const BINARY: &str = "/usr/local/bin/lifeboat";
/// lifeboat's own image, which the generated Dockerfile copies the binary from.
pub const LIFEBOAT_IMAGE: &str = "ghcr.io/lifeboat-backup/lifeboat";

struct Preset {
    image: &'static str,
    entrypoint: &'static [&'static str],
    cmd: &'static [&'static str],
    env: &'static [&'static str],
}

/// Official images whose ENTRYPOINT/CMD are known, and the capture that suits each.
const PRESETS: &[Preset] = &[
    Preset {
        image: "postgres",
        entrypoint: &["docker-entrypoint.sh"],
        cmd: &["postgres"],
        // Hot base backups and WAL archived within a minute (issue 16); no pause.
        env: &[
            "LIFEBOAT_METHOD=postgres",
            "LIFEBOAT_PG_ARCHIVE_TIMEOUT=60s",
        ],
    },
    Preset {
        image: "mysql",
        entrypoint: &["docker-entrypoint.sh"],
        cmd: &["mysqld"],
        env: &["LIFEBOAT_PAUSE=true"],
    },
    Preset {
        image: "mariadb",
        entrypoint: &["docker-entrypoint.sh"],
        cmd: &["mariadbd"],
        env: &["LIFEBOAT_PAUSE=true"],
    },
    Preset {
        image: "redis",
        entrypoint: &["docker-entrypoint.sh"],
        cmd: &["redis-server"],
        // The final backup runs after Redis has stopped (it saved on SIGTERM): SAVE then fails,
        // and must not abort the backup that matters most.
        env: &["LIFEBOAT_PRE_BACKUP=redis-cli SAVE || [ \"$LIFEBOAT_REASON\" = final ]"],
    },
];

fn preset(image: &str) -> Option<&'static Preset> {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split(['@', ':']).next().unwrap_or(base);
    let official = !image.contains('/')
        || image.starts_with("library/")
        || image.starts_with("docker.io/library/");
    PRESETS.iter().find(|p| official && p.image == base)
}

fn argv(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Sequence(s) => s.iter().map(str_of).collect(),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn seq(items: &[String]) -> Value {
    Value::Sequence(items.iter().map(|s| Value::String(s.clone())).collect())
}

/// The bootstrap script: download with curl or wget, verify, exec the wrapper with "$@".
fn bootstrap_script(url: &str, sha256: &str) -> String {
    format!(
        r#"set -eu
url="{url}"
sum="{sha256}"
bin="${{TMPDIR:-/tmp}}/lifeboat"
if command -v curl >/dev/null 2>&1; then curl -fsSL "$url" -o "$bin"
elif command -v wget >/dev/null 2>&1; then wget -qO "$bin" "$url"
else echo "lifeboat bootstrap: the image has neither curl nor wget; use --mode image" >&2; exit 1; fi
if ! echo "$sum  $bin" | sha256sum -c - >/dev/null 2>&1; then
  echo "lifeboat bootstrap: checksum mismatch for $url; refusing to run it" >&2; rm -f "$bin"; exit 1
fi
chmod +x "$bin"
exec "$bin" run -- "$@"
"#
    )
}

/// Rewrites `text` so that `opts.service` runs under lifeboat.
pub fn inject(text: &str, opts: &InjectOptions) -> Result<Injected, String> {
    let mut sdl = rules::parse(text, "the SDL")?;
    let (_, mount) = rules::persistent_mount(&sdl, &opts.service)?;
    let svc = get(&sdl, "services")
        .and_then(|s| get(s, &opts.service))
        .cloned()
        .expect("persistent_mount found it");
    let image = get(&svc, "image")
        .and_then(str_of)
        .ok_or_else(|| format!("service {:?} has no image", opts.service))?;
    let command = argv(get(&svc, "command"));
    let args = argv(get(&svc, "args"));
    if command
        .iter()
        .flatten()
        .chain(args.iter().flatten())
        .any(|a| a.contains("lifeboat"))
    {
        return Err(format!(
            "service {:?} already runs lifeboat; nothing to inject",
            opts.service
        ));
    }
    let p = preset(&image);
    let missing = |what: &str| {
        format!(
            "the SDL does not state service {:?}'s {what} and {image:?} has no preset: pass --entrypoint and --cmd (`docker inspect {image}` shows them)",
            opts.service
        )
    };
    let app: Vec<String> = match command {
        Some(c) => c.into_iter().chain(args.unwrap_or_default()).collect(),
        None => {
            let ep = opts
                .entrypoint
                .clone()
                .or_else(|| p.map(|p| p.entrypoint.iter().map(|s| s.to_string()).collect()))
                .ok_or_else(|| missing("command (the image's ENTRYPOINT)"))?;
            let cmd = match args {
                Some(a) => a,
                None => opts
                    .cmd
                    .clone()
                    .or_else(|| p.map(|p| p.cmd.iter().map(|s| s.to_string()).collect()))
                    .ok_or_else(|| missing("args (the image's CMD)"))?,
            };
            ep.into_iter().chain(cmd).collect()
        }
    };
    if app.is_empty() {
        return Err(missing("command"));
    }

    let name = opts.name.clone().unwrap_or_else(|| opts.service.clone());
    let mut new = svc.as_mapping().cloned().unwrap_or_default();
    let mut dockerfile = None;
    match opts.mode {
        Mode::Image => {
            let (repo_part, tag) = match image.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (image.clone(), "latest".to_string()),
            };
            let base = repo_part
                .rsplit('/')
                .next()
                .unwrap_or(&repo_part)
                .to_string();
            let built = opts
                .image
                .clone()
                .unwrap_or_else(|| format!("<your registry>/{base}-lifeboat:{tag}"));
            new.insert("image".into(), Value::String(built.clone()));
            new.insert(
                "command".into(),
                seq(&[BINARY.into(), "run".into(), "--".into()]),
            );
            new.insert("args".into(), seq(&app));
            dockerfile = Some(format!(
                "# Build: docker build -t {built} .\n\
                 # {image} with lifeboat as its entrypoint wrapper.\n\
                 FROM {LIFEBOAT_IMAGE}:{version} AS lifeboat\n\
                 FROM {image}\n\
                 COPY --from=lifeboat {BINARY} {BINARY}\n\
                 ENTRYPOINT [\"{BINARY}\", \"run\", \"--\"]\n\
                 CMD {cmd}\n",
                version = env!("CARGO_PKG_VERSION"),
                cmd = serde_json::to_string(&app).expect("strings"),
            ));
        }
        Mode::Bootstrap => {
            let url = opts.release_url.clone().unwrap_or_else(|| {
                format!(
                    "https://github.com/lifeboat-backup/lifeboat/releases/download/v{}/lifeboat-x86_64-unknown-linux-musl",
                    env!("CARGO_PKG_VERSION")
                )
            });
            let sum = opts
                .sha256
                .clone()
                .unwrap_or_else(|| "<sha256 of the release binary>".into());
            new.insert(
                "command".into(),
                seq(&[
                    "sh".into(),
                    "-c".into(),
                    bootstrap_script(&url, &sum),
                    "lifeboat-bootstrap".into(),
                ]),
            );
            new.insert("args".into(), seq(&app));
        }
    }
    let mut env: Vec<Value> = get(&svc, "env")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    let has = |env: &[Value], key: &str| {
        env.iter()
            .filter_map(str_of)
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let repo = opts
        .repo
        .clone()
        .unwrap_or_else(|| format!("s3:https://gateway.storjshare.io/<your bucket>/{name}"));
    let mut add = vec![
        format!("LIFEBOAT_PATH={mount}"),
        format!("LIFEBOAT_NAME={name}"),
        format!("LIFEBOAT_REPOSITORY={repo}"),
        "LIFEBOAT_PASSWORD=<repository password>".to_string(),
        "AWS_ACCESS_KEY_ID=<S3 access key>".to_string(),
        "AWS_SECRET_ACCESS_KEY=<S3 secret key>".to_string(),
        // No LIFEBOAT_KEEP_*: retention needs delete permission, which the agent's key should
        // not have (docs/SECURITY.md); the owner runs `lifeboat forget … --prune`.
        "LIFEBOAT_SCHEDULE=@hourly".to_string(),
    ];
    if let Some(p) = p {
        add.extend(p.env.iter().map(|s| s.to_string()));
    }
    for e in add {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(&e).to_string();
        if !has(&env, &key) {
            env.push(Value::String(e));
        }
    }
    new.insert("env".into(), Value::Sequence(env));
    let new = Value::Mapping(new);

    let services = sdl
        .as_mapping_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Value::as_mapping_mut)
        .expect("services checked");
    services.insert(Value::String(opts.service.clone()), new.clone());
    let problems = rules::check(&sdl);
    if !problems.is_empty() {
        return Err(format!(
            "the result breaks Akash's SDL rules: {}",
            problems.join("; ")
        ));
    }
    let (text, layout_kept) = match splice(text, &opts.service, &new) {
        Some(t) if rules::parse(&t, "result").ok().as_ref() == Some(&sdl) => (t, true),
        _ => (
            serde_yaml_ng::to_string(&sdl).map_err(|e| e.to_string())?,
            false,
        ),
    };
    Ok(Injected {
        sdl: text,
        dockerfile,
        layout_kept,
    })
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Replaces the block of `services.<service>` in block-style YAML text, leaving every other line
/// as it was. `None` when the layout is not the plain block style this understands.
fn splice(text: &str, service: &str, new: &Value) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let services = lines.iter().position(|l| {
        let t = l.trim_end();
        t == "services:"
            || t.starts_with("services:") && t["services:".len()..].trim_start().starts_with('#')
    })?;
    let first = (services + 1..lines.len()).find(|&i| !is_blank_or_comment(lines[i]))?;
    let n = indent_of(lines[first]);
    if n == 0 {
        return None;
    }
    let start = (first..lines.len()).find(|&i| {
        let l = lines[i];
        if is_blank_or_comment(l) || indent_of(l) != n {
            return false;
        }
        let key = l.trim().split(':').next().unwrap_or("");
        key.trim_matches(|c| c == '"' || c == '\'') == service
    })?;
    if (first..start).any(|i| !is_blank_or_comment(lines[i]) && indent_of(lines[i]) < n) {
        return None;
    }
    let mut end = (start + 1..lines.len())
        .find(|&i| !is_blank_or_comment(lines[i]) && indent_of(lines[i]) <= n)
        .unwrap_or(lines.len());
    // Blank lines and comments just before the next key belong to what follows.
    while end > start + 1
        && (is_blank_or_comment(lines[end - 1]) && indent_of(lines[end - 1]) <= n
            || lines[end - 1].trim().is_empty())
    {
        end -= 1;
    }
    let mut block = serde_yaml_ng::Mapping::new();
    block.insert(Value::String(service.into()), new.clone());
    let body = serde_yaml_ng::to_string(&Value::Mapping(block)).ok()?;
    let pad = " ".repeat(n);
    let mut out = String::with_capacity(text.len() + body.len());
    for l in &lines[..start] {
        out.push_str(l);
    }
    for l in body.lines() {
        if !l.is_empty() {
            out.push_str(&pad);
        }
        out.push_str(l);
        out.push('\n');
    }
    for l in &lines[end..] {
        out.push_str(l);
    }
    Some(out)
}
