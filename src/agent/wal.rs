//! The agent's side of WAL archiving (postgres method): PostgreSQL's `archive_command` and
//! `restore_command` reach the agent through its socket ([`crate::wal::socket`]); the agent
//! stores and reads the files in the repository it holds open, under its volume lease, and keeps
//! the WAL metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tracing::{info, warn};

use super::Agent;
use crate::error::{Error, Result};
use crate::wal::socket::WalService;
use crate::wal::{Fetched, Pushed, WalArchive};

pub(super) struct AgentWal(pub Arc<Agent>);

impl WalService for AgentWal {
    fn push(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let a = &self.0;
        let r = (|| {
            // A lost lease means another instance owns the volume now: archiving this server's
            // WAL would mix two histories. PostgreSQL keeps the file and retries.
            if let Some(why) = a
                .lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|l| l.lost())
            {
                return Err(Error::invalid(format!(
                    "volume lease lost ({why}): this instance archives no more WAL"
                )));
            }
            let repo = a.repo()?;
            WalArchive::new(repo, &a.cfg.name).push(name, bytes)
        })();
        let st = &a.state;
        match r {
            Ok(p) => {
                st.wal_files.fetch_add(1, Relaxed);
                if let Pushed::Stored(n) = p {
                    st.wal_bytes.fetch_add(n, Relaxed);
                }
                st.wal_last
                    .store(chrono::Utc::now().timestamp().max(0) as u64, Relaxed);
                if let Ok(repo) = a.repo() {
                    *st.requests.lock().unwrap_or_else(|e| e.into_inner()) = repo.stats();
                }
                info!(file = name, bytes = bytes.len(), "WAL archived");
                Ok(())
            }
            Err(e) => {
                st.wal_failures.fetch_add(1, Relaxed);
                warn!(
                    file = name,
                    "WAL archiving failed (PostgreSQL retries it): {e}"
                );
                Err(e)
            }
        }
    }

    fn fetch(&self, name: &str) -> Result<Fetched> {
        let repo = self.0.repo()?;
        let r = WalArchive::new(repo, &self.0.cfg.name).fetch_checked(name);
        match &r {
            Ok(Fetched::Found(b)) => info!(file = name, bytes = b.len(), "WAL restored"),
            Ok(Fetched::NotFound) => info!(file = name, "WAL file not in the archive"),
            Ok(Fetched::Hole(m)) => tracing::error!("{m}"),
            Err(e) => warn!(file = name, "WAL restore failed: {e}"),
        }
        r
    }
}
