//! Snapshots of every pane and of the whole app at 80x24 and 200x50 (ratatui TestBackend + insta).
//! System figures come from a fixed reading so the snapshots are stable.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lathe::app::action::{Action, KeyPress, PaneId, TextKey};
use lathe::app::keymap::Keymap;
use lathe::app::state::App;
use lathe::engine::data::paging::Shape;
use lathe::engine::data::worker::DataEvent;
use lathe::engine::data::DatasetInfo;
use lathe::engine::jobs::{JobEvent, JobKind};
use lathe::engine::sysmon::{DiskSample, GpuSample, SysSample};
use lathe::ui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn reading(i: u64) -> SysSample {
    SysSample {
        cpu_per_core: vec![(10 + i * 7 % 80) as f32, 55.0, 90.0, 3.0],
        cpu_total: (20 + i * 3 % 60) as f32,
        mem_used: 6 * 1024 * 1024 * 1024 + i * 50_000_000,
        mem_total: 16 * 1024 * 1024 * 1024,
        swap_used: 0,
        swap_total: 2 * 1024 * 1024 * 1024,
        disk: Some(DiskSample { mount_point: "/".into(), used: 120 << 30, total: 250 << 30 }),
        proc_rss: 24 * 1024 * 1024 + i * 100_000,
        proc_cpu: 1.5,
        gpus: vec![],
        load_avg: [0.52, 0.4, 0.33],
    }
}

fn app() -> App {
    let (km, problems) = Keymap::load(&BTreeMap::new());
    assert!(problems.is_empty());
    let mut app = App::new(km, Theme::default_theme(), PathBuf::from("/home/me/.local/share/lathe"));
    for i in 0..40 {
        app.update(Action::Sys(reading(i)));
    }
    let ds = |name: &str, rows, columns, source_bytes| DatasetInfo {
        name: name.into(),
        rows,
        columns,
        source_bytes,
        source: format!("bundled datasets/{name}.jsonl"),
        format: "jsonl".into(),
        imported_at: "2026-11-26 12:00:00".into(),
    };
    app.update(Action::Data(DataEvent::Datasets(vec![ds("chat", 1500, 2, 473_546), ds("instruct", 8000, 5, 872_827)])));
    app
}

fn render(app: &mut App, w: u16, h: u16) -> String {
    app.update(Action::Resize(w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| lathe::ui::draw(f, app)).unwrap();
    t.backend().to_string()
}

#[test]
fn every_pane_at_80x24() {
    for pane in PaneId::ALL {
        let mut a = app();
        a.update(Action::Focus(pane));
        insta::assert_snapshot!(format!("pane_{}_80x24", pane.name()), render(&mut a, 80, 24));
    }
}

#[test]
fn every_pane_zoomed_at_200x50() {
    for pane in PaneId::ALL {
        let mut a = app();
        a.update(Action::Focus(pane));
        a.update(Action::ToggleZoom);
        insta::assert_snapshot!(format!("pane_{}_200x50_zoomed", pane.name()), render(&mut a, 200, 50));
    }
}

#[test]
fn whole_app_grid_at_200x50() {
    let mut a = app();
    insta::assert_snapshot!("app_200x50", render(&mut a, 200, 50));
}

#[test]
fn whole_app_at_80x24() {
    let mut a = app();
    insta::assert_snapshot!("app_80x24", render(&mut a, 80, 24));
}

#[test]
fn help_overlay_at_both_sizes() {
    let mut a = app();
    a.update(Action::ToggleHelp);
    insta::assert_snapshot!("help_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("help_200x50", render(&mut a, 200, 50));
    a.update(Action::PageDown);
    insta::assert_snapshot!("help_80x24_scrolled", render(&mut a, 80, 24));
}

#[test]
fn too_small_asks_for_a_bigger_window() {
    let mut a = app();
    let s = render(&mut a, 40, 10);
    assert!(s.contains("Enlarge the window"));
    insta::assert_snapshot!("too_small_40x10", s);
}

#[test]
fn a_running_job_shows_in_the_status_bar_and_quit_asks() {
    let mut a = app();
    a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Stress, title: "2 busy threads".into() }));
    a.update(Action::Job(JobEvent::Progress { id: 1, fraction: Some(0.42), message: String::new() }));
    insta::assert_snapshot!("job_status_80x24", render(&mut a, 80, 24));
    a.update(Action::Quit);
    insta::assert_snapshot!("confirm_quit_80x24", render(&mut a, 80, 24));
}

