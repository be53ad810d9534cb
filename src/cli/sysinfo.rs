//! `lathe sysinfo [--json]`: one reading of what the System pane shows.

use std::io::Write;
use std::path::Path;

use crate::engine::info;
use crate::engine::sysmon::{self, SysSample};
use crate::units::bytes;

pub fn run(workspace: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let s = sysmon::sample_once(workspace)?;
    if json {
        let v = serde_json::json!({ "workspace": workspace, "sample": s, "engines": info::engine_info() });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", text(&s, workspace))?;
        let e = info::engine_info();
        writeln!(out, "Engines  candle: {}", e.candle)?;
        writeln!(out, "         llama.cpp: {}", e.llama_cpp)?;
        writeln!(out, "         DuckDB: {}", e.duckdb)?;
    }
    Ok(())
}

pub fn text(s: &SysSample, workspace: &Path) -> String {
    let pct = |u: u64, t: u64| if t == 0 { 0.0 } else { u as f64 * 100.0 / t as f64 };
    let mut o = String::new();
    o += &format!(
        "CPU      {:5.1}%  {} cores  load {:.2} {:.2} {:.2}\n",
        s.cpu_total,
        s.cpu_per_core.len(),
        s.load_avg[0],
        s.load_avg[1],
        s.load_avg[2]
    );
    for (i, c) in s.cpu_per_core.iter().enumerate() {
        o += &format!("  cpu{i:<4}{c:5.1}%\n");
    }
    o += &format!(
        "Memory   {} / {} ({:.0}%)\n",
        bytes(s.mem_used),
        bytes(s.mem_total),
        pct(s.mem_used, s.mem_total)
    );
    if s.swap_total == 0 {
        o += "Swap     none\n";
    } else {
        o += &format!("Swap     {} / {}\n", bytes(s.swap_used), bytes(s.swap_total));
    }
    match &s.disk {
        Some(d) => {
            o += &format!(
                "Disk     {} / {} ({:.0}%) on {} (workspace {})\n",
                bytes(d.used),
                bytes(d.total),
                pct(d.used, d.total),
                d.mount_point.display(),
                workspace.display()
            )
        }
        None => o += &format!("Disk     not found for workspace {}\n", workspace.display()),
    }
    o += &format!("lathe    RSS {}, CPU {:.1}%\n", bytes(s.proc_rss), s.proc_cpu);
    if s.gpus.is_empty() {
        o += "GPU      none seen by sysinfo\n";
    }
    for g in &s.gpus {
        let usage = g.usage.map(|u| format!(" {u:.0}%")).unwrap_or_default();
        let mem = match (g.mem_used, g.mem_total) {
            (Some(u), Some(t)) => format!(" {} / {}", bytes(u), bytes(t)),
            _ => String::new(),
        };
        o += &format!("GPU      {}{usage}{mem}\n", g.name);
    }
    o
}
