//! The key objects and the config copies, as a whole: adding, listing and removing keys, and
//! checking every key object and both config copies (`check` runs this; a damaged key or config
//! copy is found before the day it is the only one left).

use super::keys::{KdfParams, KeyFile};
use super::{
    CONFIG_COPY, KeyInfo, Repository, check_password, limits, parse_config, read_key_object,
};
use crate::backend::{Backend, Payload, PutMode};
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::id::Id;

impl Repository {
    /// Adds a key for `password`.
    pub fn add_key(&self, password: &str, kdf: KdfParams) -> Result<String> {
        check_password(password)?;
        let bytes = KeyFile::create(&self.key, password, kdf)?.to_bytes();
        let id = Id::of_bytes(&bytes);
        self.backend.put(
            &format!("keys/{id}"),
            Payload::Bytes(&bytes),
            PutMode::IfAbsent,
        )?;
        Ok(id.to_hex())
    }

    /// Lists key objects.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for info in self.backend.list("keys/")? {
            let k = match read_key_object(&self.backend, &info.key) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", info.key);
                    continue;
                }
            };
            out.push(KeyInfo {
                id: info.key.trim_start_matches("keys/").to_string(),
                current: info.key == self.key_name,
                username: k.username,
                hostname: k.hostname,
                created: k.created,
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Removes a key by id prefix. Refuses to remove the key in use (so the last key cannot go).
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let hits: Vec<_> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let k = match hits.as_slice() {
            [k] => *k,
            [] => return Err(Error::invalid(format!("no key with id {prefix}"))),
            _ => {
                return Err(Error::invalid(format!(
                    "several keys start with {prefix}: give more digits"
                )));
            }
        };
        if k.current {
            return Err(Error::invalid(
                "refusing to remove the key this session opened the repository with; open with another key first",
            ));
        }
        self.backend.delete(&format!("keys/{}", k.id))?;
        Ok(k.id.clone())
    }

    /// Replaces the current key with one for `new_password`.
    pub fn change_password(&self, new_password: &str, kdf: KdfParams) -> Result<String> {
        let id = self.add_key(new_password, kdf)?;
        self.backend.delete(&self.key_name)?;
        Ok(id)
    }

    /// Problems with the key objects and the config copies, one line each: a key object that does
    /// not hash to its name, does not parse or asks for out-of-bounds KDF costs; a config copy
    /// that is missing, does not authenticate, or differs from the other. Only the key that
    /// opened the repository can be tried with the password; the others are checked for form.
    pub fn check_keys_and_config(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let keys = self.backend.list("keys/")?;
        for info in &keys {
            if let Err(e) = read_key_object(&self.backend, &info.key) {
                problems.push(e.to_string());
            }
        }
        let mut configs = Vec::new();
        for name in ["config", CONFIG_COPY] {
            let opened = self
                .backend
                .get(name, limits::MAX_CONFIG)
                .and_then(|sealed| {
                    self.key
                        .sealer(Kind::Config)
                        .open(b"config", &sealed, &|| name.to_string())
                })
                .and_then(|plain| parse_config(&plain));
            match opened {
                Ok(c) => configs.push(c),
                Err(Error::NotFound { .. }) => problems.push(format!(
                    "{name} is missing: run `lifeboat repair config` to write it again from the other copy"
                )),
                Err(e) => problems.push(format!(
                    "{e}: run `lifeboat repair config` to write it again from the other copy"
                )),
            }
        }
        if configs.len() == 2 && configs[0] != configs[1] {
            problems.push(format!(
                "config and {CONFIG_COPY} authenticate but differ: one was replaced by an older copy; run `lifeboat repair config`"
            ));
        }
        Ok(problems)
    }

    /// Rewrites any config copy that is missing, damaged or different from the config this
    /// session opened with. Returns the names rewritten. Safe to run at any time: the config
    /// never changes after `init`, so the bytes written are the ones every reader expects.
    pub fn repair_config(&self) -> Result<Vec<String>> {
        let sealed = self.key.sealer(Kind::Config).seal(
            b"config",
            &serde_json::to_vec(&self.config).expect("config serializes"),
        );
        let mut fixed = Vec::new();
        for name in ["config", CONFIG_COPY] {
            let good = self
                .backend
                .get(name, limits::MAX_CONFIG)
                .and_then(|b| {
                    self.key
                        .sealer(Kind::Config)
                        .open(b"config", &b, &|| name.to_string())
                })
                .and_then(|p| parse_config(&p))
                .is_ok_and(|c| c == self.config);
            if !good {
                self.backend
                    .put(name, Payload::Bytes(&sealed), PutMode::Overwrite)?;
                fixed.push(name.to_string());
            }
        }
        Ok(fixed)
    }
}
