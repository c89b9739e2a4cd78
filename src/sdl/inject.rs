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
    /// The image's ENTRYPOINT, when the SDL does not state `command`; `Some(empty)`: the image
    /// has none (`--no-entrypoint`).
    pub entrypoint: Option<Vec<String>>,
    /// The image's CMD, when the SDL states neither `command` nor `args`; `Some(empty)`: the
    /// image has none (`--no-cmd`).
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
    /// The variables added to the service's env.
    pub added: Vec<String>,
    /// What the owner must know: placeholders left to fill in, what the provider can read, and
    /// `sdl check`'s warnings on the result.
    pub warnings: Vec<String>,
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

/// Images whose ENTRYPOINT/CMD are known (from each project's Dockerfile), and the capture
/// that suits each: the official database images, and the stateful apps most deployed on Akash.
/// `image` is the Docker Hub repository (`library/` implied for official ones).
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
        // redis-cli exits 0 even when the server refuses (NOAUTH): the reply must be OK.
        env: &[
            "LIFEBOAT_PRE_BACKUP=redis-cli SAVE | grep -qx OK || [ \"$LIFEBOAT_REASON\" = final ]",
        ],
    },
    Preset {
        image: "mongo",
        entrypoint: &["docker-entrypoint.sh"],
        cmd: &["mongod"],
        // WiredTiger's journal makes a frozen copy recoverable, like after a power loss.
        env: &["LIFEBOAT_PAUSE=true"],
    },
    Preset {
        image: "vaultwarden/server",
        entrypoint: &[],
        cmd: &["/start.sh"],
        // db.sqlite3 in WAL mode: copied through SQLite and replicated every second.
        env: &["LIFEBOAT_METHOD=sqlite"],
    },
    Preset {
        image: "louislam/uptime-kuma",
        entrypoint: &["/usr/bin/dumb-init", "--"],
        cmd: &["node", "server/server.js"],
        env: &["LIFEBOAT_METHOD=sqlite"],
    },
    Preset {
        image: "gogs/gogs",
        entrypoint: &["/app/gogs/docker/start.sh"],
        cmd: &["/bin/s6-svscan", "/app/gogs/docker/s6/"],
        env: &["LIFEBOAT_METHOD=sqlite"],
    },
    Preset {
        image: "n8nio/n8n",
        entrypoint: &["tini", "--", "/docker-entrypoint.sh"],
        cmd: &[],
        // SQLite by default (database.sqlite); with DB_TYPE=postgresdb protect the PostgreSQL
        // service with the postgres preset instead.
        env: &["LIFEBOAT_METHOD=sqlite"],
    },
    Preset {
        image: "minio/minio",
        entrypoint: &["/usr/bin/docker-entrypoint.sh"],
        cmd: &["minio"],
        // Objects and their xl.meta written apart: frozen for the copy.
        env: &["LIFEBOAT_PAUSE=true"],
    },
];

/// The preset's CMD for this image: MariaDB before 10.6 names its server `mysqld`.
fn preset_cmd(p: &Preset, image: &str) -> Vec<String> {
    if p.image == "mariadb" {
        let tag = without_digest(image)
            .rsplit_once(':')
            .map_or("", |(_, t)| t);
        let mut v = tag.split(['.', '-']).map(|x| x.parse::<u32>().ok());
        if let (Some(Some(major)), Some(Some(minor))) = (v.next(), v.next())
            && (major, minor) < (10, 6)
        {
            return vec!["mysqld".into()];
        }
    }
    p.cmd.iter().map(|s| s.to_string()).collect()
}

/// The preset's variables for this app: Redis with `--requirepass` authenticates its SAVE.
fn preset_env(p: &Preset, app: &[String]) -> Vec<String> {
    let pass = app
        .iter()
        .position(|a| a == "--requirepass")
        .and_then(|i| app.get(i + 1));
    p.env
        .iter()
        .map(|e| match (p.image, pass) {
            ("redis", Some(pw)) => e.replacen(
                "redis-cli SAVE",
                &format!("REDISCLI_AUTH={} redis-cli SAVE", shell_quote(pw)),
                1,
            ),
            _ => e.to_string(),
        })
        .collect()
}

