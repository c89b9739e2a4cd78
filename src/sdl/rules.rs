//! lifeboat's SDL rules beside Akash's own ([`super::akash`]): one error (its control port,
//! `LIFEBOAT_LISTEN`, never exposed globally) and warnings for what Akash accepts but will not
//! do what was meant (placeholders left in, Akash's Go-parser-only storage rules, `count > 1`
//! with a persistent volume, a read-only or `/` mount of it, env entries that are not
//! `NAME=VALUE`). Also the SDL helpers `sdl inject` uses.

use serde_yaml_ng::Value;

/// Storage classes Akash providers offer.
const CLASSES: &[&str] = &["beta1", "beta2", "beta3", "ram"];

/// Parses SDL text, or says why it is not YAML.
pub fn parse(text: &str, what: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let v: Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("{what} is not valid YAML: {e}"))?;
    if !v.is_mapping() {
        return Err(format!(
            "{what} is not an SDL: the top level must be a mapping"
        ));
    }
    Ok(v)
}

/// A mapping's value by key (`None` for anything else).
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

/// A scalar as text (YAML writes `2.0`, `true`, `5432` unquoted).
pub fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn entries(m: Option<&Value>) -> Vec<(String, &Value)> {
    m.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| str_of(k).map(|k| (k, v)))
                .collect()
        })
        .unwrap_or_default()
}

/// A service's compute profile name, from `deployment.<service>.<placement>.profile`.
pub(crate) fn profile_of(sdl: &Value, service: &str) -> Option<String> {
    let d = get(sdl, "deployment").and_then(|d| get(d, service))?;
    entries(Some(d))
        .into_iter()
        .find_map(|(_, p)| get(p, "profile").and_then(str_of))
}

/// One storage entry of a compute profile.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Volume name (`default` when unnamed).
    pub name: String,
    /// Survives restarts of the container.
    pub persistent: bool,
    /// Storage class.
    pub class: Option<String>,
    /// Declared size.
    pub size: Option<String>,
}

/// The storage entries of a compute profile (a list, or a single mapping).
pub(crate) fn storages(sdl: &Value, profile: &str) -> Vec<Storage> {
    let st = get(sdl, "profiles")
        .and_then(|p| get(p, "compute"))
        .and_then(|c| get(c, profile))
        .and_then(|p| get(p, "resources"))
        .and_then(|r| get(r, "storage"));
    let list: Vec<&Value> = match st {
        Some(Value::Sequence(s)) => s.iter().collect(),
        Some(v @ Value::Mapping(_)) => vec![v],
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|s| {
            let attrs = get(s, "attributes");
            Storage {
                name: get(s, "name")
                    .and_then(str_of)
                    .unwrap_or_else(|| "default".into()),
                persistent: attrs.and_then(|a| get(a, "persistent")).is_some_and(|p| {
                    matches!(p, Value::Bool(true)) || str_of(p).as_deref() == Some("true")
                }),
                class: attrs.and_then(|a| get(a, "class")).and_then(str_of),
                size: get(s, "size").and_then(str_of),
            }
        })
        .collect()
}

/// lifeboat's own rule, an error: its control port (`LIFEBOAT_LISTEN`) is never exposed
/// globally (anyone could trigger backups or read its status).
pub fn lifeboat_errors(sdl: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    for (name, svc) in entries(get(sdl, "services")) {
        let Some(port) = lifeboat_port(svc) else {
            continue;
        };
        for e in get(svc, "expose")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let p = get(e, "port").and_then(str_of);
            let global = get(e, "to").and_then(Value::as_sequence).is_some_and(|to| {
                to.iter()
                    .any(|t| get(t, "global").is_some_and(|g| matches!(g, Value::Bool(true))))
            });
            if p.as_deref() == Some(port.as_str()) && global {
                errs.push(format!(
                    "services.{name}.expose: port {port} is lifeboat's control port (LIFEBOAT_LISTEN); never expose it globally"
                ));
            }
        }
    }
    errs
}

