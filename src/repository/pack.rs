//! Pack objects (`data/<xx>/<id>`): sealed blobs back to back, then a sealed header listing them,
//! then the header's length. A pack describes itself, so the index can always be rebuilt from the
//! packs alone and a pack uploaded by an interrupted backup is found and reused by the next one.
//!
//! Layout: `blob_0 || … || blob_{n-1} || envelope(header) || u32le(len(envelope(header)))`
//! Header plaintext: `"LBPH" || u8 version=1 || u32le count || count × entry` where an entry is
//! `u8 type || u8 flags || u32le length || u32le raw_length || id[32]` (42 bytes); blob offsets are
//! the running sum of lengths from 0.

use crate::crypto::{ENVELOPE_OVERHEAD, Kind, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;

const HEADER_MAGIC: &[u8; 4] = b"LBPH";
const HEADER_VERSION: u8 = 1;
/// Bytes of one header entry.
pub const HEADER_ENTRY_LEN: usize = 42;
/// Flag bit: the blob's plaintext is a zstd frame.
pub const FLAG_ZSTD: u8 = 1;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A directory listing (tree JSON).
    Tree,
}

impl BlobType {
    /// Stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
    /// The envelope kind of a blob of this type: data and tree blobs have separate subkeys, so a
    /// data blob cannot be read as a directory listing.
    pub fn seal_kind(self) -> Kind {
        match self {
            BlobType::Data => Kind::DataBlob,
            BlobType::Tree => Kind::TreeBlob,
        }
    }
    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Keyed BLAKE3 of the plaintext.
    pub id: Id,
    /// Data or tree.
    pub kind: BlobType,
    /// Bit 0: zstd-compressed.
    pub flags: u8,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob in the pack.
    pub length: u32,
    /// Length of the plaintext after decompression.
    pub raw_length: u32,
}

impl PackEntry {
    /// Whether the sealed plaintext is a zstd frame.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

/// Builds the sealed header and trailer that end a pack holding `entries` (in pack order).
pub fn encode_header(key: &MasterKey, entries: &[PackEntry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(9 + entries.len() * HEADER_ENTRY_LEN);
    plain.extend_from_slice(HEADER_MAGIC);
    plain.push(HEADER_VERSION);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        plain.push(e.kind.to_byte());
        plain.push(e.flags);
        plain.extend_from_slice(&e.length.to_le_bytes());
        plain.extend_from_slice(&e.raw_length.to_le_bytes());
        plain.extend_from_slice(&e.id.0);
    }
    let mut out = key.sealer(Kind::PackHeader).seal(b"", &plain);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// How many trailing bytes to fetch first when reading a header: enough for about 1,500 blobs in
/// one request, which covers most packs.
pub const HEADER_PROBE: u64 = 64 * 1024;

/// Returns the sealed header's length from a pack's last four bytes, checked against the pack size.
pub fn header_len(name: &str, tail: &[u8], pack_size: u64) -> Result<u64> {
    if tail.len() < 4 {
        return Err(Error::corrupt(name, "pack is too short to hold a header"));
    }
    let n = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
    if n < ENVELOPE_OVERHEAD as u64 + 9 || n + 4 > pack_size {
        return Err(Error::corrupt(
            name,
            format!("header length {n} does not fit a pack of {pack_size} bytes"),
        ));
    }
    Ok(n)
}

/// Parses the header of a whole pack held in memory (after its hash was checked).
pub fn parse_pack(key: &MasterKey, name: &str, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let size = pack.len() as u64;
    let hlen = header_len(name, pack, size)?;
    let sealed = &pack[(size - hlen - 4) as usize..(size - 4) as usize];
    decode_header(key, name, sealed, size)
}

/// Opens and parses a sealed header, checking that its entries exactly tile the pack's blob area.
pub fn decode_header(
    key: &MasterKey,
    name: &str,
    sealed: &[u8],
    pack_size: u64,
) -> Result<Vec<PackEntry>> {
    let plain = key
        .sealer(Kind::PackHeader)
        .open(b"", sealed, &|| format!("{name} (pack header)"))?;
    if plain.len() < 9 || &plain[..4] != HEADER_MAGIC {
        return Err(Error::corrupt(name, "pack header has no LBPH magic"));
    }
    if plain[4] != HEADER_VERSION {
        return Err(Error::NewerFormat {
            object: format!("{name} (pack header)"),
            found: plain[4] as u32,
            supported: HEADER_VERSION as u32,
        });
    }
    let count = u32::from_le_bytes(plain[5..9].try_into().expect("4")) as usize;
    if plain.len() != 9 + count * HEADER_ENTRY_LEN {
        return Err(Error::corrupt(
            name,
            format!(
                "pack header claims {count} blobs but holds {} bytes",
                plain.len()
            ),
        ));
    }
    let blob_area = pack_size - sealed.len() as u64 - 4;
    let mut entries = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for raw in plain[9..].chunks_exact(HEADER_ENTRY_LEN) {
        let kind = BlobType::from_byte(raw[0])
            .ok_or_else(|| Error::corrupt(name, format!("unknown blob type {}", raw[0])))?;
        let length = u32::from_le_bytes(raw[2..6].try_into().expect("4"));
        let raw_length = u32::from_le_bytes(raw[6..10].try_into().expect("4"));
        if (length as usize) < ENVELOPE_OVERHEAD {
            return Err(Error::corrupt(
                name,
                "pack header lists a blob shorter than its envelope",
            ));
        }
        entries.push(PackEntry {
            id: Id::from_slice(&raw[10..42]),
            kind,
            flags: raw[1],
            offset: offset as u32,
            length,
            raw_length,
        });
        offset += length as u64;
        if offset > blob_area {
            return Err(Error::corrupt(
                name,
                "pack header lists blobs beyond the pack's end",
            ));
        }
    }
    if offset != blob_area {
        return Err(Error::corrupt(
            name,
            format!("pack header covers {offset} bytes of a {blob_area}-byte blob area"),
        ));
    }
    Ok(entries)
}

/// Object key of a pack: `data/<first two hex digits>/<id>`, so no directory or listing page is
/// flooded (256 prefixes).
pub fn pack_key(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<PackEntry> {
        vec![
            PackEntry {
                id: Id::of_bytes(b"a"),
                kind: BlobType::Data,
                flags: FLAG_ZSTD,
                offset: 0,
                length: 100,
                raw_length: 400,
            },
            PackEntry {
                id: Id::of_bytes(b"b"),
                kind: BlobType::Tree,
                flags: 0,
                offset: 100,
                length: 50,
                raw_length: 9,
            },
        ]
    }

    #[test]
    fn header_round_trip() {
        let k = MasterKey::generate();
        let h = encode_header(&k, &entries());
        let size = 150 + h.len() as u64;
        let n = header_len("p", &h, size).unwrap();
        let sealed = &h[h.len() - 4 - n as usize..h.len() - 4];
        assert_eq!(decode_header(&k, "p", sealed, size).unwrap(), entries());
    }

    #[test]
    fn header_must_tile_the_pack() {
        let k = MasterKey::generate();
        let h = encode_header(&k, &entries());
        let n = header_len("p", &h, 1 << 20).unwrap() as usize;
        let sealed = &h[h.len() - 4 - n..h.len() - 4];
        // A pack with extra bytes before the header is rejected.
        let err = decode_header(&k, "p", sealed, 151 + h.len() as u64).unwrap_err();
        assert!(err.to_string().contains("blob area"), "{err}");
        assert!(header_len("p", &[0, 0, 0, 0xff], 100).is_err());
    }
}
