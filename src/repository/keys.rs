//! Key objects (`keys/<id>`): the master secret wrapped under a password-derived key. Several may
//! exist; any one opens the repository. Plain JSON so a reader can see the KDF parameters before it
//! has a key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{MasterKey, SealKey, random_bytes};
use crate::error::{Error, Result};

/// Highest key-object version this build reads.
pub const KEY_VERSION: u32 = 1;

/// Argon2id cost parameters, stored in each key so they can be raised later without a migration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane: OWASP's recommended Argon2id floor. Every backup and restore of
    /// a sidecar pays this once per process, and its memory sets the agent's RSS floor, so it is
    /// the cheapest setting still memory-hard enough for offline guessing of a leaked key object
    /// to be expensive. `init --kdf-memory-kib/--kdf-time` raise it; costs are stored per key.
    fn default() -> Self {
        KdfParams {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kdf {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// The stored JSON of a key object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version of this key object.
    pub version: u32,
    /// `password` in v1; `x25519` is reserved for write-only keys.
    pub kind: String,
    /// When the key was added.
    pub created: DateTime<Utc>,
    /// Who added it, for `key list`.
    pub hostname: String,
    /// Who added it, for `key list`.
    pub username: String,
    kdf: Kdf,
    /// Envelope of the 32-byte master secret under the Argon2id output.
    master: String,
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn create(master: &MasterKey, password: &str, params: KdfParams) -> Result<KeyFile> {
        let salt: [u8; 16] = random_bytes();
        let wrap = derive(password, &salt, params)?;
        Ok(KeyFile {
            version: KEY_VERSION,
            kind: "password".into(),
            created: Utc::now(),
            hostname: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            kdf: Kdf {
                algorithm: "argon2id".into(),
                params,
                salt: B64.encode(salt),
            },
            master: B64.encode(wrap.seal(master.secret())),
        })
    }

    /// Parses a stored key object; `name` is used in errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<KeyFile> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(name, format!("not a key object: {e}")))?;
        if v.version > KEY_VERSION {
            return Err(Error::NewerFormat {
                object: name.into(),
                found: v.version,
                supported: KEY_VERSION,
            });
        }
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(name, format!("not a key object: {e}")))
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key serializes")
    }

    /// Unwraps the master key. `Ok(None)` means this key does not open with `password`.
    pub fn open(&self, password: &str, name: &str) -> Result<Option<MasterKey>> {
        if self.kind != "password" || self.kdf.algorithm != "argon2id" {
            return Ok(None);
        }
        let salt = B64
            .decode(&self.kdf.salt)
            .map_err(|_| Error::corrupt(name, "salt is not base64"))?;
        let wrapped = B64
            .decode(&self.master)
            .map_err(|_| Error::corrupt(name, "wrapped key is not base64"))?;
        let wrap = derive(password, &salt, self.kdf.params)?;
        match wrap.open(&wrapped, &|| name.to_string()) {
            Ok(secret) if secret.len() == 32 => {
                let mut s = [0u8; 32];
                s.copy_from_slice(&secret);
                Ok(Some(MasterKey::from_secret(s)))
            }
            Ok(_) => Err(Error::corrupt(name, "wrapped key has the wrong length")),
            Err(_) => Ok(None),
        }
    }
}

fn derive(password: &str, salt: &[u8], p: KdfParams) -> Result<SealKey> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::invalid(format!("bad Argon2id parameters {p:?}: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| Error::invalid(format!("cannot derive a key from the password: {e}")))?;
    Ok(SealKey::new(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn right_password_opens_wrong_does_not() {
        let m = MasterKey::generate();
        let k = KeyFile::create(&m, "secret", FAST).unwrap();
        let parsed = KeyFile::parse(&k.to_bytes(), "keys/x").unwrap();
        let opened = parsed.open("secret", "keys/x").unwrap().unwrap();
        assert_eq!(opened.secret(), m.secret());
        assert!(parsed.open("Secret", "keys/x").unwrap().is_none());
    }

    #[test]
    fn newer_version_is_reported() {
        let m = MasterKey::generate();
        let mut k = KeyFile::create(&m, "pw", FAST).unwrap();
        k.version = 9;
        let err = KeyFile::parse(&k.to_bytes(), "keys/x").unwrap_err();
        assert!(matches!(err, Error::NewerFormat { found: 9, .. }), "{err}");
    }
}