#[test]
fn chat_input_and_notice() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    for c in "hello lathe".chars() {
        a.update(Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false }));
    }
    a.update(Action::Send);
    insta::assert_snapshot!("chat_typed_80x24", render(&mut a, 80, 24));
}

#[test]
fn data_pane_states() {
    let (km, _) = Keymap::load(&BTreeMap::new());
    let mut a = App::new(km, Theme::default_theme(), PathBuf::from("/ws"));
    a.update(Action::Focus(PaneId::Data));
    assert!(render(&mut a, 80, 24).contains("Opening the workspace catalog"));
    a.update(Action::Data(DataEvent::Unavailable("The workspace catalog /ws/lathe.duckdb is open in another process (/usr/bin/lathe (PID 42)); close it there, or pass --home to use another workspace".into())));
    insta::assert_snapshot!("data_unavailable_80x24", render(&mut a, 80, 24));
    a.update(Action::Data(DataEvent::Datasets(vec![])));
    assert!(render(&mut a, 80, 24).contains("F5 or Ctrl-R"));
    assert!(render(&mut a, 120, 30).contains("no tables"));
}

fn typed(a: &mut App, s: &str) {
    for c in s.chars() {
        a.update(Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false }));
    }
}

#[test]
fn data_pane_with_a_result() {
    let mut a = app();
    a.update(Action::Data(DataEvent::Schema(vec![
        ("chat".into(), vec![("id".into(), "BIGINT".into()), ("messages".into(), "STRUCT(\"role\" VARCHAR, \"content\" VARCHAR)[]".into())]),
        ("instruct".into(), vec![("id".into(), "BIGINT".into()), ("task".into(), "VARCHAR".into()), ("instruction".into(), "VARCHAR".into()), ("input".into(), "VARCHAR".into()), ("output".into(), "VARCHAR".into())]),
    ])));
    a.update(Action::Focus(PaneId::Data));
    typed(&mut a, "select id, task, input, output from instruct");
    let cmds = a.update(Action::RunQuery);
    assert_eq!(cmds, vec![lathe::app::action::Command::RunQuery { id: 1, sql: "select id, task, input, output from instruct".into() }]);
    insta::assert_snapshot!("data_running_80x24", render(&mut a, 80, 24));
    let rows: Vec<Vec<String>> = (0..200)
        .map(|i| vec![i.to_string(), ["reverse", "sort", "add", "count"][i % 4].to_string(), format!("in{i}"), if i % 7 == 0 { "NULL".into() } else { format!("out{i}") }])
        .collect();
    let shape = Shape { columns: ["id", "task", "input", "output"].map(String::from).to_vec(), types: ["BIGINT", "VARCHAR", "VARCHAR", "VARCHAR"].map(String::from).to_vec() };
    a.update(Action::Data(DataEvent::QueryShape { id: 1, shape, rows }));
    a.update(Action::Data(DataEvent::QueryCount { id: 1, total: 8000, elapsed_ms: 4.2 }));
    a.update(Action::SwitchDataFocus);
    for _ in 0..30 {
        a.update(Action::ScrollDown);
    }
    a.update(Action::ScrollRight);
    insta::assert_snapshot!("data_result_80x24", render(&mut a, 80, 24));
    a.update(Action::ToggleZoom);
    insta::assert_snapshot!("data_result_200x50_zoomed", render(&mut a, 200, 50));
    a.update(Action::ViewRow);
    insta::assert_snapshot!("data_row_viewer_80x24", render(&mut a, 80, 24));
    a.update(Action::Close);
    // Past the loaded pages the grid asks for the next one and shows a placeholder meanwhile.
    let cmds = a.update(Action::PageDown);
    let more = a.update(Action::Bottom);
    assert!(cmds.is_empty() || matches!(cmds[0], lathe::app::action::Command::FetchPage { .. }));
    assert!(matches!(more[..], [lathe::app::action::Command::FetchPage { offset: 7800, .. }]), "{more:?}");
    let s = render(&mut a, 80, 24);
    assert!(s.contains("8000") && s.contains('…'), "{s}");
}

