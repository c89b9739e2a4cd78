//! The schema half of Akash's rules: the shape and value of every key (chain-sdk's JSON
//! Schema, `validateSDLInput.ts`), with its one custom rule (an IP endpoint needs `global`).

use serde_yaml_ng::Value;

use super::{
    Ctx, MAINNET_USDC, Seg, at, boolean, entries, get, int_range, kind, map, num, object, required,
    string, string_list, with,
};

pub(super) fn schema(c: &mut Ctx, sdl: &Value) {
    let root: Vec<Seg> = Vec::new();
    if map(sdl).is_none() {
        c.push(
            &root,
            "the SDL must be a mapping (version, services, profiles, deployment)",
        );
        return;
    }
    object(
        c,
        sdl,
        &root,
        &[
            "version",
            "services",
            "profiles",
            "deployment",
            "endpoints",
            "include",
        ],
    );
    required(
        c,
        sdl,
        &root,
        &["version", "services", "profiles", "deployment"],
    );
    if let Some(v) = get(sdl, "version") {
        let p = with(&root, "version");
        match v {
            Value::String(s) if s == "2.0" || s == "2.1" => {}
            Value::String(s) => c.push(&p, format!("{s:?}: use \"2.0\" or \"2.1\"")),
            other => c.push(
                &p,
                format!(
                    "must be the string \"2.0\" or \"2.1\" (quoted), not {}",
                    kind(other)
                ),
            ),
        }
    }
    if let Some(v) = get(sdl, "include") {
        string_list(c, v, &with(&root, "include"), false);
    }
    if let Some(s) = get(sdl, "services") {
        let p = with(&root, "services");
        if map(s).is_none() {
            c.push(&p, format!("must be a mapping, not {}", kind(s)));
        }
        for (name, svc) in entries(s) {
            service(c, svc, &with(&p, &name));
        }
    }
    if let Some(e) = get(sdl, "endpoints") {
        let p = with(&root, "endpoints");
        if map(e).is_none() {
            c.push(&p, format!("must be a mapping, not {}", kind(e)));
        }
        for (name, ep) in entries(e) {
            let q = with(&p, &name);
            let ok = name.len() >= 2
                && name.starts_with(|ch: char| ch.is_ascii_lowercase())
                && name.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                });
            if !ok {
                c.push(
                    &q,
                    "endpoint names are lower-case letters, digits, - and _, starting with a letter, at least 2 characters",
                );
            }
            if object(c, ep, &q, &["kind"]) {
                required(c, ep, &q, &["kind"]);
                if let Some(k) = get(ep, "kind")
                    && !matches!(k, Value::String(s) if s == "ip")
                {
                    c.push(&with(&q, "kind"), "must be ip");
                }
            }
        }
    }
    if let Some(pr) = get(sdl, "profiles") {
        profiles(c, pr, &with(&root, "profiles"));
    }
    if let Some(d) = get(sdl, "deployment") {
        let p = with(&root, "deployment");
        if map(d).is_none() {
            c.push(&p, format!("must be a mapping, not {}", kind(d)));
        }
        for (svc, placements) in entries(d) {
            let q = with(&p, &svc);
            if map(placements).is_none() {
                c.push(&q, format!("must be a mapping, not {}", kind(placements)));
                continue;
            }
            for (pl, entry) in entries(placements) {
                let r = with(&q, &pl);
                if !object(c, entry, &r, &["profile", "count"]) {
                    continue;
                }
                required(c, entry, &r, &["profile", "count"]);
                if let Some(v) = get(entry, "profile") {
                    string(c, v, &with(&r, "profile"), 0);
                }
                if let Some(v) = get(entry, "count") {
                    int_range(c, v, &with(&r, "count"), 1.0, None);
                }
            }
        }
    }
}

