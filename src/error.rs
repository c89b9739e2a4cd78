//! One error type for the library. Each variant carries the object or path it is about, so `main`
//! can print a single line that names the thing and the fix; `main` maps variants to exit codes.

use std::io;

/// Library result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by who has to act: the user (bad input, wrong password),
/// the storage (retryable or not), or the data itself (corruption).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object the caller expected is missing. Backends return this for absent keys.
    #[error("{key}: not found in the repository")]
    NotFound { key: String },

    /// Local file system trouble, with the path or action that failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The repository location holds no lifeboat repository.
    #[error(
        "no repository at {location}: create one with `lifeboat init`, or check --repo / LIFEBOAT_REPOSITORY"
    )]
    NoRepository { location: String },

    /// `init` on a location that already has a repository.
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized { location: String },

    /// No key object opens with the given password.
    #[error("wrong password: none of the {keys} key(s) in the repository opens with it")]
    WrongPassword { keys: usize },

    /// The repository was written by a newer lifeboat.
    #[error(
        "{object} has format version {found}, this lifeboat reads up to version {supported}: upgrade lifeboat"
    )]
    NewerFormat {
        object: String,
        found: u32,
        supported: u32,
    },

    /// The repository was written in an older format that this build no longer reads.
    #[error(
        "{object} is in repository format {found}; this lifeboat reads format {supported} only: restore it with the lifeboat release that wrote it (0.1) and back up into a repository made by `lifeboat init` with this one"
    )]
    OlderFormat {
        object: String,
        found: u32,
        supported: u32,
    },

    /// Stored bytes fail authentication or do not parse. Names the object and what is wrong.
    #[error("{object} is damaged: {what}")]
    Corrupt { object: String, what: String },

    /// Bad input from the user: arguments, config, paths. The message names the fix.
    #[error("{0}")]
    Invalid(String),

    /// The storage failed. `retryable` says whether the same request may succeed later.
    #[error("storage error on {key}: {message}")]
    Backend {
        key: String,
        message: String,
        retryable: bool,
    },

    /// A child command (dump stream, hook) failed.
    #[error("command `{command}` failed: {message}")]
    Command { command: String, message: String },

    /// A backup's heartbeat lapsed (process stopped, storage unreachable), so a concurrent prune
    /// may have counted it as dead. Nothing was committed; the next run is safe.
    #[error(
        "this backup's heartbeat lapsed for {gap_seconds}s (the limit is {limit_seconds}s), so a concurrent prune may have taken it for dead; nothing was committed: run the backup again"
    )]
    HeartbeatLapsed {
        gap_seconds: u64,
        limit_seconds: u64,
    },

    /// The run was cancelled (signal or shutdown).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// Shorthand for an I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for damaged stored data.
    pub fn corrupt(object: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            what: what.into(),
        }
    }

    /// Shorthand for bad user input.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// The process exit code for this error (documented in the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NoRepository { .. } => 10,
            Error::WrongPassword { .. } => 12,
            _ => 1,
        }
    }
}

/// Bare I/O errors (from readers handed to the chunker); callers that know the path re-wrap them.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::io("read", e)
    }
}

/// Adds context to `io::Result`s at the call site.
pub trait IoContext<T> {
    /// Wraps an I/O error with a description of what was being done (usually a path).
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