#[test]
fn system_pane_before_the_first_reading() {
    let (km, _) = Keymap::load(&BTreeMap::new());
    let mut a = App::new(km, Theme::default_theme(), PathBuf::from("/ws"));
    a.update(Action::Focus(PaneId::System));
    let s = render(&mut a, 80, 24);
    assert!(s.contains("Taking the first reading"));
}

#[test]
fn system_pane_with_a_gpu_and_many_cores() {
    let mut a = app();
    let mut s = reading(1);
    s.cpu_per_core = (0..32).map(|i| (i * 3) as f32).collect();
    s.gpus = vec![GpuSample { name: "NVIDIA H100".into(), usage: Some(37.0), mem_used: Some(8 << 30), mem_total: Some(80 << 30) }];
    a.update(Action::Sys(s));
    a.update(Action::Focus(PaneId::System));
    a.update(Action::ToggleZoom);
    insta::assert_snapshot!("system_gpu_32cores_200x50", render(&mut a, 200, 50));
    insta::assert_snapshot!("system_gpu_32cores_80x24", render(&mut a, 80, 24));
}

/// Attached to a `lathe serve`: the status bar says where, the System pane shows its figures.
#[test]
fn attached_to_a_server() {
    let mut a = app();
    a.update(Action::Server(lathe::service::attached::ServerStatus {
        pid: 4242,
        address: "127.0.0.1:8080".into(),
        uptime_s: 3600.0,
        rss_bytes: 812 << 20,
        slots: 4,
        running: 2,
        waiting: 1,
        requests: 37,
        rejected: 0,
        generated_tokens: 4800,
        generation_s: 200.0,
        model_loaded: true,
        model_loading: false,
        jobs_running: 1,
    }));
    a.update(Action::Focus(PaneId::System));
    a.update(Action::ToggleZoom);
    let wide = render(&mut a, 200, 50);
    assert!(wide.contains("⇄ serve 127.0.0.1:8080") && wide.contains("answering 2/4 (waiting 1)") && wide.contains("24.0 tok/s"), "{wide}");
    insta::assert_snapshot!("attached_200x50", wide);
    insta::assert_snapshot!("attached_80x24", render(&mut a, 80, 24));
    // The server gone: the link goes, a notice says what happens, and the workspace reopens here.
    let out = a.update(Action::Detached("lathe serve (pid 4242) stopped".into()));
    assert_eq!(out, vec![lathe::app::action::Command::Reattach]);
    assert!(a.server.is_none());
    assert!(render(&mut a, 200, 50).contains("lathe serve (pid 4242) stopped; the workstation opens the workspace itself again"));
}

#[test]
fn every_theme_renders_the_grid() {
    // Colours are not in the text snapshot; this checks each theme draws without panicking and
    // that NO_COLOR leaves no colour in any cell.
    for (name, _) in lathe::ui::theme::SHIPPED {
        let mut a = app();
        a.themes[0] = Theme::shipped(name).unwrap();
        render(&mut a, 200, 50);
    }
    let mut a = app();
    a.themes[0] = Theme::default_theme().monochrome();
    a.update(Action::Resize(200, 50));
    let mut t = Terminal::new(TestBackend::new(200, 50)).unwrap();
    t.draw(|f| lathe::ui::draw(f, &a)).unwrap();
    for cell in t.backend().buffer().content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset);
        assert_eq!(cell.bg, ratatui::style::Color::Reset);
    }
}

