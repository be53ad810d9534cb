//! The workspace's owner record: which `lathe serve` process owns the workspace and where it
//! listens (`serve.json` in the workspace root), so that a second server is refused with a
//! sentence and clients can find the first. The record is written whole (a temporary file
//! renamed into place) and removed when the server ends; one left by a killed server names a
//! process that is gone, and is taken over. The record holds the owner's token and only its
//! user may read it: a client that brings the token runs as that user (the workstation, the
//! CLI), who could read any file the server can, so the server lets it name any path and needs
//! no API key from it.

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
    /// The owner's token (random, per server): the proof that a client is the server's own user.
    #[serde(default)]
    pub token: String,
}

fn record(ws: &Workspace) -> PathBuf {
    ws.root.join("serve.json")
}

/// Whether the process `pid` still exists.
pub fn alive(pid: u32) -> bool {
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
        let me = Owner { address, pid: std::process::id(), started, key_required, token: new_token()? };
        let path = record(ws);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&me).map_err(|e| ServiceError::Engine(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&tmp);
            // Readable by this user only: the token inside is the owner's.
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| ServiceError::Engine(format!("cannot write {} ({e}); is the disk full?", path.display())))?;
        Ok(OwnerGuard { path, token: me.token })
    }
}

/// Starts `lathe serve` with `args` in the background, in a session of its own (no terminal: a
/// closed window or a dropped SSH link sends it nothing), its output appended to logs/serve.log;
/// returns its record once it listens, or its last words if it ended.
pub fn spawn_server(ws: &Workspace, args: &[std::ffi::OsString]) -> Result<Owner, String> {
    use std::os::unix::process::CommandExt;
    if let Some(o) = Owner::find(ws) {
        return Err(format!("lathe serve (pid {}) already owns {} at http://{}; stop it with `kill -TERM {}` first.", o.pid, ws.root.display(), o.address, o.pid));
    }
    let log_path = ws.logs_dir().join("serve.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| format!("cannot write {} ({e}).", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the lathe binary ({e})."))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).env("LATHE_HOME", &ws.root).stdin(std::process::Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
    // SAFETY: setsid is async-signal-safe and touches nothing of this process but its session.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start lathe serve in the background ({e})."))?;
    let start = std::time::Instant::now();
    loop {
        if let Some(o) = Owner::find(ws).filter(|o| o.pid == child.id()) {
            // Reaped here when it ends while this process lives (a workstation that stops it
            // waits for it to be gone); by init once this process has gone.
            std::thread::spawn(move || child.wait());
            return Ok(o);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            return Err(format!("lathe serve ended at once ({status}): {last}"));
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            return Err(format!("lathe serve (pid {}) did not start listening within 2 minutes; see {}.", child.id(), log_path.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// 32 hex digits from the system's random source.
fn new_token() -> Result<String, ServiceError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ServiceError::Engine(format!("cannot read /dev/urandom for the owner's token ({e}).")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Removes the owner record when dropped.
pub struct OwnerGuard {
    path: PathBuf,
    /// The token the record holds.
    pub token: String,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
