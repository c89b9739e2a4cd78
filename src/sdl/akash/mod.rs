//! Akash's own SDL rules, as its validator enforces them (npm `@akashnetwork/chain-sdk`,
//! `generateManifest(sdl, "mainnet")` plus manifest and deployment-group building): a file this
//! module accepts is one Akash's tooling accepts, and the reverse. `tests/sdl_diff.rs` holds the
//! two to that on hundreds of seeded mutations; `tests/sdl-validator/RULES.md` is the survey of
//! the JS source this follows.
//!
//! Where Akash's Go parser differs (it only logs schema errors, and has rules of its own, such
//! as the storage class list), this follows the JS validator: it is the one that rejects, and
//! the one Akash Console and the deploy tools run. The Go-only rules are lifeboat's warnings
//! ([`super::rules`]).
//!
//! As in the JS, schema problems hide semantic ones: the semantic rules run only on a file whose
//! shape is right. Every problem carries the line of the offending key, when it can be found.

mod schema;
mod semantic;

use serde_yaml_ng::Value;

/// Mainnet's USDC denomination (chain-sdk `src/network/config.ts`).
pub const MAINNET_USDC: &str =
    "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1";

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending key (or its nearest enclosing one found).
    pub line: Option<usize>,
    /// Where: `services.web.expose[0].port`.
    pub path: String,
    /// What is wrong and what Akash wants.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) struct Ctx<'t> {
    pub(super) text: &'t str,
    pub(super) out: Vec<Problem>,
}

impl Ctx<'_> {
    pub(super) fn push(&mut self, path: &[Seg], message: impl Into<String>) {
        self.out.push(Problem {
            line: line_of(self.text, path),
            path: show(path),
            message: message.into(),
        });
    }
}

pub(super) fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub(super) fn with(path: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(Seg::Key(k.to_string()));
    p
}

pub(super) fn at(path: &[Seg], i: usize) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(Seg::Index(i));
    p
}

/// The line of `path` in block-style YAML: each key searched below its parent, within the
/// parent's indentation. A key written in flow style (`{port: 80}`) gives its enclosing line.
pub(super) fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let mut start = 0usize;
    let mut parent_indent: isize = -1;
    let mut found: Option<usize> = None;
    for seg in path {
        let mut hit = None;
        let mut count = 0usize;
        let mut item_indent: Option<usize> = None;
        for (i, l) in lines.iter().enumerate().skip(start) {
            if !content(l) {
                continue;
            }
            let ind = indent(l) as isize;
            if found.is_some() && i > start && ind <= parent_indent {
                break;
            }
            let t = l.trim_start();
            match seg {
                Seg::Key(k) => {
                    let t = t.trim_start_matches("- ");
                    let bare = t
                        .strip_prefix(k.as_str())
                        .or_else(|| t.strip_prefix(&format!("\"{k}\"")))
                        .or_else(|| t.strip_prefix(&format!("'{k}'")));
                    if bare.is_some_and(|r| r.starts_with(':')) {
                        hit = Some((i, ind));
                        break;
                    }
                }
                Seg::Index(n) => {
                    if t.starts_with('-') {
                        let ii = indent(l);
                        if item_indent.is_none_or(|x| x == ii) {
                            item_indent = Some(ii);
                            if count == *n {
                                hit = Some((i, ind));
                                break;
                            }
                            count += 1;
                        }
                    }
                }
            }
        }
        match hit {
            Some((i, ind)) => {
                found = Some(i);
                start = i;
                parent_indent = ind;
            }
            None => break,
        }
    }
    found.map(|i| i + 1)
}

pub(super) fn map(v: &Value) -> Option<&serde_yaml_ng::Mapping> {
    v.as_mapping()
}

pub(super) fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

pub(super) fn entries(v: &Value) -> Vec<(String, &Value)> {
    map(v)
        .map(|m| m.iter().map(|(k, v)| (key_text(k), v)).collect())
        .unwrap_or_default()
}