fn training_app() -> App {
    use lathe::engine::train::text::LengthStats;
    use lathe::engine::train::trainer::{StepMetrics, TrainEvent};
    let mut a = app();
    a.update(Action::StartDemo);
    a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Train, title: "demo".into() }));
    let lengths = LengthStats { count: 7586, min: 21, median: 25, p95: 31, max: 32, truncated: 0, histogram: vec![] };
    a.update(Action::Train(TrainEvent::Started {
        run_id: "20261126-150000-ab12".into(),
        model: "/ws/models/lathe-demo-base".into(),
        view: "instruct".into(),
        method: "full".into(),
        base: "f32".into(),
        optimizer: "adamw".into(),
        total_steps: 300,
        start_step: 0,
        train_examples: 7586,
        eval_examples: 200,
        trainable_params: 934_784,
        total_params: 934_784,
        lengths,
    }));
    for s in 1..=120usize {
        let loss = 5.0 * (-(s as f64) / 40.0).exp() + 0.3 + 0.05 * ((s * 7 % 5) as f64 - 2.0);
        a.update(Action::Train(TrainEvent::Step(StepMetrics {
            step: s,
            total: 300,
            epoch: s as f64 / 237.0,
            loss,
            lr: 3e-3,
            grad_norm: 0.8,
            tokens_per_s: 7512.0,
            elapsed_s: s as f64 * 0.11,
            rss_bytes: 250 << 20,
        })));
        if s % 50 == 0 {
            a.update(Action::Train(TrainEvent::Eval { step: s, loss: loss + 0.1, best: loss + 0.1 }));
        }
    }
    a
}

fn run_rows() -> Vec<lathe::engine::data::runs::RunRow> {
    use lathe::engine::data::runs::RunRow;
    let r = |id: &str, status: &str, method: &str, eval: Option<f64>| RunRow {
        id: id.into(),
        status: lathe::engine::types::RunStatus::parse(status),
        method: method.into(),
        model: "/ws/models/lathe-demo-base".into(),
        view: "instruct".into(),
        step: Some(120),
        total_steps: Some(300),
        best_eval_loss: eval,
        duration_s: Some(93.0),
        exact_match: if status == "completed" { Some(0.915) } else { None },
        params: Some(r#"{"lr":0.003,"method":"full"}"#.into()),
        created_at: "2026-11-26 15:00:00".into(),
        base: if method == "qlora" { "nf4" } else { "f32" }.into(),
        optimizer: if method == "qlora" { "adamw8bit" } else { "adamw" }.into(),
        ..Default::default()
    };
    vec![
        r("20261126-150000-ab12", "running", "full", Some(0.61)),
        r("20261126-140000-cd34", "completed", "full", Some(0.21)),
        r("20261126-130000-ef56", "interrupted", "qlora", None),
    ]
}

#[test]
fn training_loss_and_runs_panes_with_a_run() {
    let mut a = training_app();
    a.update(Action::Runs { request: a.training.runs.request, result: Ok(run_rows()) });
    // The grid: Training in its narrow cell, the chart and the runs beside it.
    insta::assert_snapshot!("grid_with_a_run_200x50", render(&mut a, 200, 50));
    // A smaller grid: the Runs cell too narrow for whole ids shows them without their date.
    insta::assert_snapshot!("grid_with_a_run_160x45", render(&mut a, 160, 45));
    for pane in [PaneId::Training, PaneId::Loss, PaneId::Runs] {
        a.update(Action::Focus(pane));
        insta::assert_snapshot!(format!("{}_run_80x24", pane.name()), render(&mut a, 80, 24));
        a.zoomed = true;
        insta::assert_snapshot!(format!("{}_run_200x50", pane.name()), render(&mut a, 200, 50));
        a.zoomed = false;
    }
    // Loss: log scale, zoomed in, another run drawn beside it.
    a.update(Action::Focus(PaneId::Loss));
    a.update(Action::ToggleLogScale);
    a.update(Action::ZoomIn);
    a.update(Action::ZoomIn);
    let metrics = (1..=100)
        .map(|s| lathe::engine::data::runs::MetricRow { step: s, kind: "train".into(), loss: 4.0 / (s as f64).sqrt(), lr: None, grad_norm: None, tokens_per_s: None, epoch: None, elapsed_s: None })
        .collect();
    a.update(Action::RunMetrics { id: "20261126-140000-cd34".into(), overlay: true, metrics });
    insta::assert_snapshot!("loss_log_zoom_overlay_80x24", render(&mut a, 80, 24));
    // Runs: open one, compare two.
    a.update(Action::Focus(PaneId::Runs));
    a.update(Action::MarkRun);
    a.update(Action::ScrollDown);
    a.update(Action::CompareRuns);
    insta::assert_snapshot!("runs_compare_80x24", render(&mut a, 80, 24));
}

#[test]
fn new_run_form_with_a_check() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Training));
    a.update(Action::NewRun);
    typed(&mut a, "/models/TinyLlama-1.1B");
    a.update(Action::FormChecked(Ok(vec![
        "memory: about 6.1 GiB of 22.9 GiB available".into(),
        "7586 train / 200 eval examples".into(),
        "examples (trained tokens in [brackets]):".into(),
        "  <|user|>⏎Reverse the letters of the word.⏎⏎imx<|end|>⏎<|assistant|>⏎[xmi<|end|>⏎]".into(),
    ])));
    insta::assert_snapshot!("new_run_form_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("new_run_form_200x50", render(&mut a, 200, 50));
    // A bad number is named, and the form stays open.
    for _ in 0..7 {
        a.update(Action::ScrollDown);
    }
    typed(&mut a, "x");
    a.update(Action::Confirm);
    let s = render(&mut a, 80, 24);
    assert!(s.contains("learning rate must be a number."), "{s}");
}

