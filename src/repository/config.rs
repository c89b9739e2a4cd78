//! The `config` object: repository-wide parameters fixed at `init`. Sealed JSON, because the
//! chunker seed is a secret (known cut points would let an observer fingerprint files by their
//! chunk sizes).

use serde::{Deserialize, Serialize};

use crate::crypto::random_bytes;
use crate::error::{Error, Result};

/// The repository format version this build reads and writes. Format 2 binds every envelope to
/// its kind and name (docs/FORMAT.md §4); format-1 repositories are refused with a message that
/// names the version.
pub const FORMAT_VERSION: u32 = 2;

/// FastCDC parameters. Changing them changes every chunk boundary, so they are per repository.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Always `fastcdc-v2020` in v1.
    pub algorithm: ChunkerAlgorithm,
    /// Smallest chunk, except a file's last.
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Hard maximum.
    pub max_size: u32,
    /// Normalization level 0-3.
    pub normalization: u8,
    /// XORed into the gear table (fastcdc's `get_gear_with_seed`).
    pub seed: u64,
}

/// Chunking algorithms known to this build.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChunkerAlgorithm {
    /// FastCDC 2020 as implemented by the `fastcdc` crate's `v2020` module.
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020,
}

impl ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB, normalization 1. See docs/FORMAT.md for the reasoning.
    pub fn default_with_seed(seed: u64) -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            normalization: 1,
            seed,
        }
    }

    /// Rejects parameters outside what fastcdc supports.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let (mi, av, ma) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&mi)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&av)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&ma)
            && mi <= av
            && av <= ma
            && self.normalization <= 3;
        if !ok {
            return Err(Error::invalid(format!(
                "chunker sizes {mi}/{av}/{ma} are outside fastcdc's limits"
            )));
        }
        Ok(())
    }
}

/// The decoded config object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// Random repository id (names cache directories; distinguishes repositories in messages).
    pub id: String,
    /// When `init` ran.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Content-defined chunking parameters.
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// Default zstd level for backups (a backup may override it).
    pub compression_level: i32,
}

impl Config {
    /// A new config with defaults and a random id and chunker seed.
    pub fn new(pack_size: u32, compression_level: i32) -> Self {
        Config {
            version: FORMAT_VERSION,
            id: hex::encode(random_bytes::<16>()),
            created: chrono::Utc::now(),
            chunker: ChunkerParams::default_with_seed(u64::from_le_bytes(random_bytes())),
            pack_size,
            compression_level,
        }
    }
}

/// 32 MiB: far above Storj's 50 kB billing minimum and below its 64 MiB segment, so each pack is
/// one segment and one single-part PUT; small enough that repacking one costs little.
pub const DEFAULT_PACK_SIZE: u32 = 32 * 1024 * 1024;