/// What Akash accepts but will likely not do what was meant: the rules of Akash's Go parser
/// and providers that its JS validator does not check, and lifeboat's own advice. Printed as
/// warnings; they never fail `sdl check`.
pub fn warnings(sdl: &Value, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = placeholder(text) {
        out.push(format!("{p} is a placeholder: fill it in before deploying"));
    }
    let compute = get(sdl, "profiles").and_then(|p| get(p, "compute"));
    for (name, svc) in entries(get(sdl, "services")) {
        let at = format!("services.{name}");
        for e in get(svc, "env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(s) = str_of(e)
                && !valid_env(&s)
            {
                out.push(format!(
                    "{at}.env: {s:?} is not NAME=VALUE with a shell-safe name; the container may not see it as meant"
                ));
            }
        }
        let Some(profile) = profile_of(sdl, &name) else {
            continue;
        };
        if compute.and_then(|c| get(c, &profile)).is_none() {
            continue;
        }
        let vols = storages(sdl, &profile);
        let pat = format!("profiles.compute.{profile}.resources.storage");
        let mut seen = std::collections::HashSet::new();
        for v in &vols {
            if !seen.insert(v.name.clone()) {
                out.push(format!("{pat}: volume name {:?} appears twice", v.name));
            }
            if let Some(c) = &v.class {
                if !CLASSES.contains(&c.as_str()) && c != "default" {
                    out.push(format!(
                        "{pat}: volume {:?} class {c:?}: providers offer beta1, beta2, beta3 or ram (Akash's Go parser refuses others)",
                        v.name
                    ));
                }
                if c != "ram" && !v.persistent {
                    out.push(format!(
                        "{pat}: volume {:?}: a class without persistent: true is ignored (Akash's Go parser refuses it)",
                        v.name
                    ));
                }
            }
        }
        let persistent: Vec<&Storage> = vols.iter().filter(|v| v.persistent).collect();
        if persistent.len() > 1 {
            out.push(format!(
                "{pat}: {} persistent volumes; providers give a service one",
                persistent.len()
            ));
        }
        let count = get(sdl, "deployment")
            .and_then(|d| get(d, &name))
            .map(|d| {
                entries(Some(d))
                    .into_iter()
                    .filter_map(|(_, e)| get(e, "count").and_then(Value::as_f64))
                    .fold(0.0, f64::max)
            })
            .unwrap_or(0.0);
        if count > 1.0 && !persistent.is_empty() {
            out.push(format!(
                "deployment.{name}: count {count} with a persistent volume: each replica gets a volume of its own, and they would share one lifeboat volume name"
            ));
        }
        let mounts = entries(get(svc, "params").and_then(|p| get(p, "storage")));
        for (vol, m) in &mounts {
            let persistent = vols.iter().any(|v| &v.name == vol && v.persistent);
            if !persistent {
                continue;
            }
            if get(m, "readOnly").is_some_and(|r| matches!(r, Value::Bool(true))) {
                out.push(format!(
                    "{at}.params.storage.{vol}: the persistent volume is mounted read-only: the app cannot write it (nor can lifeboat restore into it)"
                ));
            }
            if get(m, "mount").and_then(str_of).as_deref() == Some("/") {
                out.push(format!(
                    "{at}.params.storage.{vol}: mount / hides the image's whole file system"
                ));
            }
        }
    }
    out
}

/// The first `<...>` placeholder in the text, if any.
pub fn placeholder(text: &str) -> Option<String> {
    let start = text.find('<')?;
    let end = text[start..].find('>')? + start;
    let inner = &text[start + 1..end];
    (!inner.is_empty() && !inner.contains('\n') && inner.len() < 80)
        .then(|| text[start..=end].to_string())
}

fn valid_env(s: &str) -> bool {
    match s.split_once('=') {
        Some((k, _)) => {
            !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// The port of `LIFEBOAT_LISTEN` in a service's env, if set.
fn lifeboat_port(svc: &Value) -> Option<String> {
    get(svc, "env")?
        .as_sequence()?
        .iter()
        .filter_map(str_of)
        .find_map(|e| e.strip_prefix("LIFEBOAT_LISTEN=").map(str::to_string))
        .and_then(|a| a.rsplit(':').next().map(str::to_string))
}

/// Finds the one persistent volume of a service and its mount path.
pub fn persistent_mount(sdl: &Value, service: &str) -> Result<(String, String), String> {
    let svc = get(sdl, "services")
        .and_then(|s| get(s, service))
        .ok_or_else(|| {
            let names: Vec<String> = entries(get(sdl, "services"))
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            format!(
                "no service {service:?} in the SDL (services: {})",
                names.join(", ")
            )
        })?;
    let profile = profile_of(sdl, service).ok_or_else(|| {
        format!("service {service:?} is not deployed: add deployment.{service}.<placement>.profile")
    })?;
    let vol = storages(sdl, &profile)
        .into_iter()
        .find(|v| v.persistent)
        .ok_or_else(|| {
            format!(
                "service {service:?} has no persistent volume: add one with attributes {{persistent: true, class: beta3}} to profiles.compute.{profile}.resources.storage and mount it (lifeboat protects a persistent volume)"
            )
        })?;
    let mount = get(svc, "params")
        .and_then(|p| get(p, "storage"))
        .and_then(|s| get(s, &vol.name))
        .and_then(|m| get(m, "mount"))
        .and_then(str_of)
        .ok_or_else(|| {
            format!(
                "service {service:?}: persistent volume {:?} is not mounted: add params.storage.{}.mount",
                vol.name, vol.name
            )
        })?;
    Ok((vol.name, mount))
}