/// A conversation: two answers with their figures, one streaming, and turns the context left out.
fn chat_app() -> App {
    use lathe::engine::types::{Stats, StopReason};
    use lathe::engine::infer::worker::ChatEvent;
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded {
        model: lathe::engine::types::ModelRef::File("/models/run-demo-q8_0.gguf".into()),
        architecture: "llama".into(),
        context_size: 256,
        has_template: true,
    } });
    let stats = |n: usize, reused: usize| Stats {
        prompt_tokens: 20 + reused,
        reused_tokens: reused,
        prompt_secs: 0.05,
        first_token_secs: 0.06,
        generated_tokens: n,
        generation_secs: n as f64 / 40.0,
        context_used: 22 + reused + n,
        context_size: 256,
        stop: StopReason::EndOfTurn,
    };
    let say = |a: &mut App, text: &str| {
        a.chat.input = Default::default();
        a.update(Action::Paste(text.into()));
        a.update(Action::Send);
        a.chat.main().streaming.unwrap()
    };
    let id = say(&mut a, "Add the two numbers.\n\n10 + 38");
    a.update(Action::Chat { side: 0, event: ChatEvent::Started { id, dropped: 0 } });
    a.update(Action::Chat { side: 0, event: ChatEvent::Token { id, text: "48".into() } });
    a.update(Action::Chat { side: 0, event: ChatEvent::Done { id, stats: stats(2, 0) } });
    let id = say(&mut a, "Reverse the letters of the word.\n\ncakev. Then explain in a long sentence that has to wrap across the width of the pane.");
    a.update(Action::Chat { side: 0, event: ChatEvent::Started { id, dropped: 2 } });
    a.update(Action::Chat { side: 0, event: ChatEvent::Token { id, text: "vekac, because reading".into() } });
    a
}

#[test]
fn chat_pane_with_a_conversation() {
    let mut a = chat_app();
    insta::assert_snapshot!("chat_conversation_80x24", render(&mut a, 80, 24));
    let mut a = chat_app();
    a.update(Action::ToggleZoom);
    insta::assert_snapshot!("chat_conversation_200x50", render(&mut a, 200, 50));
}

/// A model exported from a lathe run offers a held-out question of its view before anything is
/// said, and Up puts it in the box.
#[test]
fn chat_pane_offers_the_models_example() {
    use lathe::engine::infer::worker::ChatEvent;
    for (w, h, zoom) in [(80, 24, false), (200, 50, true)] {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Chat { side: 0, event: ChatEvent::Loaded {
            model: lathe::engine::types::ModelRef::File("/models/run-demo-f16.gguf".into()),
            architecture: "llama".into(),
            context_size: 256,
            has_template: true,
        } });
        a.update(Action::Chat { side: 0, event: ChatEvent::Example("Add the two numbers.\n\n12 + 30".into()) });
        if zoom {
            a.update(Action::ToggleZoom);
        }
        insta::assert_snapshot!(format!("chat_example_{w}x{h}"), render(&mut a, w, h));
    }
}

