//! lifeboat: encrypted, deduplicated backups of an app's volume to a directory or S3 (Storj),
//! made to ride along with the app on Akash and restore it onto a fresh lease before it starts.
//!
//! The data path, one module per stage:
//! [`backup`] (walk → [`chunker`] → keyed BLAKE3 → dedup → zstd → [`crypto`] → pack → upload to a
//! [`backend`]), and its mirror [`restore`]. [`repository`] owns the stored format
//! (docs/FORMAT.md); [`check`] verifies it; [`forget`] and [`prune`] remove what is no longer
//! wanted, without locks.

pub mod agent;
pub mod backend;
pub mod backup;
pub mod browse;
pub mod capture;
pub mod check;
pub mod chunker;
pub mod cli;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod format;
pub mod id;
pub mod ls;
pub mod parallel;
pub mod process;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod sdl;
pub mod sqlitelog;
pub mod sysinfo;
pub mod tag;
pub mod wal;

pub use error::{Error, Result};
pub use id::Id;
