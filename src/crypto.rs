//! Sealing and opening: the one place that encrypts. Every encrypted item in the repository is an
//! *envelope*: `tag(1) || nonce(24) || ciphertext || poly1305(16)`, XChaCha20-Poly1305 with a random
//! 192-bit nonce (random nonces are safe at this size, so no counter state is shared between
//! writers).
//!
//! Format 2 (tag 0x03) binds every envelope to what it is: each [`Kind`] of object has its own
//! subkey, and the associated data names the kind and, where the name is known before decryption
//! (a blob's id, a lease's key, the `config`), the name. A ciphertext moved to another kind or
//! another name fails authentication, so a file in the volume that happens to look like an index
//! cannot be cut out of a pack and served as one. Tag 0x01 is format 1 (no associated data, one
//! key), which this build refuses with a message naming the version; 0x02 stays reserved for
//! write-only keys sealed to a public key (see docs/FORMAT.md).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};
use crate::id::Id;

/// Envelope tag of format 1 (no associated data). Recognised only to name it in errors.
pub const ENVELOPE_V1: u8 = 0x01;
/// Envelope tag of format 2: a per-kind subkey and associated data naming kind and name.
pub const ENVELOPE_V2: u8 = 0x03;
/// Bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = 1 + 24 + 16;

const CTX_ID_KEY: &str = "lifeboat 2026-11 v1 blob id key";

/// What a sealed item is. Each kind has its own subkey and its own associated-data prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The `config` object.
    Config,
    /// The master secret inside a key object (sealed under the password-derived key).
    Key,
    /// An index object.
    Index,
    /// A snapshot object.
    Snapshot,
    /// A pack's header.
    PackHeader,
    /// A data blob (file content).
    DataBlob,
    /// A tree blob (directory listing).
    TreeBlob,
    /// A volume lease.
    Lease,
    /// A backup's writer record.
    Writer,
    /// A prune mark.
    PruneMark,
    /// An archived PostgreSQL WAL file (format 2, revision 1).
    Wal,
    /// A replicated SQLite change set or log generation header (format 2, revision 2).
    SqliteLog,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Config,
        Kind::Key,
        Kind::Index,
        Kind::Snapshot,
        Kind::PackHeader,
        Kind::DataBlob,
        Kind::TreeBlob,
        Kind::Lease,
        Kind::Writer,
        Kind::PruneMark,
        Kind::Wal,
        Kind::SqliteLog,
    ];

    /// The label used in subkey derivation and associated data (docs/FORMAT.md §4).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Index => "index",
            Kind::Snapshot => "snapshot",
            Kind::PackHeader => "pack header",
            Kind::DataBlob => "data blob",
            Kind::TreeBlob => "tree blob",
            Kind::Lease => "lease",
            Kind::Writer => "writer",
            Kind::PruneMark => "prune mark",
            Kind::Wal => "wal",
            Kind::SqliteLog => "sqlite log",
        }
    }

    fn pos(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).expect("listed")
    }
}

/// The associated data of an envelope: `"lifeboat v2" 0x00 label 0x00 name`.
fn associated_data(kind: Kind, name: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(16 + kind.label().len() + name.len());
    ad.extend_from_slice(b"lifeboat v2\0");
    ad.extend_from_slice(kind.label().as_bytes());
    ad.push(0);
    ad.extend_from_slice(name);
    ad
}

/// Fills a buffer from the OS random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is not recoverable and not the user's fault; there is nothing to retry.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// A 256-bit symmetric key that seals and opens envelopes of one [`Kind`].
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    kind: Kind,
}

impl SealKey {
    /// Builds a key for `kind` from 32 bytes.
    pub fn new(bytes: &[u8; 32], kind: Kind) -> Self {
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).expect("32-byte key");
        SealKey { cipher, kind }
    }

    /// Seals `plaintext` into a new envelope bound to `name` (empty when the object's name is
    /// its own hash and so cannot be known before sealing).
    pub fn seal(&self, name: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
        self.seal_into(name, plaintext, &mut out);
        out
    }

    /// Appends an envelope of `plaintext` to `out` (lets hot paths reuse buffers).
    pub fn seal_into(&self, name: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce_bytes: [u8; 24] = random_bytes();
        let nonce = XNonce::from(nonce_bytes);
        out.push(ENVELOPE_V2);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce,
                &associated_data(self.kind, name),
                (&mut out[start..]).into(),
            )
            .expect("plaintext within XChaCha20 limits");
        out.extend_from_slice(tag.as_slice());
    }

    /// Opens an envelope sealed for this kind and `name`. `what` names the object for the error
    /// message. Any change to the bytes, the kind or the name is an authentication failure.
    pub fn open(&self, name: &[u8], envelope: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if envelope.len() < ENVELOPE_OVERHEAD {
            return Err(Error::corrupt(
                what(),
                format!(
                    "encrypted item of {} bytes is shorter than its header",
                    envelope.len()
                ),
            ));
        }
        match envelope[0] {
            ENVELOPE_V2 => {}
            ENVELOPE_V1 => {
                return Err(Error::corrupt(
                    what(),
                    "sealed in repository format 1, which this lifeboat no longer reads",
                ));
            }
            t => {
                return Err(Error::corrupt(
                    what(),
                    format!("unknown envelope type {t:#04x}"),
                ));
            }
        }
        let nonce = XNonce::try_from(&envelope[1..25]).expect("24 bytes");
        let body = &envelope[25..envelope.len() - 16];
        let tag = Tag::try_from(&envelope[envelope.len() - 16..]).expect("16 bytes");
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_inout_detached(
                &nonce,
                &associated_data(self.kind, name),
                plain.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| {
                Error::corrupt(
                    what(),
                    format!(
                        "authentication failed as a {} (bytes were changed, moved from another object, or belong to another repository)",
                        self.kind.label()
                    ),
                )
            })?;
        Ok(plain)
    }
}