#[test]
fn chat_pane_comparing_two_models() {
    use lathe::engine::infer::worker::ChatEvent;
    for (w, h) in [(80, 24), (200, 50)] {
        let mut a = chat_app();
        a.update(Action::Compare);
        a.update(Action::Paste("/models/base-q8_0.gguf".into()));
        a.update(Action::Confirm);
        a.update(Action::Chat { side: 1, event: ChatEvent::Loaded { model: lathe::engine::types::ModelRef::File("/models/base-q8_0.gguf".into()), architecture: "llama".into(), context_size: 256, has_template: true } });
        if w == 200 {
            a.update(Action::ToggleZoom);
        }
        insta::assert_snapshot!(format!("chat_compare_{w}x{h}"), render(&mut a, w, h));
    }
}

#[test]
fn models_pane_with_a_library() {
    use lathe::engine::infer::library::ModelEntry;
    let e = |name: &str, source: &str, format: &str, arch: &str, params: u64, quant: &str, size: u64, problem: Option<&str>| ModelEntry {
        name: name.into(),
        path: format!("/models/{name}").into(),
        source: source.into(),
        format: format.into(),
        architecture: arch.into(),
        params,
        quantization: quant.into(),
        context_length: 2048,
        file_size: size,
        ram_needed: size + (110 << 20),
        problem: problem.map(str::to_string),
    };
    let list = vec![
        e("run-20261126-demo-q8_0.gguf", "workspace", "gguf", "llama", 936_768, "Q8_0", 1_007_936, None),
        e("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "huggingface", "hf", "llama", 1_100_048_384, "bfloat16", 2_200_119_864, None),
        e("qwen2.5:0.5b", "ollama", "gguf", "qwen2", 494_032_768, "Q4_K_M", 397_807_936, None),
        e("half.gguf", "added", "gguf", "", 0, "", 1_000, Some("/models/half.gguf is truncated (1000 B of the 4.0 MiB it needs); download or export it again.")),
    ];
    for (w, h) in [(80, 24), (200, 50)] {
        let mut a = app();
        a.update(Action::Focus(PaneId::Models));
        a.update(Action::Models { request: a.models.request, result: Ok(list.clone()) });
        a.update(Action::ScrollDown);
        if w == 200 {
            a.update(Action::ToggleZoom);
        }
        insta::assert_snapshot!(format!("models_{w}x{h}"), render(&mut a, w, h));
    }
}

#[test]
fn chat_settings_panel() {
    let mut a = chat_app();
    a.update(Action::ChatSettings);
    insta::assert_snapshot!("chat_settings_80x24", render(&mut a, 80, 24));
}

/// A key remapped in the config is the key every hint names: the Runs pane's key line, its empty
/// state's pointer to the Training pane, and the Chat pane's empty state.
#[test]
fn remapped_keys_show_in_the_hints() {
    let overrides: BTreeMap<String, BTreeMap<String, String>> = toml::from_str(
        r#"
        [runs]
        "enter" = "none"
        "o" = "open_run"
        "f5" = "none"
        "ctrl+g" = "refresh_runs"
        [training]
        "d" = "none"
        "x" = "start_demo"
        [chat]
        "ctrl+o" = "none"
        "f2" = "load_model"
        "#,
    )
    .unwrap();
    let (km, problems) = Keymap::load(&overrides);
    assert!(problems.is_empty(), "{problems:?}");
    let mut a = App::new(km, Theme::default_theme(), PathBuf::from("/home/me/.local/share/lathe"));
    a.update(Action::Focus(PaneId::Runs));
    a.update(Action::Runs { request: a.training.runs.request, result: Ok(run_rows()) });
    let runs = render(&mut a, 80, 24);
    assert!(runs.contains("o open") && runs.contains("Ctrl-G reload") && !runs.contains("Enter open"), "{runs}");
    insta::assert_snapshot!("runs_remapped_80x24", runs);
    a.update(Action::Runs { request: a.training.runs.request, result: Ok(vec![]) });
    let empty = render(&mut a, 80, 24);
    assert!(empty.contains("x trains the demo"), "{empty}");
    a.update(Action::Focus(PaneId::Chat));
    let chat = render(&mut a, 80, 24);
    assert!(chat.contains("F2 opens a .gguf") && !chat.contains("Ctrl-O"), "{chat}");
    insta::assert_snapshot!("chat_remapped_80x24", chat);
}

#[test]
fn knowledge_pane_with_collections_results_and_an_ingest() {
    use lathe::engine::knowledge::ingest::{Phase, Progress};
    use lathe::engine::knowledge::store::{CollectionInfo, Hit, ModelId, SearchMode};
    use lathe::service::SearchResult;
    let coll = |name: &str, documents, chunks, bytes, vector_index| CollectionInfo {
        name: name.into(),
        model: ModelId {
            name: "all-MiniLM-L6-v2".into(),
            dir: "/models/all-MiniLM-L6-v2".into(),
            dim: 384,
            pooling: "mean".into(),
            normalize: true,
            max_len: 256,
            fingerprint: "0".into(),
        },
        documents,
        chunks,
        bytes,
        sources: vec!["/notes".into()],
        version: 3,
        vector_index,
        text_index: true,
        path: format!("/ws/vectors/{name}.lance"),
    };
    let hit = |rank: usize, path: &str, headings: &str, text: &str, v: Option<usize>, t: Option<usize>| Hit {
        rank,
        score: v.map(|r| 1.0 / (60.0 + r as f64)).unwrap_or(0.0) + t.map(|r| 1.0 / (60.0 + r as f64)).unwrap_or(0.0),
        chunk_id: format!("{rank:032}"),
        path: path.into(),
        first_line: 7 * rank as u32,
        last_line: 7 * rank as u32 + 4,
        headings: headings.into(),
        text: text.into(),
        vector_rank: v,
        text_rank: t,
    };
    let hits = vec![
        hit(1, "/notes/garden.md", "Garden > Pests", "Aphids gather under the leaves of the tomatoes;\na jet of water removes them.", Some(1), Some(1)),
        hit(2, "/notes/roses.md", "Roses", "Roses attract aphids in spring.\nLadybirds eat them.", Some(3), Some(2)),
        hit(3, "/notes/python/tool.py", "", "def spray(plants):\n    return [p for p in plants if p.pests]", Some(2), None),
    ];
    for (w, h) in [(80, 24), (200, 50)] {
        let mut a = app();
        a.update(Action::Focus(PaneId::Knowledge));
        let request = 1;
        a.update(Action::Collections { request, result: Ok(vec![coll("notes", 128, 2_310, 9 << 20, false), coll("python-docs", 4_512, 104_220, 412 << 20, true)]) });
        a.update(Action::Job(JobEvent::Started { id: 4, kind: JobKind::Ingest, title: "python-docs".into() }));
        let p = Progress { phase: Phase::Embedding, files_done: 212, files_total: 530, chunks: 6_144, bytes_done: 4 << 20, bytes_total: 10 << 20, chunks_per_s: 29.8, eta_s: Some(412.0) };
        a.update(Action::IngestProgress { job: 4, progress: p });
        a.update(Action::FocusSearch);
        for c in "aphids on tomatoes".chars() {
            a.update(Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false }));
        }
        // The first letter was searched as it was typed; Enter searches the whole text (request 2).
        a.update(Action::Search);
        a.update(Action::Searched { request: 2, result: Ok(SearchResult { hits: hits.clone(), mode: SearchMode::Hybrid, millis: 18.0, truncated: false }) });
        a.update(Action::LeaveSearch);
        a.update(Action::ScrollDown);
        if w == 200 {
            a.update(Action::ToggleZoom);
        }
        insta::assert_snapshot!(format!("knowledge_{w}x{h}"), render(&mut a, w, h));
        a.update(Action::OpenHit);
        insta::assert_snapshot!(format!("knowledge_chunk_{w}x{h}"), render(&mut a, w, h));
        a.update(Action::Close);
        a.update(Action::SwitchKbFocus);
        a.update(Action::DropCollection);
        insta::assert_snapshot!(format!("knowledge_drop_{w}x{h}"), render(&mut a, w, h));
    }
}

