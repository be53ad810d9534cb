//! What the compute engines were built with, read from the engines themselves: candle's CPU
//! features, llama.cpp's system info (AVX2 and friends need `-C target-cpu=native`) and DuckDB's
//! version. `lathe sysinfo` prints it, so a user can see that a build is fast before using it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub candle: String,
    pub llama_cpp: String,
    pub duckdb: String,
}

pub fn engine_info() -> EngineInfo {
    EngineInfo { candle: candle(), llama_cpp: llama_cpp(), duckdb: duckdb() }
}

fn candle() -> String {
    use candle_core::utils;
    let mut feats = Vec::new();
    for (on, name) in [(utils::with_avx(), "avx"), (utils::with_f16c(), "f16c"), (utils::with_neon(), "neon")] {
        if on {
            feats.push(name);
        }
    }
    format!(
        "CPU, {} threads, features: {}",
        utils::get_num_threads(),
        if feats.is_empty() { "none".to_string() } else { feats.join(" ") }
    )
}

fn llama_cpp() -> String {
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by llama.cpp.
    let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    info.to_string_lossy().trim().to_string()
}

fn duckdb() -> String {
    duckdb::Connection::open_in_memory()
        .and_then(|c| c.query_row("select version()", [], |r| r.get::<_, String>(0)))
        .unwrap_or_else(|e| format!("unavailable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_answer() {
        let info = engine_info();
        assert!(info.duckdb.starts_with('v'), "{}", info.duckdb);
        assert!(info.llama_cpp.contains("CPU"), "{}", info.llama_cpp);
        // A native build on a CPU with AVX2 must have llama.cpp's AVX2 kernels compiled in.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if cpuinfo.split_whitespace().any(|w| w == "avx2") {
            assert!(info.llama_cpp.contains("AVX2 = 1"), "llama.cpp built without AVX2: {}", info.llama_cpp);
            assert!(info.candle.contains("avx"), "{}", info.candle);
        }
    }
}
