//! The semantic half of Akash's rules (chain-sdk's `SDLValidator`, run only on a file whose
//! shape is right) and what fails only when the manifest is built (sizes, deployments of
//! services that do not exist).

use serde_yaml_ng::Value;

use super::{Ctx, MAINNET_USDC, Seg, at, entries, get, num, with};

/// chain-sdk's `stringToBoolean`: only false, no, 0 and "" (any case) are false.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !matches!(s.to_lowercase().as_str(), "false" | "no" | "0" | ""),
        _ => false,
    }
}

/// The volumes of a compute profile (a single volume counts as a list of one).
fn volumes<'a>(sdl: &'a Value, profile: &str) -> Vec<&'a Value> {
    let st = get(sdl, "profiles")
        .and_then(|p| get(p, "compute"))
        .and_then(|c| get(c, profile))
        .and_then(|p| get(p, "resources"))
        .and_then(|r| get(r, "storage"));
    match st {
        Some(Value::Sequence(s)) => s.iter().collect(),
        Some(v @ Value::Mapping(_)) => vec![v],
        _ => Vec::new(),
    }
}

pub(super) fn semantic(c: &mut Ctx, sdl: &Value) {
    let empty = Value::Null;
    let services = get(sdl, "services").unwrap_or(&empty);
    let deployment = get(sdl, "deployment").unwrap_or(&empty);
    let placements = get(sdl, "profiles").and_then(|p| get(p, "placement"));
    let compute = get(sdl, "profiles").and_then(|p| get(p, "compute"));
    let endpoints = get(sdl, "endpoints");
    let mut ips: std::collections::HashMap<String, String> = Default::default();
    let mut used_endpoints = std::collections::HashSet::new();
    for (name, svc) in entries(services) {
        let sp = vec![Seg::Key("services".into()), Seg::Key(name.clone())];
        match get(deployment, &name) {
            None => c.push(&sp, format!("is not deployed: add deployment.{name}")),
            Some(d) => {
                for (pl, entry) in entries(d) {
                    let dp = vec![
                        Seg::Key("deployment".into()),
                        Seg::Key(name.clone()),
                        Seg::Key(pl.clone()),
                    ];
                    let profile = get(entry, "profile").and_then(Value::as_str).unwrap_or("");
                    match placements.and_then(|p| get(p, &pl)) {
                        None => c.push(
                            &dp,
                            format!("placement {pl:?} is not in profiles.placement"),
                        ),
                        Some(place) => {
                            if get(place, "pricing")
                                .and_then(|p| get(p, profile))
                                .is_none()
                            {
                                c.push(
                                    &dp,
                                    format!("profiles.placement.{pl}.pricing has no price for profile {profile:?}"),
                                );
                            }
                        }
                    }
                    if compute.and_then(|cm| get(cm, profile)).is_none() {
                        c.push(
                            &with(&dp, "profile"),
                            format!("compute profile {profile:?} is not in profiles.compute"),
                        );
                    }
                    let vols = volumes(sdl, profile);
                    let params = get(svc, "params").and_then(|p| get(p, "storage"));
                    if let Some(ps) = params {
                        let mut mounts: std::collections::HashMap<String, String> =
                            Default::default();
                        for (vol, m) in entries(ps) {
                            let vp = vec![
                                Seg::Key("services".into()),
                                Seg::Key(name.clone()),
                                Seg::Key("params".into()),
                                Seg::Key("storage".into()),
                                Seg::Key(vol.clone()),
                            ];
                            if !vols.iter().any(|v| {
                                get(v, "name").and_then(Value::as_str) == Some(vol.as_str())
                            }) {
                                c.push(
                                    &vp,
                                    format!(
                                        "no volume named {vol:?} in profiles.compute.{profile}.resources.storage (an unnamed volume cannot be mounted)"
                                    ),
                                );
                                continue;
                            }
                            let key = get(m, "mount")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                                .unwrap_or_else(|| "undefined".into());
                            if let Some(first) = mounts.get(&key) {
                                if key == "undefined" {
                                    c.push(&vp, "more than one volume without a mount path (root ephemeral storage)");
                                } else {
                                    c.push(
                                        &vp,
                                        format!("mount {key} is already used by volume {first:?}"),
                                    );
                                }
                            } else {
                                mounts.insert(key, vol.clone());
                            }
                        }
                    }
                    for v in &vols {
                        let attrs = get(v, "attributes");
                        if !truthy(attrs.and_then(|a| get(a, "persistent"))) {
                            continue;
                        }
                        let vname = get(v, "name").and_then(Value::as_str);
                        let mounted = params
                            .and_then(|ps| get(ps, vname.unwrap_or("")))
                            .and_then(|m| get(m, "mount"))
                            .is_some_and(|m| m.as_str().is_some_and(|s| !s.is_empty()));
                        if !mounted {
                            let vn = vname.unwrap_or("default");
                            c.push(
                                &sp,
                                format!(
                                    "persistent volume {vn:?} needs a mount path: add params.storage.{vn}.mount{}",
                                    if vname.is_none() { " (and a name for the volume)" } else { "" }
                                ),
                            );
                        }
                    }
                    if let Some(g) = compute
                        .and_then(|cm| get(cm, profile))
                        .and_then(|p| get(p, "resources"))
                        .and_then(|r| get(r, "gpu"))
                    {
                        let gp = vec![
                            Seg::Key("profiles".into()),
                            Seg::Key("compute".into()),
                            Seg::Key(profile.to_string()),
                            Seg::Key("resources".into()),
                            Seg::Key("gpu".into()),
                        ];
                        let units = get(g, "units");
                        let has_units = units.is_some_and(|u| !(num(u) == Some(0.0)));
                        let attrs = get(g, "attributes");
                        if !has_units && attrs.is_some() {
                            c.push(&gp, "GPU attributes need units greater than 0");
                        }
                        if has_units && attrs.is_none() {
                            c.push(&gp, "GPU units need attributes (vendor)");
                        }
                        if has_units && attrs.and_then(|a| get(a, "vendor")).is_none() {
                            c.push(&gp, "GPU units need a vendor in attributes.vendor");
                        }
                    }
                }
            }
        }
        // IP endpoints, for every service, deployed or not.
        for (i, e) in get(svc, "expose")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, t) in get(e, "to")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Some(ip) = get(t, "ip")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                else {
                    continue;
                };
                let tp = vec![
                    Seg::Key("services".into()),
                    Seg::Key(name.clone()),
                    Seg::Key("expose".into()),
                    Seg::Index(i),
                    Seg::Key("to".into()),
                    Seg::Index(j),
                ];
                if !matches!(get(t, "global"), Some(Value::Bool(true))) {
                    c.push(&tp, "an IP endpoint needs global: true");
                }
                if endpoints.and_then(|e| get(e, ip)).is_none() {
                    c.push(
                        &tp,
                        format!("endpoint {ip:?} is not in the endpoints section"),
                    );
                }
                used_endpoints.insert(ip.to_string());
                let port = get(e, "as")
                    .or_else(|| get(e, "port"))
                    .and_then(num)
                    .unwrap_or(0.0);
                let proto = get(e, "proto")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_uppercase();
                let key = format!("{ip}-{port}-{proto}");
                if let Some(first) = ips.get(&key) {
                    c.push(&tp, format!("IP endpoint {ip:?} port {port} {proto} is already used by service {first:?}"));
                } else {
                    ips.insert(key, name.clone());
                }
            }
        }
    }
    // Denoms: the first ibc/ denom that is not mainnet's USDC.
    'denom: for (pl, place) in placements.map(entries).unwrap_or_default() {
        for (prof, price) in get(place, "pricing").map(entries).unwrap_or_default() {
            if let Some(d) = get(price, "denom").and_then(Value::as_str)
                && d.starts_with("ibc/")
                && d != MAINNET_USDC
            {
                c.push(
                    &[
                        Seg::Key("profiles".into()),
                        Seg::Key("placement".into()),
                        Seg::Key(pl.clone()),
                        Seg::Key("pricing".into()),
                        Seg::Key(prof.clone()),
                        Seg::Key("denom".into()),
                    ],
                    format!("{d:?} is not a denom on mainnet: use uakt, uact or {MAINNET_USDC}"),
                );
                break 'denom;
            }
        }
    }
    for (name, _) in endpoints.map(entries).unwrap_or_default() {
        if !used_endpoints.contains(&name) {
            c.push(
                &[Seg::Key("endpoints".into()), Seg::Key(name.clone())],
                "declared but never used by a service's expose.to.ip",
            );
        }
    }
}

