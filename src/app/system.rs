//! The System pane's state: the newest reading of the machine and short histories for its
//! sparklines, folded from the service's `Sys` events.

use crate::engine::sysmon::SysSample;

/// How many readings the sparklines keep.
pub const HISTORY: usize = 120;

/// The System pane's data: the newest reading and short histories for sparklines.
#[derive(Debug, Clone, Default)]
pub struct SysState {
    pub latest: Option<SysSample>,
    pub cpu: Vec<u64>,
    pub mem: Vec<u64>,
    pub per_core: Vec<Vec<u64>>,
}

impl SysState {
    /// Folds one reading in: the newest, and a bounded history of each figure.
    pub fn push(&mut self, s: SysSample) {
        fn keep(v: &mut Vec<u64>, x: u64) {
            if v.len() == HISTORY {
                v.remove(0);
            }
            v.push(x);
        }
        keep(&mut self.cpu, s.cpu_total.round() as u64);
        let mem_pct = (s.mem_used * 100).checked_div(s.mem_total).unwrap_or(0);
        keep(&mut self.mem, mem_pct);
        self.per_core.resize_with(s.cpu_per_core.len(), Vec::new);
        for (h, c) in self.per_core.iter_mut().zip(&s.cpu_per_core) {
            keep(h, c.round() as u64);
        }
        self.latest = Some(s);
    }
}
