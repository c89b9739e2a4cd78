//! Key objects (`keys/<id>`): the master secret wrapped under a password-derived key. Several may
//! exist; any one opens the repository. Plain JSON so a reader can see the KDF parameters before it
//! has a key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{Kind, MasterKey, SealKey, random_bytes};
use crate::error::{Error, Result};

/// The key-object version this build reads and writes (format 2: the wrapped secret's envelope is
/// bound to the KDF parameters and salt; format-1 keys are not read).
pub const KEY_VERSION: u32 = 2;

/// Argon2id costs a key object may ask for. Anything outside is a damaged or hostile key and is
/// skipped without running the KDF: a key object must not be able to make `open` allocate 4 GiB
/// or spin for hours. 256 MiB and 16 passes is far above any sensible setting for a sidecar.
pub const KDF_BOUNDS: KdfBounds = KdfBounds {
    m_cost: (8, 256 * 1024),
    t_cost: (1, 16),
    p_cost: (1, 4),
};

/// Inclusive ranges of accepted Argon2id costs.
pub struct KdfBounds {
    /// Memory in KiB.
    pub m_cost: (u32, u32),
    /// Passes.
    pub t_cost: (u32, u32),
    /// Lanes.
    pub p_cost: (u32, u32),
}

impl KdfParams {
    /// Refuses costs outside [`KDF_BOUNDS`], naming the one that is out.
    pub fn check_bounds(&self) -> std::result::Result<(), String> {
        let b = &KDF_BOUNDS;
        for (what, v, (lo, hi)) in [
            ("memory (KiB)", self.m_cost, b.m_cost),
            ("passes", self.t_cost, b.t_cost),
            ("lanes", self.p_cost, b.p_cost),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "Argon2id {what} {v} is outside the accepted {lo}..={hi}"
                ));
            }
        }
        if self.m_cost < 8 * self.p_cost {
            return Err("Argon2id memory must be at least 8 KiB per lane".into());
        }
        Ok(())
    }
}

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
        params.check_bounds().map_err(Error::invalid)?;
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
            master: B64.encode(wrap.seal(&binding(params, &salt), master.secret())),
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
        if v.version < KEY_VERSION {
            return Err(Error::corrupt(
                name,
                format!(
                    "a format-{} key object, which this lifeboat no longer reads",
                    v.version
                ),
            ));
        }
        let k: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(name, format!("not a key object: {e}")))?;
        if k.kind == "password" {
            k.kdf
                .params
                .check_bounds()
                .map_err(|e| Error::corrupt(name, e))?;
        }
        Ok(k)
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key serializes")
    }

    /// Unwraps the master key. `Ok(None)` means this key does not open with `password`. Costs
    /// outside [`KDF_BOUNDS`] are refused as damage before any work is done.
    pub fn open(&self, password: &str, name: &str) -> Result<Option<MasterKey>> {
        if self.kind != "password" || self.kdf.algorithm != "argon2id" {
            return Ok(None);
        }
        self.kdf
            .params
            .check_bounds()
            .map_err(|e| Error::corrupt(name, e))?;
        let salt = B64
            .decode(&self.kdf.salt)
            .map_err(|_| Error::corrupt(name, "salt is not base64"))?;
        let wrapped = B64
            .decode(&self.master)
            .map_err(|_| Error::corrupt(name, "wrapped key is not base64"))?;
        let wrap = derive(password, &salt, self.kdf.params)?;
        match wrap.open(&binding(self.kdf.params, &salt), &wrapped, &|| {
            name.to_string()
        }) {
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

/// The name the wrapped secret is bound to: the KDF parameters and salt, so that a key object
/// whose costs were edited (to make guessing cheaper, say) no longer opens.
fn binding(p: KdfParams, salt: &[u8]) -> Vec<u8> {
    format!(
        "argon2id m={} t={} p={} salt={}",
        p.m_cost,
        p.t_cost,
        p.p_cost,
        hex::encode(salt)
    )
    .into_bytes()
}

fn derive(password: &str, salt: &[u8], p: KdfParams) -> Result<SealKey> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::invalid(format!("bad Argon2id parameters {p:?}: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| Error::invalid(format!("cannot derive a key from the password: {e}")))?;
    Ok(SealKey::new(&out, Kind::Key))
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
    fn costs_out_of_bounds_are_damage_and_cost_nothing() {
        let m = MasterKey::generate();
        let k = KeyFile::create(&m, "pw", FAST).unwrap();
        let text = String::from_utf8(k.to_bytes()).unwrap();
        let huge = text.replace("\"m_cost\": 64", "\"m_cost\": 4194304");
        assert_ne!(huge, text);
        let err = KeyFile::parse(huge.as_bytes(), "keys/x").unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let slow = text.replace("\"t_cost\": 1", "\"t_cost\": 1000000000");
        assert!(KeyFile::parse(slow.as_bytes(), "keys/x").is_err());
        assert!(
            KeyFile::create(
                &m,
                "pw",
                KdfParams {
                    m_cost: 1 << 30,
                    ..FAST
                }
            )
            .is_err()
        );
    }

    #[test]
    fn edited_costs_do_not_open() {
        let m = MasterKey::generate();
        let k = KeyFile::create(&m, "pw", FAST).unwrap();
        let text = String::from_utf8(k.to_bytes()).unwrap();
        let edited = text.replace("\"m_cost\": 64", "\"m_cost\": 65");
        let parsed = KeyFile::parse(edited.as_bytes(), "keys/x").unwrap();
        assert!(parsed.open("pw", "keys/x").unwrap().is_none());
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
