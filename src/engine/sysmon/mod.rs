//! System monitor: CPU per core, memory, swap, the workspace's disk, lathe's own process and GPUs
//! where sysinfo sees them. Sampling runs on its own thread so the UI thread never waits on /proc.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sysinfo::{
    CpuRefreshKind, Disks, Gpus, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate,
    System,
};

/// One reading of the machine, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SysSample {
    /// Busy percentage of each logical core, 0..=100.
    pub cpu_per_core: Vec<f32>,
    /// Busy percentage over all cores, 0..=100.
    pub cpu_total: f32,
    pub mem_used: u64,
    pub mem_total: u64,
    pub swap_used: u64,
    pub swap_total: u64,
    /// The file system that holds the workspace.
    pub disk: Option<DiskSample>,
    /// lathe's own resident memory in bytes.
    pub proc_rss: u64,
    /// lathe's own CPU use in percent of one core (can exceed 100 on several cores).
    pub proc_cpu: f32,
    pub gpus: Vec<GpuSample>,
    pub load_avg: [f64; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSample {
    pub mount_point: PathBuf,
    pub used: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub name: String,
    pub usage: Option<f32>,
    pub mem_used: Option<u64>,
    pub mem_total: Option<u64>,
}

/// Owns the sysinfo handles between samples (CPU usage is a difference of two readings).
pub struct Sampler {
    sys: System,
    disks: Option<Disks>,
    gpus: Option<Gpus>,
    pid: Option<Pid>,
    workspace: PathBuf,
    samples: u64,
}

impl Sampler {
    /// Fails only where sysinfo does not support the OS.
    pub fn new(workspace: &Path) -> Result<Self, SysmonError> {
        let sys = System::new().map_err(|e| SysmonError(e.to_string()))?;
        let mut sampler = Sampler {
            sys,
            disks: Disks::new_with_refreshed_list().ok(),
            gpus: Gpus::new_with_refreshed_list().ok(),
            pid: sysinfo::get_current_pid().ok(),
            workspace: std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.to_path_buf()),
            samples: 0,
        };
        sampler.refresh();
        Ok(sampler)
    }

    fn refresh(&mut self) {
        self.sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        self.sys.refresh_memory_specifics(MemoryRefreshKind::everything());
        if let Some(pid) = self.pid {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
    }

    /// Takes a reading. CPU figures are averages since the previous call, so call this at a
    /// steady interval of at least `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`.
    pub fn sample(&mut self) -> SysSample {
        self.refresh();
        // Disks and GPUs change slowly; re-reading them every fifth sample keeps idle CPU low.
        if self.samples.is_multiple_of(5) {
            if let Some(d) = self.disks.as_mut() {
                d.refresh(true);
            }
            if let Some(g) = self.gpus.as_mut() {
                g.refresh(true);
            }
        }
        self.samples += 1;
        let cpu_per_core: Vec<f32> = self.sys.cpus().iter().map(|c| c.usage()).collect();
        let (proc_rss, proc_cpu) = self
            .pid
            .and_then(|pid| self.sys.process(pid))
            .map(|p| (p.memory(), p.cpu_usage()))
            .unwrap_or((0, 0.0));
        let load = System::load_average().ok();
        SysSample {
            cpu_total: self.sys.global_cpu_usage(),
            cpu_per_core,
            mem_used: self.sys.used_memory(),
            mem_total: self.sys.total_memory(),
            swap_used: self.sys.used_swap(),
            swap_total: self.sys.total_swap(),
            disk: self.disks.as_ref().and_then(|d| workspace_disk(d, &self.workspace)),
            proc_rss,
            proc_cpu,
            gpus: self
                .gpus
                .as_ref()
                .map(|gs| {
                    gs.iter()
                        .map(|g| GpuSample {
                            name: g
                                .model()
                                .or(g.vendor())
                                .unwrap_or("GPU")
                                .to_string(),
                            usage: g.usage(),
                            mem_used: g.used_memory(),
                            mem_total: g.total_memory(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            load_avg: load.map(|l| [l.one, l.five, l.fifteen]).unwrap_or_default(),
        }
    }
}

/// The disk whose mount point is the longest prefix of the workspace path.
fn workspace_disk(disks: &Disks, workspace: &Path) -> Option<DiskSample> {
    disks
        .iter()
        .filter(|d| workspace.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| DiskSample {
            mount_point: d.mount_point().to_path_buf(),
            used: d.total_space().saturating_sub(d.available_space()),
            total: d.total_space(),
        })
}

/// Takes one reading the way the System pane shows it (two refreshes, a CPU interval apart).
pub fn sample_once(workspace: &Path) -> Result<SysSample, SysmonError> {
    let mut s = Sampler::new(workspace)?;
    thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(250)));
    Ok(s.sample())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read this system's figures ({0}); the System pane needs Linux, macOS or Windows")]
pub struct SysmonError(String);

/// Handle to the sampling thread; dropping it stops the thread.
pub struct SysMonitor {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl SysMonitor {
    /// Samples every `interval` and hands each reading to `emit`; stops when `emit` returns false
    /// (the receiver is gone) or the handle is dropped.
    pub fn spawn<F>(workspace: PathBuf, interval: Duration, mut emit: F) -> SysMonitor
    where
        F: FnMut(SysSample) -> bool + Send + 'static,
    {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("lathe-sysmon".into())
            .spawn(move || {
                let mut sampler = match Sampler::new(&workspace) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("{e}");
                        return;
                    }
                };
                // A first reading soon after start, so the pane fills quickly.
                let mut wait = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
                // Sleeping in recv_timeout: the thread wakes only to sample or to stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    if !emit(sampler.sample()) {
                        return;
                    }
                    wait = interval;
                }
            })
            .expect("spawn sysmon thread");
        SysMonitor { stop: Some(stop), handle: Some(handle) }
    }
}

impl Drop for SysMonitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// Cheap probes of this process and the machine, read straight from /proc where the hot paths
// (a training step, a model load, a benchmark) need one figure without a sysinfo refresh.

/// A `kB` field of a /proc file (`MemAvailable:` of /proc/meminfo, `VmRSS:` of a status file), in bytes.
fn proc_kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    Some(line.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

/// Memory the system can give now (MemAvailable); `u64::MAX` where it cannot be read.
pub fn available_memory() -> u64 {
    proc_kb_field("/proc/meminfo", "MemAvailable:").unwrap_or(u64::MAX)
}

/// This process's resident memory in bytes (0 where it cannot be read).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// This process's peak resident memory (VmHWM) in bytes.
pub fn peak_rss_bytes() -> u64 {
    proc_kb_field("/proc/self/status", "VmHWM:").unwrap_or(0)
}

/// Another process's resident memory (VmRSS) in bytes; an error once it has gone.
pub fn rss_of(pid: u32) -> std::io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    std::fs::metadata(&path)?;
    Ok(proc_kb_field(&path, "VmRSS:").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reads_this_machine() {
        let dir = std::env::temp_dir();
        let s = sample_once(&dir).unwrap();
        assert!(!s.cpu_per_core.is_empty(), "no cores read");
        assert!(s.mem_total > 0 && s.mem_used <= s.mem_total);
        assert!(s.proc_rss > 0, "own RSS not read");
        let disk = s.disk.expect("workspace disk found");
        assert!(disk.total > 0 && disk.used <= disk.total);
        assert!(s.cpu_per_core.iter().all(|c| (0.0..=100.0).contains(c)));
    }
}
