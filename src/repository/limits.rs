//! How large each kind of object may be. Every read of a repository object passes its kind's
//! limit to [`crate::backend::Backend::get`], so a damaged or hostile store cannot make a reader
//! allocate more than these bounds (a `config` served as an endless body stops at 64 KiB, not at
//! the end of memory). Writers stay far below them; docs/FORMAT.md §2a lists them.

/// `config` (sealed JSON of a few hundred bytes).
pub const MAX_CONFIG: u64 = 64 * 1024;
/// A key object (plain JSON of about 500 bytes).
pub const MAX_KEY: u64 = 64 * 1024;
/// A snapshot object (sealed JSON; labels and tags are the only variable part).
pub const MAX_SNAPSHOT: u64 = 1024 * 1024;
/// Lease and writer records.
pub const MAX_RECORD: u64 = 64 * 1024;
/// An index object or a prune mark. Writers split index objects at [`INDEX_SPLIT`], so this is
/// never reached by an honest repository (about 700,000 blobs per object).
pub const MAX_INDEX: u64 = 32 * 1024 * 1024;
/// Index objects are closed at this plaintext size and a new one begun.
pub const INDEX_SPLIT: usize = 16 * 1024 * 1024;
/// Slack above the configured pack size: a pack is closed once it reaches the pack size, so the
/// last blob (at most a 4 MiB chunk, or one large tree) and the header may run past it.
pub const PACK_SLACK: u64 = 64 * 1024 * 1024;
/// Longest listing accepted for one prefix. A store that pages forever (or lists millions of
/// keys under `keys/`) is refused rather than followed, within about 100 MB of listing held in
/// memory: 500,000 packs is 16 TB at the default pack size, far beyond one volume.
pub const MAX_LIST: usize = 500_000;

/// An archived WAL file: PostgreSQL's largest segment size (1 GiB), compressed, in an envelope.
pub const MAX_WAL: u64 = (1 << 30) + (1 << 20);

/// The largest object acceptable under `key`, given the repository's pack size.
pub fn max_object_size(key: &str, pack_size: u64) -> u64 {
    let dir = key.split('/').next().unwrap_or(key);
    match dir {
        "config" | "config.1" => MAX_CONFIG,
        "keys" => MAX_KEY,
        "snapshots" => MAX_SNAPSHOT,
        "index" | "prune" => MAX_INDEX,
        "leases" | "writers" => MAX_RECORD,
        "data" => pack_size + PACK_SLACK,
        "wal" => MAX_WAL,
        // Nothing else is ever read; a small bound keeps a mistake cheap.
        _ => MAX_RECORD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_their_limits() {
        assert_eq!(max_object_size("config", 1), MAX_CONFIG);
        assert_eq!(max_object_size("keys/ab", 1), MAX_KEY);
        assert_eq!(max_object_size("index/ab", 1), MAX_INDEX);
        assert_eq!(max_object_size("data/ab/abcd", 100), 100 + PACK_SLACK);
        assert_eq!(max_object_size("snapshots/x", 1), MAX_SNAPSHOT);
    }
}