fn quant_rows() -> Vec<lathe::engine::data::quant_evals::QuantEval> {
    use lathe::engine::data::quant_evals::QuantEval;
    let r = |report: &str, source: &str, quant: &str, imatrix: bool, mib: f64, ppl: f64, kld: f64, top: f64| QuantEval {
        report: report.into(),
        source: source.into(),
        quant: quant.into(),
        imatrix,
        eval: "view instruct (eval split, tokens training scores)".into(),
        calibration: imatrix.then(|| "view instruct (train split)".into()),
        size_bytes: (mib * 1048576.0) as u64,
        ppl,
        kld,
        same_top: top,
        exact_match: Some(0.9),
        exact_asked: Some(32),
        prompt_tps: Some(310.0),
        gen_tps: Some(31.5),
        n_ctx: 512,
        chunks: 406,
        created_at: "2026-12-02 17:10:00".into(),
        ..Default::default()
    };
    let a = "q-20261202-171000-00aa";
    let b = "q-20261202-160000-00bb";
    vec![
        r(a, "20261126-140000-cd34", "f16", false, 2098.0, 1.0311, 0.0, 1.0),
        r(a, "20261126-140000-cd34", "q8_0", false, 1114.0, 1.0310, 0.00054, 0.991),
        r(a, "20261126-140000-cd34", "q4_k_m", false, 636.8, 1.0353, 0.006936, 0.738),
        r(a, "20261126-140000-cd34", "q4_k_m", true, 636.8, 1.0329, 0.006411, 0.745),
        r(a, "20261126-140000-cd34", "q3_k_m", false, 523.0, 1.0412, 0.01846, 0.65),
        r(a, "20261126-140000-cd34", "q3_k_m", true, 523.0, 1.0391, 0.014915, 0.67),
        r(a, "20261126-140000-cd34", "q2_k", false, 412.1, 1.0801, 0.060204, 0.5),
        r(a, "20261126-140000-cd34", "q2_k", true, 412.1, 1.0702, 0.051741, 0.52),
        r(b, "20261126-130000-ef56", "f16", false, 2098.0, 9.1, 0.0, 1.0),
        r(b, "20261126-130000-ef56", "q4_0", false, 600.0, 9.5, 0.02, 0.9),
    ]
}