fn preset(image: &str) -> Option<&'static Preset> {
    let mut name = without_digest(image);
    // The tag (after the last ':' of the last path part).
    if let Some(i) = name.rfind(':')
        && !name[i..].contains('/')
    {
        name = &name[..i];
    }
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    PRESETS.iter().find(|p| p.image == name)
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
    let url = shell_quote(url);
    format!(
        r#"set -eu
url={url}
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

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The image reference without its digest (`name:tag@sha256:…` → `name:tag`).
fn without_digest(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

/// Rewrites `text` so that `opts.service` runs under lifeboat.
pub fn inject(text: &str, opts: &InjectOptions) -> Result<Injected, String> {
    match opts.mode {
        Mode::Image if opts.release_url.is_some() || opts.sha256.is_some() => {
            return Err("--release-url and --sha256 are for --mode bootstrap".into());
        }
        Mode::Bootstrap if opts.image.is_some() => {
            return Err("--image is for --mode image (bootstrap keeps the app's image)".into());
        }
        _ => {}
    }
    if let Some(s) = &opts.sha256
        && !(s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(format!(
            "--sha256 {s:?} is not a SHA-256 (64 hex digits): `sha256sum lifeboat` prints it"
        ));
    }
    // CRLF files come back CRLF; the work is done on LF.
    let crlf = text.contains("\r\n");
    let text = &text.replace("\r\n", "\n");
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let input = text;
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
    // `--entrypoint ''` says "none", like `--no-entrypoint`.
    let words = |v: &Option<Vec<String>>| {
        v.clone()
            .map(|v| v.into_iter().filter(|w| !w.is_empty()).collect::<Vec<_>>())
    };
    let (given_ep, given_cmd) = (words(&opts.entrypoint), words(&opts.cmd));
    let app: Vec<String> = match command {
        Some(c) => c.into_iter().chain(args.unwrap_or_default()).collect(),
        None => {
            let ep = given_ep
                .clone()
                .or_else(|| p.map(|p| p.entrypoint.iter().map(|s| s.to_string()).collect()))
                .ok_or_else(|| missing("command (the image's ENTRYPOINT)"))?;
            let cmd = match args {
                Some(a) => a,
                None => given_cmd
                    .clone()
                    .or_else(|| p.map(|p| preset_cmd(p, &image)))
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
            let (repo_part, tag) = match without_digest(&image).rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (without_digest(&image).to_string(), "latest".to_string()),
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
    let mut warnings = Vec::new();
    let mut add = vec![
        format!("LIFEBOAT_PATH={mount}"),
        format!("LIFEBOAT_NAME={name}"),
        format!("LIFEBOAT_REPOSITORY={repo}"),
        "LIFEBOAT_PASSWORD=<repository password>".to_string(),
    ];
    // The S3 key pair goes in whole or not at all: a kept id beside a placeholder secret would
    // be a mismatched pair.
    match (
        has(&env, "AWS_ACCESS_KEY_ID"),
        has(&env, "AWS_SECRET_ACCESS_KEY"),
    ) {
        (false, false) => add.extend([
            "AWS_ACCESS_KEY_ID=<S3 access key>".to_string(),
            "AWS_SECRET_ACCESS_KEY=<S3 secret key>".to_string(),
        ]),
        (true, true) => {}
        (id, _) => warnings.push(format!(
            "the service sets {} but not {}: give both of one S3 key pair (nothing was added)",
            if id {
                "AWS_ACCESS_KEY_ID"
            } else {
                "AWS_SECRET_ACCESS_KEY"
            },
            if id {
                "AWS_SECRET_ACCESS_KEY"
            } else {
                "AWS_ACCESS_KEY_ID"
            }
        )),
    }
    // No LIFEBOAT_KEEP_*: retention needs delete permission, which the agent's key should not
    // have (docs/SECURITY.md); the owner runs `lifeboat forget … --prune`.
    add.push("LIFEBOAT_SCHEDULE=@hourly".to_string());
    if let Some(p) = p {
        add.extend(preset_env(p, &app));
    }
    let mut added = Vec::new();
    for e in add {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(&e).to_string();
        if !has(&env, &key) {
            env.push(Value::String(e));
            added.push(key);
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
    let problems = rules::lifeboat_errors(&sdl);
    if !problems.is_empty() {
        return Err(format!(
            "the result breaks lifeboat's SDL rules: {}",
            problems.join("; ")
        ));
    }
    let (mut text, layout_kept) = match splice(text, &opts.service, &new) {
        Some(t) if rules::parse(&t, "result").ok().as_ref() == Some(&sdl) => (t, true),
        _ => (
            serde_yaml_ng::to_string(&sdl).map_err(|e| e.to_string())?,
            false,
        ),
    };
    // The output must pass Akash's own rules whenever the input did.
    if super::akash::validate(input).is_empty() {
        let problems = super::akash::validate(&text);
        if !problems.is_empty() {
            return Err(format!(
                "the result breaks Akash's SDL rules (please report this): {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    let mut placeholders: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    while let Some(p) = rules::placeholder(rest) {
        let at = rest.find(&p).unwrap_or(0) + p.len();
        if !placeholders.contains(&p) {
            placeholders.push(p);
        }
        rest = &rest[at..];
    }
    if !placeholders.is_empty() {
        warnings.push(format!(
            "fill in before deploying: {}",
            placeholders.join(", ")
        ));
    }
    warnings.push(format!(
        "the provider running service {:?} can read its env (LIFEBOAT_PASSWORD and the S3 keys) and its S3 traffic's metadata: use an S3 key limited to this bucket and without delete permission (docs/SECURITY.md); the repository password protects the data itself",
        opts.service
    ));
    if let Ok(result) = rules::parse(&text, "result") {
        warnings.extend(
            rules::warnings(&result, &text)
                .into_iter()
                .filter(|w| !w.contains("is a placeholder")),
        );
    }
    if crlf {
        text = text.replace('\n', "\r\n");
    }
    Ok(Injected {
        sdl: text,
        dockerfile,
        layout_kept,
        added,
        warnings,
    })
}

/// YAML 1.1 readers (and some Akash tooling) read `on`, `off`, `yes`, `no`, `y`, `n` as
/// booleans; serde_yaml_ng (YAML 1.2) writes such strings bare. Quote them in a `key: value` or
/// `- value` line.
fn quote_yaml11_bool(line: &str) -> String {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let (head, value) = match line.trim_start().strip_prefix("- ") {
        Some(v) => (&line[..line.len() - v.len()], v),
        None => match line.split_once(": ") {
            Some((k, v)) => (&line[..k.len() + 2], v),
            None => return line.to_string(),
        },
    };
    if WORDS.contains(&value) {
        format!("{head}'{value}'")
    } else {
        line.to_string()
    }
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
    // The original block's comments, kept at the top of the new one (their keys may have moved).
    let comments: Vec<&str> = lines[start + 1..end]
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with('#'))
        .collect();
    let mut out = String::with_capacity(text.len() + body.len());
    for l in &lines[..start] {
        out.push_str(l);
    }
    for (i, l) in body.lines().enumerate() {
        if !l.is_empty() {
            out.push_str(&pad);
        }
        out.push_str(&quote_yaml11_bool(l));
        out.push('\n');
        if i == 0 {
            for c in &comments {
                out.push_str(&pad);
                out.push_str("  ");
                out.push_str(c);
                out.push('\n');
            }
        }
    }
    for l in &lines[end..] {
        out.push_str(l);
    }
    Some(out)
}
