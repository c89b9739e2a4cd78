//! Index objects (`index/<id>`) and the in-memory index built from them: blob id → where the blob
//! lives. An index object only ever adds knowledge; a later one may list earlier ones it
//! *supersedes* (prune and `repair index` use this), and readers ignore superseded objects.
//!
//! Sealed plaintext: `"LBIX" || u8 version=1 || u32le n_supersedes || n × id[32] ||
//! u32le n_packs || n_packs × (pack_id[32] || u32le n_blobs || n_blobs × entry)` where an entry is
//! `u8 type || u8 flags || u32le offset || u32le length || u32le raw_length || id[32]` (46 bytes).

use std::collections::{HashMap, HashSet};

use super::pack::{BlobType, PackEntry};
use crate::crypto::{Kind, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 4] = b"LBIX";
const VERSION: u8 = 1;
const ENTRY_LEN: usize = 46;

/// The decoded contents of one index object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IndexFile {
    /// Index objects this one replaces.
    pub supersedes: Vec<Id>,
    /// Packs and their blobs.
    pub packs: Vec<(Id, Vec<PackEntry>)>,
}

impl IndexFile {
    /// Sealed bytes of this index.
    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|(_, e)| e.len()).sum();
        let mut p = Vec::with_capacity(
            13 + 32 * self.supersedes.len() + 36 * self.packs.len() + blobs * ENTRY_LEN,
        );
        p.extend_from_slice(MAGIC);
        p.push(VERSION);
        p.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            p.extend_from_slice(&id.0);
        }
        p.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, entries) in &self.packs {
            p.extend_from_slice(&pack.0);
            p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                p.push(e.kind.to_byte());
                p.push(e.flags);
                p.extend_from_slice(&e.offset.to_le_bytes());
                p.extend_from_slice(&e.length.to_le_bytes());
                p.extend_from_slice(&e.raw_length.to_le_bytes());
                p.extend_from_slice(&e.id.0);
            }
        }
        key.sealer(Kind::Index).seal(b"", &p)
    }

    /// Opens and parses a sealed index; every count is checked against the bytes present, so
    /// hostile input cannot make it allocate more than it was given.
    pub fn decode(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<IndexFile> {
        let p = key
            .sealer(Kind::Index)
            .open(b"", sealed, &|| name.to_string())?;
        let mut r = Reader {
            buf: &p,
            pos: 0,
            name,
        };
        if r.take(4)? != MAGIC {
            return Err(Error::corrupt(name, "index has no LBIX magic"));
        }
        let v = r.take(1)?[0];
        if v != VERSION {
            return Err(Error::NewerFormat {
                object: name.into(),
                found: v as u32,
                supported: VERSION as u32,
            });
        }
        let n_sup = r.u32()? as usize;
        r.need(n_sup, 32)?;
        let mut supersedes = Vec::with_capacity(n_sup);
        for _ in 0..n_sup {
            supersedes.push(Id::from_slice(r.take(32)?));
        }
        let n_packs = r.u32()? as usize;
        r.need(n_packs, 36)?;
        let mut packs = Vec::with_capacity(n_packs);
        for _ in 0..n_packs {
            let pack = Id::from_slice(r.take(32)?);
            let n = r.u32()? as usize;
            r.need(n, ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let e = r.take(ENTRY_LEN)?;
                let kind = BlobType::from_byte(e[0])
                    .ok_or_else(|| Error::corrupt(name, format!("unknown blob type {}", e[0])))?;
                entries.push(PackEntry {
                    kind,
                    flags: e[1],
                    offset: u32::from_le_bytes(e[2..6].try_into().expect("4")),
                    length: u32::from_le_bytes(e[6..10].try_into().expect("4")),
                    raw_length: u32::from_le_bytes(e[10..14].try_into().expect("4")),
                    id: Id::from_slice(&e[14..46]),
                });
            }
            packs.push((pack, entries));
        }
        if r.pos != p.len() {
            return Err(Error::corrupt(name, "index has trailing bytes"));
        }
        Ok(IndexFile { supersedes, packs })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    name: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::corrupt(self.name, "index is truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// Checks that `count` records of `size` bytes can still follow.
    fn need(&self, count: usize, size: usize) -> Result<()> {
        if count.saturating_mul(size) > self.buf.len() - self.pos {
            return Err(Error::corrupt(self.name, "index counts exceed its size"));
        }
        Ok(())
    }
}

/// Where one blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Data or tree.
    pub kind: BlobType,
    /// Compression flag bits.
    pub flags: u8,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

impl BlobLocation {
    /// The equivalent pack header entry.
    pub fn entry(&self, id: Id) -> PackEntry {
        PackEntry {
            id,
            kind: self.kind,
            flags: self.flags,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// All blobs the repository knows, loaded from every live index object.
#[derive(Default, Debug)]
pub struct Index {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLocation>,
    /// Further copies of blobs stored in more than one pack (a re-upload after damage, a
    /// repack in progress), in the order they were added. Readers fall back to them in turn.
    more: HashMap<Id, Vec<BlobLocation>>,
    /// Packs named by a prune mark: readable until swept, never reused.
    marked: HashSet<Id>,
}

impl Index {
    /// Adds a pack and its blobs. A blob already known keeps its first location; a copy in
    /// another pack is remembered as a fallback (the same pack listed twice adds nothing).
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.blobs.reserve(entries.len());
        for e in entries {
            let loc = BlobLocation {
                pack: pos,
                kind: e.kind,
                flags: e.flags,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            };
            match self.blobs.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    if o.get().pack != pos {
                        let more = self.more.entry(e.id).or_default();
                        if !more.iter().any(|l| l.pack == pos) {
                            more.push(loc);
                        }
                    }
                }
            }
        }
    }

    /// Every known copy of a blob, the preferred one first. A reader that finds one damaged
    /// tries the next.
    pub fn locations(&self, id: &Id) -> impl Iterator<Item = &BlobLocation> {
        self.blobs
            .get(id)
            .into_iter()
            .chain(self.more.get(id).into_iter().flatten())
    }

    /// The index of `files` (live index objects), with `marked` packs added last and flagged.
    pub fn from_files(files: &[(Id, IndexFile)], marked: HashSet<Id>) -> Index {
        let mut idx = Index::default();
        for late in [false, true] {
            for (_, f) in files {
                for (pack, entries) in &f.packs {
                    if marked.contains(pack) == late {
                        idx.add_pack(*pack, entries);
                    }
                }
            }
        }
        idx.set_marked(marked);
        idx
    }

    /// Records the packs prune has marked. Load marked packs after the others, so a blob that
    /// also lives elsewhere is located in the pack that stays.
    pub fn set_marked(&mut self, marked: HashSet<Id>) {
        self.marked = marked;
    }

    /// Whether prune has marked this pack for deletion.
    pub fn is_marked(&self, pack: &Id) -> bool {
        self.marked.contains(pack)
    }

    /// Whether a backup may reference this blob without storing it again, as far as the index
    /// knows: it is indexed in a pack no prune mark names. (The backup also checks that the pack
    /// is intact: see `backup::vouch`.)
    pub fn reusable(&self, id: &Id) -> bool {
        self.locations(id)
            .any(|loc| !self.marked.contains(&self.packs[loc.pack as usize]))
    }

    /// Where a blob is, if known.
    pub fn get(&self, id: &Id) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    /// Whether a blob is known.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Pack id by position.
    pub fn pack_id(&self, pos: u32) -> Id {
        self.packs[pos as usize]
    }

    /// Whether a pack is indexed.
    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// All indexed packs.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is known.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every blob, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &BlobLocation)> {
        self.blobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let k = MasterKey::generate();
        let e = PackEntry {
            id: Id::of_bytes(b"x"),
            kind: BlobType::Data,
            flags: 1,
            offset: 7,
            length: 99,
            raw_length: 1000,
        };
        let f = IndexFile {
            supersedes: vec![Id::of_bytes(b"old")],
            packs: vec![(Id::of_bytes(b"p"), vec![e])],
        };
        let sealed = f.encode(&k);
        assert_eq!(IndexFile::decode(&k, "i", &sealed).unwrap(), f);
        let mut idx = Index::default();
        idx.add_pack(Id::of_bytes(b"p"), &[e]);
        assert_eq!(idx.get(&e.id).unwrap().entry(e.id), e);
        assert!(IndexFile::decode(&k, "i", &sealed[..sealed.len() - 1]).is_err());
    }
}