/// chain-sdk's size strings: `^([\d.]+)([a-zA-Z])([a-zA-Z]*)$` after lower-casing.
fn size_ok(s: &str) -> bool {
    let s = s.to_lowercase();
    let n = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    n > 0 && s.len() > n && s[n..].bytes().all(|c| c.is_ascii_alphabetic())
}

/// What fails only when the manifest is built: sizes of the profiles actually deployed, and a
/// deployment entry for no service sharing a placement with a real one.
pub(super) fn manifest(c: &mut Ctx, sdl: &Value) {
    let empty = Value::Null;
    let services = get(sdl, "services").unwrap_or(&empty);
    let deployment = get(sdl, "deployment").unwrap_or(&empty);
    let compute = get(sdl, "profiles").and_then(|p| get(p, "compute"));
    let mut real_placements = std::collections::HashSet::new();
    for (name, _) in entries(services) {
        let Some(d) = get(deployment, &name) else {
            continue;
        };
        for (pl, entry) in entries(d) {
            real_placements.insert(pl.clone());
            let profile = get(entry, "profile").and_then(Value::as_str).unwrap_or("");
            let Some(res) = compute
                .and_then(|cm| get(cm, profile))
                .and_then(|p| get(p, "resources"))
            else {
                continue;
            };
            let rp = vec![
                Seg::Key("profiles".into()),
                Seg::Key("compute".into()),
                Seg::Key(profile.to_string()),
                Seg::Key("resources".into()),
            ];
            if let Some(s) = get(res, "memory")
                .and_then(|m| get(m, "size"))
                .and_then(Value::as_str)
                && !size_ok(s)
            {
                c.push(
                    &with(&with(&rp, "memory"), "size"),
                    format!("{s:?} is not a size: a number and a unit, such as 512Mi or 1Gi"),
                );
            }
            let vols = volumes(sdl, profile);
            for (i, v) in vols.iter().enumerate() {
                if let Some(s) = get(v, "size").and_then(Value::as_str)
                    && !size_ok(s)
                {
                    c.push(
                        &with(&at(&with(&rp, "storage"), i), "size"),
                        format!("{s:?} is not a size: a number and a unit, such as 512Mi or 1Gi"),
                    );
                }
            }
        }
    }
    for (name, d) in entries(deployment) {
        if get(services, &name).is_some() {
            continue;
        }
        for (pl, _) in entries(d) {
            if real_placements.contains(&pl) {
                c.push(
                    &[Seg::Key("deployment".into()), Seg::Key(name.clone())],
                    format!("deploys {name:?}, which is not in services"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_sdk() {
        assert!(size_ok("1Gi") && size_ok("1.5.5Gi") && size_ok("1GB") && size_ok("0gi"));
        assert!(!size_ok("512") && !size_ok("1 Gi") && !size_ok("-1Gi") && !size_ok(""));
    }
}
