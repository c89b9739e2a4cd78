//! Akash SDL rules, checked before a deployment is sent (the provider rejects most of these only
//! after the lease is paid for). Each problem names the service or profile and what to change.
//!
//! Rules: version "2.0" or "2.1"; every service has an image and `KEY=VALUE` env entries; every
//! service is deployed with a compute profile that exists; storage entries have unique names and
//! a size; `class` only with `persistent: true`; the `ram` class is never persistent; at most one
//! persistent volume per service; every persistent volume is mounted and every mount names a
//! declared volume; mount paths are absolute and unique; and a lifeboat control port
//! (`LIFEBOAT_LISTEN`) is never exposed globally.

use serde_yaml_ng::Value;

/// Storage classes Akash providers offer.
const CLASSES: &[&str] = &["beta1", "beta2", "beta3", "ram"];

/// Parses SDL text, or says why it is not YAML.
pub fn parse(text: &str, what: &str) -> Result<Value, String> {
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

/// Every rule violation in `sdl`; empty when it passes.
pub fn check(sdl: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    match get(sdl, "version").and_then(str_of).as_deref() {
        Some("2.0") | Some("2.1") => {}
        Some(v) => errs.push(format!("version {v:?}: use \"2.0\" or \"2.1\" (quoted)")),
        None => errs.push("no version: add `version: \"2.0\"`".into()),
    }
    let services = entries(get(sdl, "services"));
    if services.is_empty() {
        errs.push("no services: add a `services:` section".into());
    }
    let compute = get(sdl, "profiles").and_then(|p| get(p, "compute"));
    for (name, svc) in &services {
        let at = format!("services.{name}");
        if get(svc, "image")
            .and_then(str_of)
            .is_none_or(|i| i.trim().is_empty())
        {
            errs.push(format!("{at}: no image"));
        }
        match get(svc, "env") {
            None => {}
            Some(Value::Sequence(env)) => {
                for e in env {
                    match str_of(e) {
                        Some(s) if valid_env(&s) => {}
                        _ => errs.push(format!(
                            "{at}.env: {:?} is not KEY=VALUE",
                            serde_yaml_ng::to_string(e).unwrap_or_default().trim()
                        )),
                    }
                }
            }
            Some(_) => errs.push(format!("{at}.env: must be a list of KEY=VALUE strings")),
        }
        let Some(profile) = profile_of(sdl, name) else {
            errs.push(format!(
                "{at}: not deployed: add deployment.{name}.<placement>.profile"
            ));
            continue;
        };
        if compute.and_then(|c| get(c, &profile)).is_none() {
            errs.push(format!(
                "deployment.{name}: compute profile {profile:?} is not in profiles.compute"
            ));
            continue;
        }
        let vols = storages(sdl, &profile);
        let pat = format!("profiles.compute.{profile}.resources.storage");
        let mut seen = std::collections::HashSet::new();
        for v in &vols {
            if !seen.insert(v.name.clone()) {
                errs.push(format!("{pat}: volume name {:?} appears twice", v.name));
            }
            if v.size.is_none() {
                errs.push(format!("{pat}: volume {:?} has no size", v.name));
            }
            if let Some(c) = &v.class {
                if !CLASSES.contains(&c.as_str()) {
                    errs.push(format!(
                        "{pat}: volume {:?} class {c:?}: use beta1, beta2, beta3 or ram",
                        v.name
                    ));
                }
                if c == "ram" && v.persistent {
                    errs.push(format!(
                        "{pat}: volume {:?}: class ram can never be persistent",
                        v.name
                    ));
                }
                if c != "ram" && !v.persistent {
                    errs.push(format!(
                        "{pat}: volume {:?}: class is only allowed with persistent: true",
                        v.name
                    ));
                }
            }
        }
        let persistent: Vec<&Storage> = vols.iter().filter(|v| v.persistent).collect();
        if persistent.len() > 1 {
            errs.push(format!(
                "{pat}: {} persistent volumes; Akash allows one per service",
                persistent.len()
            ));
        }
        let mounts = entries(get(svc, "params").and_then(|p| get(p, "storage")));
        let mut paths = std::collections::HashSet::new();
        for (vol, m) in &mounts {
            let Some(decl) = vols.iter().find(|v| &v.name == vol) else {
                errs.push(format!(
                    "{at}.params.storage.{vol}: no volume of that name in {pat}"
                ));
                continue;
            };
            match get(m, "mount").and_then(str_of) {
                Some(p) if p.starts_with('/') && !paths.insert(p.clone()) => {
                    errs.push(format!("{at}.params.storage: mount path {p} is used twice"));
                }
                Some(p) if p.starts_with('/') => {}
                Some(p) => errs.push(format!(
                    "{at}.params.storage.{vol}.mount: {p:?} must be an absolute path"
                )),
                None if decl.persistent || decl.class.as_deref() == Some("ram") => {
                    errs.push(format!("{at}.params.storage.{vol}: no mount path"))
                }
                None => {}
            }
        }
        for v in persistent {
            if !mounts.iter().any(|(n, _)| n == &v.name) {
                errs.push(format!(
                    "{at}: persistent volume {:?} is never mounted: add params.storage.{}.mount",
                    v.name, v.name
                ));
            }
        }
        if let Some(port) = lifeboat_port(svc) {
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
                        "{at}.expose: port {port} is lifeboat's control port (LIFEBOAT_LISTEN); never expose it globally"
                    ));
                }
            }
        }
    }
    errs
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