fn service(c: &mut Ctx, svc: &Value, p: &[Seg]) {
    if !object(
        c,
        svc,
        p,
        &[
            "image",
            "command",
            "args",
            "env",
            "expose",
            "params",
            "credentials",
            "dependencies",
        ],
    ) {
        return;
    }
    required(c, svc, p, &["image"]);
    if let Some(v) = get(svc, "image") {
        string(c, v, &with(p, "image"), 1);
    }
    for k in ["command", "args", "env"] {
        if let Some(v) = get(svc, k) {
            string_list(c, v, &with(p, k), true);
        }
    }
    if let Some(d) = get(svc, "dependencies") {
        let q = with(p, "dependencies");
        match d {
            Value::Sequence(items) => {
                for (i, it) in items.iter().enumerate() {
                    let r = at(&q, i);
                    if object(c, it, &r, &["service"])
                        && let Some(s) = get(it, "service")
                    {
                        string(c, s, &with(&r, "service"), 0);
                    }
                }
            }
            other => c.push(&q, format!("must be a list, not {}", kind(other))),
        }
    }
    if let Some(cr) = get(svc, "credentials") {
        let q = with(p, "credentials");
        if object(c, cr, &q, &["host", "username", "password", "email"]) {
            required(c, cr, &q, &["host", "username", "password"]);
            for (k, min) in [("host", 1), ("username", 1), ("password", 6), ("email", 5)] {
                if let Some(v) = get(cr, k) {
                    string(c, v, &with(&q, k), min);
                }
            }
        }
    }
    if let Some(e) = get(svc, "expose") {
        let q = with(p, "expose");
        match e {
            Value::Sequence(items) => {
                for (i, it) in items.iter().enumerate() {
                    expose(c, it, &at(&q, i));
                }
            }
            other => c.push(&q, format!("must be a list, not {}", kind(other))),
        }
    }
    if let Some(pa) = get(svc, "params") {
        let q = with(p, "params");
        if object(c, pa, &q, &["storage", "permissions"]) {
            if let Some(st) = get(pa, "storage") {
                let r = with(&q, "storage");
                if map(st).is_none() {
                    c.push(&r, format!("must be a mapping, not {}", kind(st)));
                }
                for (vol, m) in entries(st) {
                    let s = with(&r, &vol);
                    if !object(c, m, &s, &["mount", "readOnly"]) {
                        continue;
                    }
                    if let Some(mv) = get(m, "mount")
                        && let Some(path) = string(c, mv, &with(&s, "mount"), 1)
                        && !path.starts_with('/')
                    {
                        c.push(
                            &with(&s, "mount"),
                            format!("{path:?} must be an absolute path"),
                        );
                    }
                    if let Some(ro) = get(m, "readOnly") {
                        boolean(c, ro, &with(&s, "readOnly"));
                    }
                }
            }
            if let Some(pe) = get(pa, "permissions") {
                let r = with(&q, "permissions");
                if object(c, pe, &r, &["read"])
                    && let Some(rd) = get(pe, "read")
                {
                    match rd {
                        Value::Sequence(items) => {
                            for (i, it) in items.iter().enumerate() {
                                if !matches!(it, Value::String(s) if s == "deployment" || s == "logs")
                                {
                                    c.push(&at(&with(&r, "read"), i), "must be deployment or logs");
                                }
                            }
                        }
                        other => c.push(
                            &with(&r, "read"),
                            format!("must be a list, not {}", kind(other)),
                        ),
                    }
                }
            }
        }
    }
}

const NEXT_CASES: &[&str] = &[
    "error", "timeout", "500", "502", "503", "504", "403", "404", "429",
];

fn expose(c: &mut Ctx, e: &Value, p: &[Seg]) {
    if !object(
        c,
        e,
        p,
        &["port", "as", "proto", "accept", "to", "http_options"],
    ) {
        return;
    }
    required(c, e, p, &["port"]);
    for k in ["port", "as"] {
        if let Some(v) = get(e, k) {
            int_range(c, v, &with(p, k), 1.0, Some(65535.0));
        }
    }
    if let Some(v) = get(e, "proto")
        && !matches!(v, Value::String(s) if ["TCP", "UDP", "tcp", "udp"].contains(&s.as_str()))
    {
        c.push(&with(p, "proto"), "must be TCP or UDP (or tcp, udp)");
    }
    if let Some(v) = get(e, "accept") {
        string_list(c, v, &with(p, "accept"), false);
    }
    if let Some(to) = get(e, "to") {
        let q = with(p, "to");
        match to {
            Value::Sequence(items) => {
                for (i, t) in items.iter().enumerate() {
                    let r = at(&q, i);
                    if !object(c, t, &r, &["global", "service", "ip"]) {
                        continue;
                    }
                    if let Some(g) = get(t, "global") {
                        boolean(c, g, &with(&r, "global"));
                    }
                    if let Some(s) = get(t, "service") {
                        string(c, s, &with(&r, "service"), 0);
                    }
                    if let Some(ip) = get(t, "ip")
                        && string(c, ip, &with(&r, "ip"), 1).is_some()
                        && !matches!(get(t, "global"), Some(Value::Bool(true)))
                    {
                        c.push(&r, "an IP endpoint needs global: true");
                    }
                }
            }
            other => c.push(&q, format!("must be a list, not {}", kind(other))),
        }
    }
    if let Some(h) = get(e, "http_options") {
        let q = with(p, "http_options");
        if !object(
            c,
            h,
            &q,
            &[
                "max_body_size",
                "read_timeout",
                "send_timeout",
                "next_tries",
                "next_timeout",
                "next_cases",
            ],
        ) {
            return;
        }
        for (k, hi) in [
            ("max_body_size", Some(104_857_600.0)),
            ("read_timeout", Some(60_000.0)),
            ("send_timeout", Some(60_000.0)),
            ("next_tries", None),
            ("next_timeout", None),
        ] {
            if let Some(v) = get(h, k) {
                int_range(c, v, &with(&q, k), 0.0, hi);
            }
        }
        if let Some(nc) = get(h, "next_cases") {
            let r = with(&q, "next_cases");
            match nc {
                Value::Sequence(items) => {
                    let strs: Vec<Option<&str>> = items.iter().map(|i| i.as_str()).collect();
                    let only_off = strs.len() == 1 && strs[0] == Some("off");
                    let cases = strs
                        .iter()
                        .all(|s| s.is_some_and(|s| NEXT_CASES.contains(&s)));
                    if !only_off && !cases {
                        c.push(
                            &r,
                            format!(
                                "must be [off] alone, or a list of {} (strings)",
                                NEXT_CASES.join(", ")
                            ),
                        );
                    }
                }
                other => c.push(&r, format!("must be a list, not {}", kind(other))),
            }
        }
    }
}

