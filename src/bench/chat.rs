//! `lathe bench chat`: llama.cpp inference through lathe's engine against llama.cpp itself
//! (llama-cpp-python built from source) at TinyLlama-1.1B shapes, random weights exported by
//! `lathe export` as Q8_0 and Q4_K_M: prompt processing and generation tokens/s, time to the first
//! token, and what streaming into the Chat pane costs against the same generation headless: once
//! in-process (the reducer and drawing on the generating thread, an upper bound on their cost) and
//! once in a real terminal (the workstation in tmux against `lathe chat --prompt`, which counts
//! the UI thread and the system monitor competing with llama.cpp's threads), plus two models
//! answering at once in compare mode, and two answers at once with all the threads each (in one
//! process and in two: decode calls take turns within a process and between processes). Each
//! engine runs in its own process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};
use candle_core::{DType, Device};

use crate::engine::export::gguf::{export, Quant};
use crate::engine::infer::llama::{Gguf, Options};
use crate::engine::types::Sampling;
use crate::engine::train::model::{Model, Trainable};
use crate::engine::train::rng::Rng;
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_llama_cpp.py");

/// A TinyLlama-shaped Hugging Face folder with random f16 weights and a small byte-level
/// tokenizer (the embedding's other rows become padding tokens in the GGUF), made once.
fn base_folder(dir: &Path) -> anyhow::Result<PathBuf> {
    let folder = dir.join("tinyllama-random");
    if folder.join("model.safetensors").exists() {
        return Ok(folder);
    }
    let tmp = dir.join("tinyllama-random.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!("making a TinyLlama-shaped model with random weights in {} (once)", folder.display());
    let tok = crate::engine::train::demo::word_tokenizer(&["The quick brown fox jumps over the lazy dog".into()], 1).map_err(|e| anyhow!(e))?;
    tok.save(tmp.join("tokenizer.json"), false).map_err(|e| anyhow!("{e}"))?;
    let tcfg = serde_json::json!({"bos_token": "<s>", "eos_token": "<|end|>", "add_bos_token": false, "tokenizer_class": "PreTrainedTokenizerFast"});
    std::fs::write(tmp.join("tokenizer_config.json"), tcfg.to_string())?;
    let cfg = super::train::tinyllama(22);
    let json = serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 2048,
        "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "hidden_act": "silu", "torch_dtype": "float16"});
    std::fs::write(tmp.join("config.json"), json.to_string())?;
    let model = Model::build(&cfg, &mut super::train::FastInit(Rng::new(7)), &Trainable::None, &mut Rng::new(0), &Device::Cpu)
        .map_err(|e| anyhow!(e))?;
    let mut tensors = model.merged_tensors()?;
    drop(model);
    for t in tensors.values_mut() {
        *t = t.to_dtype(DType::F16)?;
    }
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
    std::fs::rename(&tmp, &folder)?;
    Ok(folder)
}

/// Where the benchmark keeps its model and exports between runs (they take minutes to make):
/// $XDG_CACHE_HOME/lathe/bench-chat, else ~/.cache/lathe/bench-chat.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("lathe/bench-chat")
}

fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| (300 + (i * 7919) % (vocab - 300)) as u32).collect()
}

