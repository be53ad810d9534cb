//! The `lathe` binary: parse the command line, load the config, set up logging, dispatch.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use lathe::app::keymap::Keymap;
use lathe::app::runtime::{self, Launch};
use lathe::app::shell::Level;
use lathe::app::state::App;
use lathe::cli::{BenchCmd, Cli, Cmd};
use lathe::config::{Config, Flags};
use lathe::engine::workspace::Workspace;
use lathe::ui::theme::Theme;

fn main() -> ExitCode {
    // A write past a file-size limit then fails with EFBIG, which every writer reports as a full
    // disk, instead of killing lathe with SIGXFSZ.
    // SAFETY: setting a signal's disposition to ignore, before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let flags = Flags { home: cli.home.clone(), theme: cli.theme.clone(), config: cli.config.clone() };
    let config = Config::load(&flags);
    match run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: after an SSH drop stderr is a dead terminal, and eprintln! panics
            // when the write fails.
            tracing::error!("{e:#}");
            let _ = writeln!(std::io::stderr(), "lathe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let ws = Workspace::open(&config.home)?;
    let _log = lathe::logging::init(&ws.logs_dir());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), home = %ws.root.display(), "lathe starting");
    for p in &config.problems {
        tracing::warn!("{p}");
    }
    match cli.command {
        None => workstation(config, ws, None),
        Some(Cmd::Data { what }) => lathe::cli::data::run(&ws, what, &mut std::io::stdout().lock()),
        Some(Cmd::Sql { query, format }) => lathe::cli::data::sql(&ws, &query, format, &mut std::io::stdout().lock()),
        Some(Cmd::Sysinfo { json }) => {
            lathe::cli::sysinfo::run(&ws.root, json, &mut std::io::stdout().lock())
        }
        Some(Cmd::Train(args)) => lathe::cli::train::train(&ws, *args),
        Some(Cmd::Runs { what }) => lathe::cli::train::runs(&ws, what, &mut std::io::stdout().lock()),
        Some(Cmd::Eval(args)) => lathe::cli::train::eval(&ws, args, &mut std::io::stdout().lock()),
        Some(Cmd::Chats { what }) => lathe::cli::chat::chats(&ws, what, &mut std::io::stdout().lock()),
        Some(Cmd::Models { what }) => lathe::cli::chat::models(&ws, what, &mut std::io::stdout().lock()),
        Some(Cmd::Export(args)) => lathe::cli::chat::export(&ws, args),
        Some(Cmd::Quant { what }) => lathe::cli::quant::run(&ws, what),
        Some(Cmd::Chat(args)) if args.prompt.is_none() => {
            let model = lathe::cli::chat::resolve_model(&ws, &args.model)?;
            workstation(config, ws, Some((model, args)))
        }
        Some(Cmd::Chat(args)) => lathe::cli::chat::chat(&ws, args),
        Some(Cmd::Serve { detach: true, .. }) => lathe::server::detach(&ws),
        Some(Cmd::Serve { listen, api_key, slots, queue, ctx, threads, allow, detach: false }) => {
            let api_key = api_key.or_else(|| std::env::var("LATHE_API_KEY").ok());
            let threads = threads.filter(|n| *n > 0).unwrap_or_else(lathe::engine::infer::llama::default_threads);
            let slots = lathe::engine::infer::slots::Config { slots: slots as usize, ctx, queue, threads, batch: 512 };
            lathe::server::run(&ws, lathe::server::Options { listen, api_key, slots, allow })
        }
        Some(Cmd::Kb { what }) => lathe::cli::kb::run(&ws, what, &mut std::io::stdout().lock()),
        Some(Cmd::Embed { model, prompt, texts }) => lathe::cli::embed(&model, prompt.as_deref(), texts),
        Some(Cmd::Merge { model, adapter, out }) => {
            lathe::engine::train::export::merge(&model, &adapter, &out).map_err(anyhow::Error::msg)?;
            println!("merged {} into {}: {}", adapter.display(), model.display(), out.display());
            Ok(())
        }
        Some(Cmd::Bench { what: BenchCmd::Data { rows, csv_rows, runs } }) => {
            lathe::bench::data::run(&lathe::bench::default_home(), rows, csv_rows, runs.max(1))
        }
        Some(Cmd::Bench { what: BenchCmd::Train { steps, seq, layers, no_peer, qlora, phi2, child, gc, qlora_child, model, optim, base } }) => match model {
            Some(dir) if qlora_child => lathe::bench::qlora::child(&dir, steps, seq, 16, optim, base),
            _ if qlora => lathe::bench::qlora::run(steps, seq, phi2, !no_peer),
            _ if child => lathe::bench::train::child(steps, seq, layers, gc),
            _ => lathe::bench::train::run(steps, seq, layers, !no_peer),
        },
        Some(Cmd::Bench { what: BenchCmd::Embed { model, count, no_peer, child, texts_file, out } }) => match (child, texts_file, out) {
            (true, Some(texts), Some(out)) => lathe::bench::embed::child(&model, &texts, &out),
            _ => lathe::bench::embed::run(&model, count, !no_peer),
        },
        Some(Cmd::Bench { what: BenchCmd::Kb { model, chunks, no_peer, child, files, texts } }) => match (child, files, texts) {
            (true, Some(files), Some(texts)) => lathe::bench::kb::child(&model, &ws.root, &files, &texts),
            _ => lathe::bench::kb::run(&model, chunks, !no_peer),
        },
        Some(Cmd::Bench { what: BenchCmd::Imatrix { chunks, seq, layers, no_peer, child } }) => match child {
            true => lathe::bench::imatrix::child(chunks.max(1), seq.max(16), layers.max(1)),
            false => lathe::bench::imatrix::run(chunks.max(1), seq.max(16), layers.max(1), !no_peer),
        },
        Some(Cmd::Bench { what: BenchCmd::Serve { threads, gen, clients, model } }) => lathe::bench::serve::run(threads, gen.max(1), &clients, model.as_deref()),
        Some(Cmd::Bench { what: BenchCmd::Chat { threads, prompt, gen, runs, no_peer, child, model, together } }) => match (child, model) {
            (true, Some(m)) if together > 0 => lathe::bench::chat::together(&m, threads, prompt, gen, together),
            (true, Some(m)) => lathe::bench::chat::child(&m, threads, prompt, gen, runs.max(1)),
            _ => lathe::bench::chat::run(&lathe::bench::chat::cache_dir(), threads, prompt, gen, runs.max(1), !no_peer),
        },
        Some(Cmd::Bench { what: BenchCmd::Ui { idle_seconds, starts } }) => {
            lathe::bench::run_ui(&lathe::bench::default_home(), idle_seconds, starts)
        }
    }
}

