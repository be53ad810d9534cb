//! The workspace's owner record: which `lathe serve` process owns the workspace and where it
//! listens (`serve.json` in the workspace root), so that a second server is refused with a
//! sentence and clients can find the first. The record is written whole (a temporary file
//! renamed into place) and removed when the server ends; one left by a killed server names a
//! process that is gone, and is taken over.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ServiceError;
use crate::engine::workspace::Workspace;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub address: SocketAddr,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// Whether requests need the API key.
    pub key_required: bool,
}

fn record(ws: &Workspace) -> PathBuf {
    ws.root.join("serve.json")
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

impl Owner {
    /// The server that owns `ws` now, if one runs.
    pub fn find(ws: &Workspace) -> Option<Owner> {
        let text = std::fs::read_to_string(record(ws)).ok()?;
        let owner: Owner = serde_json::from_str(&text).ok()?;
        alive(owner.pid).then_some(owner)
    }

    /// Records this process as the owner listening at `address`; refused while another lives.
    /// The record goes when the guard drops.
    pub fn claim(ws: &Workspace, address: SocketAddr, key_required: bool) -> Result<OwnerGuard, ServiceError> {
        if let Some(other) = Owner::find(ws).filter(|o| o.pid != std::process::id()) {
            return Err(ServiceError::Busy(format!(
                "Another lathe serve (pid {}) owns {} at http://{}; stop it first, or give this one another --home.",
                other.pid,
                ws.root.display(),
                other.address
            )));
        }
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let me = Owner { address, pid: std::process::id(), started, key_required };
        let path = record(ws);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&me).map_err(|e| ServiceError::Engine(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ServiceError::Engine(format!("cannot write {} ({e}); is the disk full?", path.display())))?;
        Ok(OwnerGuard { path })
    }
}

/// Removes the owner record when dropped.
pub struct OwnerGuard {
    path: PathBuf,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
