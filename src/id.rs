//! 32-byte identifiers. Blob ids are keyed BLAKE3 hashes of plaintext; object ids (packs, indexes,
//! snapshots, keys) are plain BLAKE3 hashes of the stored bytes, so anyone can verify an object's
//! integrity without the key, and the same bytes always land under the same name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A 256-bit identifier, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Id of stored bytes (unkeyed BLAKE3): names packs, indexes, snapshots and keys.
    pub fn of_bytes(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 8-digit short form used in listings, like restic's.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Reads 32 bytes from a slice that the caller has length-checked.
    pub fn from_slice(b: &[u8]) -> Id {
        let mut a = [0u8; 32];
        a.copy_from_slice(&b[..32]);
        Id(a)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut a = [0u8; 32];
        hex::decode_to_slice(s, &mut a)
            .map_err(|_| Error::invalid(format!("{s:?} is not a 64-digit hex id")))?;
        Ok(Id(a))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = Id::of_bytes(b"hello");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!("xyz".parse::<Id>().is_err());
        assert!(id.to_hex()[..62].parse::<Id>().is_err());
    }
}