/// One engine's figures, measured in this process: prints JSON.
pub fn child(model: &Path, threads: i32, prompt: usize, gen: usize, runs: usize) -> anyhow::Result<()> {
    let g = Gguf::load(model).map_err(|e| anyhow!(e))?;
    let mut s = g.session(&Options { ctx: 512, threads, batch: 512 }).map_err(|e| anyhow!(e))?;
    let ids = prompt_ids(prompt, g.model.n_vocab() as usize);
    let (mut pp, mut tg, mut first) = (0f64, 0f64, f64::MAX);
    for _ in 0..runs {
        let (p, f, t) = s.bench(&ids, gen).map_err(|e| anyhow!(e))?;
        pp = pp.max(prompt as f64 / p);
        tg = tg.max(gen as f64 / t);
        first = first.min(f);
    }
    // Streaming into the Chat pane: the same greedy answer through `generate`, headless and with
    // every token reduced into the app and a frame drawn at most 60 times a second (on this
    // thread, so the figure is an upper bound on what the UI takes from generation).
    let toks: Vec<llama_cpp_2::token::LlamaToken> = ids.iter().map(|&i| llama_cpp_2::token::LlamaToken(i as i32)).collect();
    let sampling = Sampling { temperature: 0.0, repeat_penalty: 1.0, max_tokens: gen, ..Default::default() };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (mut headless, mut tui) = (0f64, 0f64);
    for _ in 0..runs {
        s.bench(&[1], 0).map_err(|e| anyhow!(e))?;
        let (_, st) = s.generate(&toks, &sampling, &cancel, &mut |_| {}).map_err(|e| anyhow!(e))?;
        headless = headless.max(st.tokens_per_s());
        s.bench(&[1], 0).map_err(|e| anyhow!(e))?;
        let mut app = crate::app::state::App::new(
            crate::app::keymap::Keymap::load(&Default::default()).0,
            crate::ui::theme::Theme::shipped("dark").expect("shipped theme"),
            PathBuf::from("/tmp"),
        );
        app.update(crate::app::action::Action::Resize(120, 40));
        app.update(crate::app::action::Action::Focus(crate::app::action::PaneId::Chat));
        let loaded = crate::engine::infer::worker::ChatEvent::Loaded {
            model: crate::engine::types::ModelRef::File(model.into()),
            architecture: "llama".into(),
            context_size: 512,
            has_template: true,
        };
        app.update(crate::app::action::Action::Chat { side: 0, event: loaded });
        app.chat.input.insert_str("benchmark");
        app.update(crate::app::action::Action::Send);
        let id = app.chat.main().streaming.unwrap_or(0);
        let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40))?;
        let mut last = Instant::now();
        let (_, st) = s
            .generate(&toks, &sampling, &cancel, &mut |t| {
                app.update(crate::app::action::Action::Chat { side: 0, event: crate::engine::infer::worker::ChatEvent::Token { id, text: t.to_string() } });
                if last.elapsed().as_secs_f64() >= 1.0 / 60.0 {
                    let _ = term.draw(|f| crate::ui::draw(f, &app));
                    last = Instant::now();
                }
            })
            .map_err(|e| anyhow!(e))?;
        tui = tui.max(st.tokens_per_s());
    }
    println!(
        "{}",
        serde_json::json!({"prompt_tokens_per_s": pp, "tokens_per_s": tg, "first_token_s": first, "headless_tokens_per_s": headless, "tui_tokens_per_s": tui})
    );
    Ok(())
}

/// `n` answers at once in this process, each on its own thread with its own context and all
/// `threads`: prints each one's generation rate as JSON. Their decode calls take turns on the CPU
/// ([`crate::engine::infer::turns`]).
pub fn together(model: &Path, threads: i32, prompt: usize, gen: usize, n: usize) -> anyhow::Result<()> {
    let g = Gguf::load(model).map_err(|e| anyhow!(e))?;
    let ids = prompt_ids(prompt, g.model.n_vocab() as usize);
    let start = std::sync::Barrier::new(n);
    let rates = std::thread::scope(|sc| {
        let answers: Vec<_> = (0..n)
            .map(|_| {
                sc.spawn(|| -> anyhow::Result<f64> {
                    let session = g.session(&Options { ctx: 512, threads, batch: 512 });
                    start.wait();
                    let (_, _, secs) = session.map_err(|e| anyhow!(e))?.bench(&ids, gen).map_err(|e| anyhow!(e))?;
                    Ok(gen as f64 / secs)
                })
            })
            .collect();
        answers.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a measuring thread panicked")))).collect::<anyhow::Result<Vec<f64>>>()
    })?;
    println!("{}", serde_json::json!({ "rates": rates }));
    Ok(())
}