#[test]
fn quantization_reports_overlay() {
    let mut a = training_app();
    a.update(Action::Runs { request: a.training.runs.request, result: Ok(run_rows()) });
    a.update(Action::Focus(PaneId::Runs));
    a.update(Action::QuantReports);
    a.update(Action::QuantEvals { request: a.training.runs.quant_request, result: Ok(vec![]) });
    insta::assert_snapshot!("quant_empty_80x24", render(&mut a, 80, 24));
    a.update(Action::Close);
    // The second run is selected: the overlay opens on its report (the newest); an answer to an
    // older request is dropped.
    a.update(Action::ScrollDown);
    a.update(Action::QuantReports);
    let stale = a.training.runs.quant_request - 1;
    a.update(Action::QuantEvals { request: stale, result: Err("old answer".into()) });
    a.update(Action::QuantEvals { request: a.training.runs.quant_request, result: Ok(quant_rows()) });
    assert_eq!(a.training.runs.quant_shown, 0);
    insta::assert_snapshot!("quant_report_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("quant_report_200x50", render(&mut a, 200, 50));
    // Right and Left, through the keymap: the viewer's own actions.
    let key = |a: &App, code| a.keymap.resolve(a.mode(), false, &crossterm::event::KeyEvent::from(code)).expect("bound in the viewer");
    let (right, left) = (key(&a, crossterm::event::KeyCode::Right), key(&a, crossterm::event::KeyCode::Left));
    assert_eq!((&right, &left), (&Action::NextReport, &Action::PrevReport));
    a.update(right.clone());
    assert_eq!(a.training.runs.quant_shown, 1);
    a.update(right);
    assert_eq!(a.training.runs.quant_shown, 1, "past the last report it stays");
    a.update(left);
    assert_eq!(a.training.runs.quant_shown, 0);
    // The third run's report is the older one: it opens there.
    a.update(Action::Close);
    a.update(Action::ScrollDown);
    a.update(Action::QuantReports);
    a.update(Action::QuantEvals { request: a.training.runs.quant_request, result: Ok(quant_rows()) });
    assert_eq!(a.training.runs.quant_shown, 1);
}
