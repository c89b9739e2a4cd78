//! Sealing and opening: the one place that encrypts. Every encrypted item in the repository is an
//! *envelope*: `tag(1) || nonce(24) || ciphertext || poly1305(16)`, XChaCha20-Poly1305 with a random
//! 192-bit nonce (random nonces are safe at this size, so no counter state is shared between
//! writers). Tag 0x01 is the symmetric data key; 0x02 is reserved for write-only keys sealed to a
//! public key (see docs/FORMAT.md).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};
use crate::id::Id;

/// Envelope tag for items sealed with the repository's symmetric data key.
pub const ENVELOPE_SYMMETRIC: u8 = 0x01;
/// Bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = 1 + 24 + 16;

const CTX_DATA_KEY: &str = "lifeboat 2026-11 v1 data encryption key";
const CTX_ID_KEY: &str = "lifeboat 2026-11 v1 blob id key";

/// Fills a buffer from the OS random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is not recoverable and not the user's fault; there is nothing to retry.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// A 256-bit symmetric key that can seal and open envelopes.
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
}

impl SealKey {
    /// Builds a key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).expect("32-byte key");
        SealKey { cipher }
    }

    /// Seals `plaintext` into a new envelope.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Appends an envelope of `plaintext` to `out` (lets hot paths reuse buffers).
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce_bytes: [u8; 24] = random_bytes();
        let nonce = XNonce::from(nonce_bytes);
        out.push(ENVELOPE_SYMMETRIC);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &[], (&mut out[start..]).into())
            .expect("plaintext within XChaCha20 limits");
        out.extend_from_slice(tag.as_slice());
    }

    /// Opens an envelope. `what` names the object for the error message.
    pub fn open(&self, envelope: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if envelope.len() < ENVELOPE_OVERHEAD {
            return Err(Error::corrupt(
                what(),
                format!(
                    "encrypted item of {} bytes is shorter than its header",
                    envelope.len()
                ),
            ));
        }
        if envelope[0] != ENVELOPE_SYMMETRIC {
            return Err(Error::corrupt(
                what(),
                format!("unknown envelope type {:#04x}", envelope[0]),
            ));
        }
        let nonce = XNonce::try_from(&envelope[1..25]).expect("24 bytes");
        let body = &envelope[25..envelope.len() - 16];
        let tag = Tag::try_from(&envelope[envelope.len() - 16..]).expect("16 bytes");
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, &[], plain.as_mut_slice().into(), &tag)
            .map_err(|_| {
                Error::corrupt(
                    what(),
                    "authentication failed (bytes were changed, or it belongs to another repository)",
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
    data: SealKey,
    id_key: [u8; 32],
}

impl MasterKey {
    /// A fresh random master key for `init`.
    pub fn generate() -> Self {
        Self::from_secret(random_bytes())
    }

    /// Rebuilds the derived keys from the stored secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let data = SealKey::new(&blake3::derive_key(CTX_DATA_KEY, &secret));
        let id_key = blake3::derive_key(CTX_ID_KEY, &secret);
        MasterKey {
            secret,
            data,
            id_key,
        }
    }

    /// The raw secret, only for wrapping into key objects.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The data key that seals blobs, pack headers, indexes, snapshots and the config.
    pub fn data(&self) -> &SealKey {
        &self.data
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
        let env = k.data().seal(b"hello world");
        assert_eq!(env.len(), 11 + ENVELOPE_OVERHEAD);
        assert_eq!(k.data().open(&env, &|| "x".into()).unwrap(), b"hello world");
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x40;
            assert!(k.data().open(&bad, &|| "x".into()).is_err(), "flip at {i}");
        }
        let other = MasterKey::generate();
        let err = other.data().open(&env, &|| "obj".into()).unwrap_err();
        assert!(err.to_string().contains("obj"));
        assert!(k.data().open(&env[..10], &|| "x".into()).is_err());
    }

    #[test]
    fn two_seals_differ_but_blob_ids_are_deterministic_per_key() {
        let k = MasterKey::generate();
        assert_ne!(k.data().seal(b"a"), k.data().seal(b"a"));
        assert_eq!(k.blob_id(b"a"), k.blob_id(b"a"));
        let k2 = MasterKey::from_secret(*k.secret());
        assert_eq!(k.blob_id(b"a"), k2.blob_id(b"a"));
        assert_ne!(k.blob_id(b"a"), MasterKey::generate().blob_id(b"a"));
    }
}