/// Two answers at once with all `threads` each, as a report beside a chat runs: in one process
/// and in two processes (lathe's decode calls take turns within and between processes). Returns both
/// pairs of generation rates.
fn together_figures(exe: &Path, file: &Path, threads: i32, gen: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let cmd = |n: usize| {
        let mut c = Command::new(exe);
        c.args(["bench", "chat", "--child", "--together", &n.to_string(), "--model", &file.display().to_string(), "--threads", &threads.to_string()]);
        c.args(["--prompt", "16", "--gen", &gen.to_string()]);
        c
    };
    let rates = |v: serde_json::Value| v["rates"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<f64>>()).unwrap_or_default();
    let one = rates(super::json_result(&cmd(2).output()?, "two answers in one process")?);
    let piped = |mut c: Command| c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn();
    let (a, b) = (piped(cmd(1))?, piped(cmd(1))?);
    let (a, b) = (a.wait_with_output()?, b.wait_with_output()?);
    let mut two = rates(super::json_result(&a, "an answer in a process of its own")?);
    two.extend(rates(super::json_result(&b, "an answer in a process of its own")?));
    Ok((one, two))
}

/// Each figure's best over the rounds: the highest rate, the shortest time to the first token.
fn best_of(rounds: &[serde_json::Value]) -> serde_json::Value {
    let mut best = serde_json::Map::new();
    for r in rounds {
        for (k, v) in r.as_object().into_iter().flatten() {
            let Some(x) = v.as_f64() else {
                best.entry(k.clone()).or_insert_with(|| v.clone());
                continue;
            };
            let lower_is_better = k.ends_with("_s") && !k.ends_with("per_s");
            let keep = match best.get(k).and_then(|b| b.as_f64()) {
                Some(b) => if lower_is_better { b.min(x) } else { b.max(x) },
                None => x,
            };
            best.insert(k.clone(), serde_json::json!(keep));
        }
    }
    serde_json::Value::Object(best)
}

/// The median over the rounds of lathe's generation rate divided by the peer's in the same round
/// (each lathe round is followed at once by a peer round): a slow spell of a shared machine falls
/// on both sides of a pair, so this ratio varies less than the best-of figures' ratio.
fn paired_ratio(ours: &[serde_json::Value], theirs: &[serde_json::Value]) -> Option<f64> {
    let mut r: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter_map(|(a, b)| Some(a["tokens_per_s"].as_f64()? / b["tokens_per_s"].as_f64().filter(|&x| x > 0.0)?))
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let m = r.len() / 2;
    Some(if r.len() % 2 == 1 { r[m] } else { (r[m - 1] + r[m]) / 2.0 })
}

/// The slowest and fastest generation rate over the rounds ("16.1-17.9").
fn spread(rounds: &[serde_json::Value]) -> String {
    let rates: Vec<f64> = rounds.iter().filter_map(|r| r["tokens_per_s"].as_f64()).collect();
    let lo = rates.iter().copied().fold(f64::MAX, f64::min);
    let hi = rates.iter().copied().fold(0f64, f64::max);
    format!("{lo:.1}-{hi:.1}")
}

const TERMINAL_PROMPT: &str = "Tell me about lathes and the history of the machine tool industry in detail please";

/// The tok/s figures of the answers on a captured Chat pane ("N tokens · X tok/s · …", possibly
/// two on one line in compare mode).
fn pane_rates(screen: &str) -> Vec<f64> {
    let mut rates = Vec::new();
    for line in screen.lines() {
        let line = line.replace(['┃', '│'], " ");
        let pieces: Vec<&str> = line.split(" · ").collect();
        for w in pieces.windows(2) {
            let count = w[0].trim_end().strip_suffix(" tokens").and_then(|l| l.split_whitespace().last()).and_then(|n| n.parse::<usize>().ok());
            let mut rate = w[1].split_whitespace();
            if let (Some(_), Some(r), Some("tok/s")) = (count, rate.next(), rate.next()) {
                if let Ok(r) = r.parse::<f64>() {
                    rates.push(r);
                }
            }
        }
    }
    rates
}