/// Opens the workstation; with `chat_model`, on the Chat pane with that model loading.
/// The flags of `lathe chat` (system prompt, sampling, context, threads) apply to that conversation.
fn workstation(config: Config, ws: Workspace, chat_model: Option<(lathe::engine::types::ModelRef, lathe::cli::chat::ChatArgs)>) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the workstation needs a terminal on stdout; run it in one, or use a subcommand (see lathe --help)"
        );
    }
    let (theme, theme_problem) = Theme::resolve(&config.theme, config.themes_dir.as_deref());
    let theme = if config.no_color { theme.monochrome() } else { theme };
    let (keymap, key_problems) = Keymap::load(&config.keys);
    let mut app = App::new(keymap, theme, ws.root.clone());
    for p in config.problems.iter().chain(&theme_problem).chain(&key_problems) {
        tracing::warn!("{p}");
        app.notify(Level::Error, p.clone());
    }
    // The model library is scanned in the background from the start (the Models pane shows it).
    let mut initial = app.update(lathe::app::action::Action::RefreshModels);
    let mut chat_options = lathe::engine::infer::llama::Options::default();
    if let Some((model, args)) = chat_model {
        app.focus = lathe::app::action::PaneId::Chat;
        app.chat.open_model(model.to_string());
        app.chat.sampling = args.sampling();
        app.chat.system = args.system.clone();
        app.chat.kb = args.kb.clone();
        chat_options = args.options();
        initial.push(lathe::app::action::Command::LoadChatModel { side: 0, name: model.to_string() });
    }
    runtime::run_terminal(Launch {
        app,
        initial,
        workspace: ws,
        sample_interval: config.sample_interval,
        max_fps: config.max_fps,
        chat_options,
    })
}