/// The repository's secret, from which every working key is derived. Only key objects store it,
/// wrapped under a password-derived key.
#[derive(Clone)]
pub struct MasterKey {
    secret: [u8; 32],
    kinds: Vec<SealKey>,
    id_key: [u8; 32],
}

impl MasterKey {
    /// A fresh random master key for `init`.
    pub fn generate() -> Self {
        Self::from_secret(random_bytes())
    }

    /// Rebuilds the derived keys from the stored secret: one subkey per [`Kind`], derived with
    /// BLAKE3's key derivation under `lifeboat 2026-11 v2 <label> key`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let kinds = Kind::ALL
            .iter()
            .map(|k| {
                let ctx = format!("lifeboat 2026-11 v2 {} key", k.label());
                SealKey::new(&blake3::derive_key(&ctx, &secret), *k)
            })
            .collect();
        let id_key = blake3::derive_key(CTX_ID_KEY, &secret);
        MasterKey {
            secret,
            kinds,
            id_key,
        }
    }

    /// The raw secret, only for wrapping into key objects.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The subkey that seals and opens items of `kind`.
    pub fn sealer(&self, kind: Kind) -> &SealKey {
        &self.kinds[kind.pos()]
    }

    /// Blob id: keyed BLAKE3 of the plaintext, so that ids reveal nothing to whoever can list the
    /// bucket (an unkeyed hash would confirm guesses about content).
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = MasterKey::generate();
        let s = k.sealer(Kind::Snapshot);
        let env = s.seal(b"", b"hello world");
        assert_eq!(env.len(), 11 + ENVELOPE_OVERHEAD);
        assert_eq!(s.open(b"", &env, &|| "x".into()).unwrap(), b"hello world");
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x40;
            assert!(s.open(b"", &bad, &|| "x".into()).is_err(), "flip at {i}");
        }
        let other = MasterKey::generate();
        let err = other
            .sealer(Kind::Snapshot)
            .open(b"", &env, &|| "obj".into())
            .unwrap_err();
        assert!(err.to_string().contains("obj"));
        assert!(s.open(b"", &env[..10], &|| "x".into()).is_err());
    }

    #[test]
    fn an_envelope_does_not_open_as_another_kind_or_name() {
        let k = MasterKey::generate();
        let env = k
            .sealer(Kind::DataBlob)
            .seal(b"id-1", b"LBIX looks like an index");
        assert!(
            k.sealer(Kind::DataBlob)
                .open(b"id-1", &env, &|| "b".into())
                .is_ok()
        );
        assert!(
            k.sealer(Kind::DataBlob)
                .open(b"id-2", &env, &|| "b".into())
                .is_err()
        );
        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::DataBlob) {
            let err = k
                .sealer(kind)
                .open(b"id-1", &env, &|| "b".into())
                .unwrap_err();
            assert!(err.to_string().contains(kind.label()), "{err}");
        }
    }

    #[test]
    fn format_1_envelopes_are_named() {
        let k = MasterKey::generate();
        let mut env = k.sealer(Kind::Config).seal(b"config", b"{}");
        env[0] = ENVELOPE_V1;
        let err = k
            .sealer(Kind::Config)
            .open(b"config", &env, &|| "config".into());
        assert!(err.unwrap_err().to_string().contains("format 1"));
    }

    #[test]
    fn two_seals_differ_but_blob_ids_are_deterministic_per_key() {
        let k = MasterKey::generate();
        let s = k.sealer(Kind::Index);
        assert_ne!(s.seal(b"", b"a"), s.seal(b"", b"a"));
        assert_eq!(k.blob_id(b"a"), k.blob_id(b"a"));
        let k2 = MasterKey::from_secret(*k.secret());
        assert_eq!(k.blob_id(b"a"), k2.blob_id(b"a"));
        assert_ne!(k.blob_id(b"a"), MasterKey::generate().blob_id(b"a"));
    }
}