/// The workstation in a real terminal (tmux): the best generation tok/s of `runs` fresh
/// conversations, the same answer headless (`lathe chat --prompt`), and both sides of a
/// comparison of the model with itself. None when tmux is missing.
fn terminal_figures(exe: &Path, file: &Path, threads: i32, gen: usize, runs: usize) -> anyhow::Result<Option<(f64, f64, f64, f64)>> {
    if !Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return Ok(None);
    }
    let home = std::env::temp_dir().join(format!("lathe-bench-tui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let flags = ["--max-tokens".to_string(), gen.to_string(), "--temp".into(), "0".into(), "--threads".into(), threads.to_string()];
    // Headless, one process per answer.
    let mut headless = 0f64;
    for _ in 0..runs {
        let o = Command::new(exe)
            .args(["--home", &home.display().to_string(), "chat", "--model", &file.display().to_string(), "--json", "--prompt", TERMINAL_PROMPT])
            .args(&flags)
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        let v: serde_json::Value = err.lines().rev().find_map(|l| serde_json::from_str(l).ok()).ok_or_else(|| anyhow!("lathe chat --json printed no figures: {err}"))?;
        headless = headless.max(v["tokens_per_s"].as_f64().unwrap_or(0.0));
    }
    let session = format!("lathe-bench-{}", std::process::id());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output();
    let cmd = format!(
        "{} --home {} chat --model {} {}",
        exe.display(),
        home.display(),
        file.display(),
        flags.join(" ")
    );
    // Below 140 columns the Chat pane has the whole window.
    tmux(&["new-session", "-d", "-s", &session, "-x", "120", "-y", "40", &cmd])?;
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let wait = |what: &dyn Fn(&str) -> bool| -> anyhow::Result<String> {
        let t = Instant::now();
        loop {
            let s = screen();
            if what(&s) {
                return Ok(s);
            }
            if t.elapsed().as_secs() > 120 {
                anyhow::bail!("the workstation did not get there in 120 s; the screen was:\n{s}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let result = (|| -> anyhow::Result<(f64, f64, f64)> {
        wait(&|s| s.contains("context 0/"))?;
        let mut tui = 0f64;
        for _ in 0..runs {
            tmux(&["send-keys", "-t", &session, "C-n"])?;
            wait(&|s| pane_rates(s).is_empty())?;
            tmux(&["send-keys", "-t", &session, "-l", TERMINAL_PROMPT])?;
            tmux(&["send-keys", "-t", &session, "Enter"])?;
            let s = wait(&|s| pane_rates(s).len() == 1 && !s.contains("answering"))?;
            tui = tui.max(pane_rates(&s)[0]);
        }
        // Compare mode: the same model beside itself; both answer at once.
        tmux(&["send-keys", "-t", &session, "C-n"])?;
        tmux(&["send-keys", "-t", &session, "C-k"])?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        tmux(&["send-keys", "-t", &session, "-l", &file.display().to_string()])?;
        tmux(&["send-keys", "-t", &session, "Enter"])?;
        wait(&|s| s.matches("context 0/").count() == 2)?;
        tmux(&["send-keys", "-t", &session, "-l", TERMINAL_PROMPT])?;
        tmux(&["send-keys", "-t", &session, "Enter"])?;
        let s = wait(&|s| pane_rates(s).len() == 2 && !s.contains("answering"))?;
        let r = pane_rates(&s);
        Ok((tui, r[0], r[1]))
    })();
    let _ = tmux(&["kill-session", "-t", &session]);
    let _ = std::fs::remove_dir_all(&home);
    let (tui, a, b) = result?;
    Ok(Some((tui, headless, a, b)))
}

/// The random TinyLlama-shaped model as a GGUF file of `quant`, made (and kept) on first use.
pub(crate) fn gguf(dir: &Path, quant: Quant) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!("tinyllama-random-{}.gguf", quant.name()));
    if !file.exists() {
        let base = base_folder(dir)?;
        eprintln!("exporting {} with lathe export", file.display());
        export(&base, None, &file, quant, &mut |_| {}).map_err(|e| anyhow!(e))?;
    }
    Ok(file)
}

pub fn run(dir: &Path, threads: i32, prompt: usize, gen: usize, runs: usize, peer: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let python = super::peer_python();
    let have_peer = peer && Command::new(&python).args(["-c", "import llama_cpp, numpy"]).output().is_ok_and(|o| o.status.success());
    let script = std::env::temp_dir().join(format!("lathe-peer-llama-{}.py", std::process::id()));
    if have_peer {
        std::fs::write(&script, PEER)?;
    }
    println!(
        "llama.cpp inference at TinyLlama-1.1B shapes (random weights), {threads} threads, prompt {prompt} tokens, {gen} generated, best of {runs} rounds"
    );
    println!(
        "machine: {}, {} cores; lathe {} (llama.cpp {}), {threads} threads on each side",
        super::cpu_model(),
        super::cores(),
        env!("CARGO_PKG_VERSION"),
        crate::engine::info::engine_info().llama_cpp
    );
    if !have_peer {
        println!("(peer skipped: CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install llama-cpp-python (or set LATHE_PEER_PYTHON) to measure llama.cpp itself beside lathe)");
    }
    println!("{:<8} {:>9} {:>22} {:>22} {:>20} {:>26}", "", "file", "prompt tok/s", "generation tok/s", "first token", "Chat pane vs headless");
    println!("{:<8} {:>9} {:>22} {:>22} {:>20} {:>26}", "", "", "lathe / llama.cpp", "lathe / llama.cpp", "lathe / llama.cpp", "tok/s (overhead)");
    let mut peer_version = None;
    let mut spreads = Vec::new();
    for quant in [Quant::Q8_0, Quant::Q4KM] {
        let file = gguf(dir, quant)?;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let args = ["bench", "chat", "--child", "--model", &file.display().to_string(), "--threads", &threads.to_string(), "--prompt", &prompt.to_string(), "--gen", &gen.to_string(), "--runs", "1"];
        // Rounds alternate the two sides, so a slow spell of a shared machine falls on both; each
        // figure is the best of its rounds.
        let (mut our_rounds, mut their_rounds) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            our_rounds.push(super::json_result(&Command::new(&exe).args(args).output().context("running lathe's measurement")?, "lathe")?);
            if have_peer {
                let o = Command::new(&python)
                    .args([script.display().to_string(), "--model".into(), file.display().to_string(), "--threads".into(), threads.to_string(), "--prompt".into(), prompt.to_string(), "--gen".into(), gen.to_string(), "--runs".into(), "1".into()])
                    .output()?;
                their_rounds.push(super::json_result(&o, "the llama.cpp peer")?);
            }
        }
        let ours = best_of(&our_rounds);
        let theirs = have_peer.then(|| best_of(&their_rounds));
        let paired = paired_ratio(&our_rounds, &their_rounds).map(|r| format!(", paired median {r:.2}x")).unwrap_or_default();
        spreads.push(format!(
            "{} lathe {}{}{paired}",
            quant.name(),
            spread(&our_rounds),
            if have_peer { format!(", llama.cpp {}", spread(&their_rounds)) } else { String::new() }
        ));
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let pair = |k: &str, prec: usize| match &theirs {
            Some(t) => format!("{:.p$} / {:.p$} ({:.2}x)", f(&ours, k), f(t, k), f(&ours, k) / f(t, k).max(1e-9), p = prec),
            None => format!("{:.p$} / -", f(&ours, k), p = prec),
        };
        let first = match &theirs {
            Some(t) => format!("{:.3} s / {:.3} s", f(&ours, "first_token_s"), f(t, "first_token_s")),
            None => format!("{:.3} s / -", f(&ours, "first_token_s")),
        };
        let (h, u) = (f(&ours, "headless_tokens_per_s"), f(&ours, "tui_tokens_per_s"));
        println!(
            "{:<8} {:>9} {:>22} {:>22} {:>20} {:>26}",
            quant.name(),
            bytes(size),
            pair("prompt_tokens_per_s", 1),
            pair("tokens_per_s", 1),
            first,
            format!("{u:.1} / {h:.1} ({:+.1}%)", (h - u) / h.max(1e-9) * 100.0)
        );
        if let Some(t) = &theirs {
            peer_version = t["llama_cpp_python"].as_str().map(str::to_string);
        }
    }
    println!("targets: lathe / llama.cpp >= 0.97x for prompt and generation; the Chat pane's cost <= 3% (a negative cost is noise: no measurable overhead)");
    println!(
        "(rounds alternate lathe and llama.cpp; generation tok/s, slowest and fastest round, and the median of each round's lathe / llama.cpp: {}; a best-of ratio within that spread is noise)",
        spreads.join("; ")
    );
    // The real terminal: the workstation in tmux with the Q4_K_M file.
    let file = dir.join(format!("tinyllama-random-{}.gguf", Quant::Q4KM.name()));
    match terminal_figures(&exe, &file, threads, gen, runs)? {
        Some((tui, headless, a, b)) => {
            println!(
                "in a real terminal (tmux, Q4_K_M, {gen} generated, best of {runs}): Chat pane {tui:.1} tok/s, headless `lathe chat --prompt` {headless:.1} tok/s ({:+.1}%, target <= 3%)",
                (headless - tui) / headless.max(1e-9) * 100.0
            );
            println!(
                "compare mode, the model beside itself, both answering at once with half the threads each: {a:.1} + {b:.1} = {:.1} tok/s (one model alone: {tui:.1})",
                a + b
            );
        }
        None => println!("(the real-terminal figures need tmux)"),
    }
    let gen2 = gen.min(32);
    let (one, two) = together_figures(&exe, &file, threads, gen2)?;
    let sum = |r: &[f64]| format!("{} = {:.1}", r.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" + "), r.iter().sum::<f64>());
    println!(
        "two answers at once with all {threads} threads each (Q4_K_M, {gen2} generated): in one process, {} tok/s; in two processes, {} tok/s (decode calls take turns within a process and between processes)",
        sum(&one),
        sum(&two)
    );
    if let Some(v) = peer_version {
        println!("(peer: llama-cpp-python {v}; lathe links llama-cpp-sys-2's llama.cpp)");
    }
    let _ = std::fs::remove_file(&script);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_read_off_the_pane() {
        let screen = "┃model\n┃64 tokens · 63.5 tok/s · first token 0.47 s · prompt 104 tokens   ┃\n\
                      ┃5 tokens · 5.0 tok/s · first token 0.41 s · promp 7 tokens · 3.9 tok/s · first┃\nprompt 20 tokens, 19 cached";
        assert_eq!(super::pane_rates(screen), vec![63.5, 5.0, 3.9]);
    }

    #[test]
    fn the_paired_ratio_is_the_median_of_each_rounds_ratio() {
        let r = |x: f64| serde_json::json!({"tokens_per_s": x});
        let ours = [r(20.0), r(30.0), r(27.0)];
        let theirs = [r(25.0), r(30.0), r(30.0)];
        // Ratios 0.8, 1.0, 0.9: the median is 0.9, while best-of would give 30/30.
        assert!((super::paired_ratio(&ours, &theirs).unwrap() - 0.9).abs() < 1e-12);
        assert!((super::paired_ratio(&ours[..2], &theirs[..2]).unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(super::paired_ratio(&ours, &[]), None);
        assert_eq!(super::paired_ratio(&ours[..1], &[r(0.0)]), None);
    }
}