fn profiles(c: &mut Ctx, pr: &Value, p: &[Seg]) {
    if !object(c, pr, p, &["compute", "placement"]) {
        return;
    }
    required(c, pr, p, &["compute", "placement"]);
    if let Some(cm) = get(pr, "compute") {
        let q = with(p, "compute");
        if map(cm).is_none() {
            c.push(&q, format!("must be a mapping, not {}", kind(cm)));
        }
        for (name, prof) in entries(cm) {
            let r = with(&q, &name);
            if !object(c, prof, &r, &["resources"]) {
                continue;
            }
            required(c, prof, &r, &["resources"]);
            if let Some(res) = get(prof, "resources") {
                resources(c, res, &with(&r, "resources"));
            }
        }
    }
    if let Some(pl) = get(pr, "placement") {
        let q = with(p, "placement");
        if map(pl).is_none() {
            c.push(&q, format!("must be a mapping, not {}", kind(pl)));
        }
        for (name, place) in entries(pl) {
            let r = with(&q, &name);
            if !object(c, place, &r, &["attributes", "pricing", "signedBy"]) {
                continue;
            }
            required(c, place, &r, &["pricing"]);
            if let Some(a) = get(place, "attributes")
                && map(a).is_none()
            {
                c.push(
                    &with(&r, "attributes"),
                    format!("must be a mapping, not {}", kind(a)),
                );
            }
            if let Some(sb) = get(place, "signedBy") {
                let s = with(&r, "signedBy");
                if object(c, sb, &s, &["allOf", "anyOf"]) {
                    for k in ["allOf", "anyOf"] {
                        if let Some(v) = get(sb, k) {
                            string_list(c, v, &with(&s, k), false);
                        }
                    }
                }
            }
            if let Some(pricing) = get(place, "pricing") {
                let s = with(&r, "pricing");
                if map(pricing).is_none() {
                    c.push(&s, format!("must be a mapping, not {}", kind(pricing)));
                }
                for (prof, price) in entries(pricing) {
                    let t = with(&s, &prof);
                    if !object(c, price, &t, &["denom", "amount"]) {
                        continue;
                    }
                    required(c, price, &t, &["denom", "amount"]);
                    if let Some(d) = get(price, "denom")
                        && let Some(d) = string(c, d, &with(&t, "denom"), 0)
                        && !(d == "uakt" || d == "uact" || d.starts_with("ibc/"))
                    {
                        c.push(
                            &with(&t, "denom"),
                            format!("{d:?}: use uakt, uact or the USDC denom {MAINNET_USDC}"),
                        );
                    }
                    if let Some(a) = get(price, "amount") {
                        let ok = match a {
                            Value::String(s) => decimal(s),
                            Value::Number(_) => num(a).is_some_and(|x| x >= 0.0),
                            _ => false,
                        };
                        if !ok {
                            c.push(
                                &with(&t, "amount"),
                                "must be a number of at least 0 (or such a number as a string)",
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `^[0-9]+(\.[0-9]+)?$`
fn decimal(s: &str) -> bool {
    let (a, b) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    !a.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.is_none_or(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()))
}

/// `^[0-9]+(\.[0-9]+)?[a-zA-Z]*$` and not `^0+(\.0+)?m?$`.
fn cpu_string(s: &str) -> bool {
    let num_end = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(num_end);
    if !decimal(n) || !unit.bytes().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    let zero = n.bytes().all(|c| c == b'0' || c == b'.');
    !(zero && (unit.is_empty() || unit == "m"))
}

fn resources(c: &mut Ctx, res: &Value, p: &[Seg]) {
    if !object(c, res, p, &["cpu", "memory", "storage", "gpu"]) {
        return;
    }
    required(c, res, p, &["cpu", "memory", "storage"]);
    if let Some(cpu) = get(res, "cpu") {
        let q = with(p, "cpu");
        if object(c, cpu, &q, &["units", "attributes"]) {
            required(c, cpu, &q, &["units"]);
            if let Some(u) = get(cpu, "units") {
                let ok = match u {
                    Value::String(s) => cpu_string(s),
                    Value::Number(_) => num(u).is_some_and(|x| x > 0.0),
                    _ => false,
                };
                if !ok {
                    c.push(
                        &with(&q, "units"),
                        "must be a number greater than 0, or a string such as \"0.5\" or \"500m\"",
                    );
                }
            }
            if let Some(a) = get(cpu, "attributes")
                && map(a).is_none()
            {
                c.push(
                    &with(&q, "attributes"),
                    format!("must be a mapping, not {}", kind(a)),
                );
            }
        }
    }
    if let Some(m) = get(res, "memory") {
        let q = with(p, "memory");
        if object(c, m, &q, &["size"]) {
            required(c, m, &q, &["size"]);
            if let Some(s) = get(m, "size") {
                string(c, s, &with(&q, "size"), 0);
            }
        }
    }
    if let Some(st) = get(res, "storage") {
        let q = with(p, "storage");
        match st {
            Value::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    volume(c, v, &at(&q, i));
                }
            }
            Value::Mapping(_) => volume(c, st, &q),
            other => c.push(
                &q,
                format!("must be a volume or a list of volumes, not {}", kind(other)),
            ),
        }
    }
    if let Some(g) = get(res, "gpu") {
        let q = with(p, "gpu");
        if !object(c, g, &q, &["units", "attributes"]) {
            return;
        }
        required(c, g, &q, &["units"]);
        if let Some(u) = get(g, "units")
            && !matches!(u, Value::String(_) | Value::Number(_))
        {
            c.push(
                &with(&q, "units"),
                format!("must be a number or a string, not {}", kind(u)),
            );
        }
        if let Some(a) = get(g, "attributes") {
            let r = with(&q, "attributes");
            if object(c, a, &r, &["vendor"])
                && let Some(v) = get(a, "vendor")
            {
                let s = with(&r, "vendor");
                if object(c, v, &s, &["nvidia"]) {
                    if map(v).is_some_and(|m| m.is_empty()) {
                        c.push(&s, "must name a vendor (nvidia)");
                    }
                    if let Some(n) = get(v, "nvidia") {
                        let t = with(&s, "nvidia");
                        match n {
                            Value::Null => {}
                            Value::Sequence(models) => {
                                for (i, m) in models.iter().enumerate() {
                                    let u = at(&t, i);
                                    if !object(c, m, &u, &["model", "ram", "interface"]) {
                                        continue;
                                    }
                                    for k in ["model", "ram"] {
                                        if let Some(x) = get(m, k) {
                                            string(c, x, &with(&u, k), 0);
                                        }
                                    }
                                    if let Some(x) = get(m, "interface")
                                        && !matches!(x, Value::String(s) if s == "pcie" || s == "sxm")
                                    {
                                        c.push(&with(&u, "interface"), "must be pcie or sxm");
                                    }
                                }
                            }
                            other => c.push(
                                &t,
                                format!(
                                    "must be null (any model) or a list of models, not {}",
                                    kind(other)
                                ),
                            ),
                        }
                    }
                }
            }
        }
    }
}

fn volume(c: &mut Ctx, v: &Value, p: &[Seg]) {
    if !object(c, v, p, &["size", "name", "attributes"]) {
        return;
    }
    required(c, v, p, &["size"]);
    for k in ["size", "name"] {
        if let Some(x) = get(v, k) {
            string(c, x, &with(p, k), 0);
        }
    }
    if let Some(a) = get(v, "attributes") {
        let q = with(p, "attributes");
        if !object(c, a, &q, &["class", "persistent"]) {
            return;
        }
        if let Some(cl) = get(a, "class") {
            string(c, cl, &with(&q, "class"), 0);
        }
        if let Some(pe) = get(a, "persistent")
            && !matches!(pe, Value::Bool(_) | Value::String(_))
        {
            c.push(
                &with(&q, "persistent"),
                format!("must be true or false, not {}", kind(pe)),
            );
        }
        let ram = matches!(get(a, "class"), Some(Value::String(s)) if s == "ram");
        let persistent = matches!(get(a, "persistent"), Some(Value::Bool(true)))
            || matches!(get(a, "persistent"), Some(Value::String(s)) if s == "true");
        if ram && persistent {
            c.push(&q, "class ram (memory) can never be persistent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_units_follow_the_sdk() {
        assert!(cpu_string("0.5") && cpu_string("100m") && cpu_string("1.5x"));
        assert!(!cpu_string("0") && !cpu_string("0m") && !cpu_string("0.0") && !cpu_string("abc"));
        assert!(!cpu_string("1 m") && !cpu_string("1e3"));
    }
}
