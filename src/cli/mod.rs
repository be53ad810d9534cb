//! Headless subcommands, one file each. They call engines, never the UI (except `bench ui`, which
//! measures it).

pub mod bench;
pub mod sysinfo;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lathe",
    version,
    about = "A terminal workstation for fine-tuning, querying and chatting with small language models.",
    long_about = "A terminal workstation for fine-tuning, querying and chatting with small language models.\n\n\
        Run without a command to open the workstation. The workspace folder holds everything lathe\n\
        stores; it is --home, else $LATHE_HOME, else `home` in config.toml, else $XDG_DATA_HOME/lathe."
)]
pub struct Cli {
    /// The workspace folder (created when missing).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A shipped theme (dark, light, high-contrast, basic16) or a theme file's path.
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub theme: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/lathe/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print the System pane's figures once: CPU per core, memory, swap, disk, GPUs.
    Sysinfo {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure lathe itself; each figure is printed beside its target.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Start-up time, idle CPU and memory, frame render time and key latency under full CPU load.
    Ui {
        /// Seconds to measure idle CPU over.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
        /// How many start-ups to time.
        #[arg(long, default_value_t = 10)]
        starts: usize,
    },
}