pub(super) fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    map(v)?
        .iter()
        .find(|(kk, _)| key_text(kk) == k)
        .map(|(_, v)| v)
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(super) fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// JSON Schema's "integer", as ajv has it: a number with no fraction (`80.0` and `.inf` count).
pub(super) fn integer(v: &Value) -> Option<f64> {
    let x = num(v)?;
    (!x.is_nan() && (x.is_infinite() || x.fract() == 0.0)).then_some(x)
}

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Reports keys of `v` (a mapping) outside `allowed`; a non-mapping is reported as such.
pub(super) fn object(c: &mut Ctx, v: &Value, path: &[Seg], allowed: &[&str]) -> bool {
    let Some(m) = map(v) else {
        c.push(path, format!("must be a mapping, not {}", kind(v)));
        return false;
    };
    for (k, _) in m {
        let k = key_text(k);
        if !allowed.contains(&k.as_str()) {
            c.push(
                &with(path, &k),
                format!("unknown key {k:?}: Akash allows {}", allowed.join(", ")),
            );
        }
    }
    true
}

pub(super) fn required(c: &mut Ctx, v: &Value, path: &[Seg], keys: &[&str]) {
    for k in keys {
        if get(v, k).is_none() {
            c.push(path, format!("missing required key {k:?}"));
        }
    }
}

pub(super) fn string(c: &mut Ctx, v: &Value, path: &[Seg], min: usize) -> Option<String> {
    match v {
        Value::String(s) if chars(s) >= min => Some(s.clone()),
        Value::String(_) => {
            c.push(path, format!("must be at least {min} characters long"));
            None
        }
        other => {
            c.push(path, format!("must be a string, not {}", kind(other)));
            None
        }
    }
}

pub(super) fn int_range(c: &mut Ctx, v: &Value, path: &[Seg], lo: f64, hi: Option<f64>) {
    match integer(v) {
        None => c.push(path, format!("must be an integer, not {}", kind(v))),
        Some(x) if x < lo => c.push(path, format!("must be at least {lo}")),
        Some(x) if hi.is_some_and(|h| x > h) => {
            c.push(path, format!("must be at most {}", hi.unwrap_or_default()))
        }
        Some(_) => {}
    }
}

pub(super) fn string_list(c: &mut Ctx, v: &Value, path: &[Seg], nullable: bool) {
    match v {
        Value::Null if nullable => {}
        Value::Sequence(items) => {
            for (i, it) in items.iter().enumerate() {
                if !matches!(it, Value::String(_)) {
                    c.push(&at(path, i), format!("must be a string, not {}", kind(it)));
                }
            }
        }
        other => c.push(
            path,
            format!("must be a list of strings, not {}", kind(other)),
        ),
    }
}

pub(super) fn boolean(c: &mut Ctx, v: &Value, path: &[Seg]) {
    if !matches!(v, Value::Bool(_)) {
        c.push(
            path,
            format!(
                "must be true or false, not {} (YAML 1.2: yes/no/on/off are strings)",
                kind(v)
            ),
        );
    }
}

/// Every problem Akash's validator finds in `text`; empty when Akash accepts it.
pub fn validate(text: &str) -> Vec<Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let sdl: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return vec![Problem {
                line: e.location().map(|l| l.line()),
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }];
        }
    };
    let mut c = Ctx {
        text,
        out: Vec::new(),
    };
    schema::schema(&mut c, &sdl);
    if c.out.is_empty() {
        semantic::semantic(&mut c, &sdl);
    }
    if c.out.is_empty() {
        semantic::manifest(&mut c, &sdl);
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_in_block_yaml() {
        let t = "version: \"2.0\"\nservices:\n  web:\n    image: x\n    expose:\n      - port: 80\n      - port: 70000\n";
        let p = vec![
            Seg::Key("services".into()),
            Seg::Key("web".into()),
            Seg::Key("expose".into()),
            Seg::Index(1),
            Seg::Key("port".into()),
        ];
        assert_eq!(line_of(t, &p), Some(7));
        assert_eq!(line_of(t, &p[..3]), Some(5));
    }
}
