//! `lathe bench data`: the catalog against DuckDB itself (the duckdb Python package, the same
//! DuckDB version) on the same files and thread count, and the grid's memory while jumping
//! through a 10-million-row result. Each figure is printed beside its peer or limit.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::median;
use crate::app::data::DataState;
use crate::app::action::{Action, Command as AppCommand};
use crate::engine::data::worker::{DataEvent, DataRequest, DataWorker};
use crate::engine::data::import::{quote_str, FileFormat};
use crate::engine::data::Catalog;
use crate::engine::workspace::Workspace;

const QUERY: &str = "SELECT task, count(*) AS n, avg(x) AS mean_x, max(length(s)) AS longest FROM '{file}' GROUP BY task ORDER BY task";

fn peer_available() -> bool {
    Command::new("python3").args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success())
}

fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.output()?;
    let s = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    Ok(s)
}

fn line(name: &str, ours: f64, peer: Option<f64>, unit: &str, target: &str) {
    match peer {
        Some(p) => println!("{name:<44} {ours:>9.3} {unit}   DuckDB {p:>9.3} {unit}   ratio {:.3}  (target {target})", ours / p),
        None => println!("{name:<44} {ours:>9.3} {unit}   peer missing: pip install duckdb==1.5.6"),
    }
}

pub fn run(home: &Path, rows: u64, csv_rows: u64, runs: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let root = home.join("bench-data");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let ws = Workspace::open(&root.join("ws"))?;
    drop(Catalog::open_workspace(&ws)?);
    let peer = peer_available();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("lathe bench data  ({rows} rows parquet, {csv_rows} rows CSV, {threads} threads, median of {runs})");

    // Inputs, written by DuckDB itself.
    let pq = root.join("big.parquet");
    let csv = root.join("big.csv");
    let gen = Catalog::in_memory()?;
    gen.conn.execute_batch(&format!(
        "COPY (SELECT range AS id, ['reverse','sort','add','count'][range % 4 + 1] AS task, (range * 7919 % 10007) / 100.0 AS x,
                      'row ' || range AS s FROM range({rows})) TO '{}' (FORMAT parquet)",
        pq.display()
    ))?;
    gen.conn.execute_batch(&format!(
        "COPY (SELECT range AS id, ['reverse','sort','add','count'][range % 4 + 1] AS task, (range * 7919 % 10007) / 100.0 AS x,
                      'a somewhat longer text field for row ' || range AS s, range % 1000 AS k FROM range({csv_rows})) TO '{}' (HEADER)",
        csv.display()
    ))?;
    drop(gen);
    let csv_mb = std::fs::metadata(&csv)?.len() as f64 / 1e6;

    // 1. One aggregate over the Parquet file, end to end: `lathe sql` vs a Python process.
    let q = QUERY.replace("{file}", &pq.to_string_lossy());
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let peer_db = root.join("peer.duckdb");
    for _ in 0..runs {
        ours.push(timed(Command::new(&exe).args(["sql", &q, "--format", "csv"]).env("LATHE_HOME", &ws.root))?);
        if peer {
            let script = "import duckdb, os; con = duckdb.connect(os.environ['DB']); print(con.sql(os.environ['SQL']).fetchall())";
            theirs.push(timed(Command::new("python3").args(["-c", script]).env("DB", &peer_db).env("SQL", &q))?);
        }
    }
    line("aggregate over parquet, process end to end", median(&ours), peer.then(|| median(&theirs)), "s", "≤ 1.05");

    // The same query timed inside each engine, without process start-up.
    let cat = Catalog::open_workspace(&ws)?;
    let mut inner = Vec::new();
    for _ in 0..runs {
        let mut sink = Vec::new();
        inner.push(cat.run_sql(&q, crate::engine::data::OutputFormat::Csv, &mut sink)?.elapsed_ms / 1e3);
    }
    drop(cat);
    let peer_inner = if peer {
        let script = format!(
            "import duckdb, os, time\ncon = duckdb.connect(os.environ['DB'])\nts = []\nfor _ in range({runs}):\n    t = time.perf_counter(); con.sql(os.environ['SQL']).fetchall(); ts.append(time.perf_counter() - t)\nts.sort(); print(ts[len(ts)//2])"
        );
        let out = Command::new("python3").args(["-c", &script]).env("DB", &peer_db).env("SQL", &q).output()?;
        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok()
    } else {
        None
    };
    line("aggregate over parquet, query only", median(&inner), peer_inner, "s", "≤ 1.05");

    // 2. Importing the CSV: `lathe data import` vs CREATE TABLE AS in a Python process.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..runs.min(3) {
        ours.push(timed(
            Command::new(&exe)
                .args(["data", "import", &csv.to_string_lossy(), "--name", "big", "--replace"])
                .env("LATHE_HOME", &ws.root),
        )?);
        if peer {
            let db = root.join(format!("peer-import-{i}.duckdb"));
            // The same reader lathe's import uses, into a fresh database file.
            let reader = FileFormat::Csv.reader(&quote_str(&csv.to_string_lossy()));
            let sql = format!("CREATE TABLE big AS SELECT * FROM {reader}");
            let script = "import duckdb, os; con = duckdb.connect(os.environ['DB']); con.execute(os.environ['SQL']); con.close()";
            theirs.push(timed(Command::new("python3").args(["-c", script]).env("DB", &db).env("SQL", &sql))?);
            let _ = std::fs::remove_file(&db);
        }
    }
    line(&format!("import a {csv_mb:.0} MB CSV"), median(&ours), peer.then(|| median(&theirs)), "s", "≤ 1.10");

    // 3. The grid's memory while jumping through the whole Parquet result, page by page.
    grid_memory(&ws, &pq)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn grid_memory(ws: &Workspace, pq: &Path) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let worker = DataWorker::spawn(ws.clone(), move |e| drop(tx.lock().unwrap().send(e)));
    let mut data = DataState::default();
    data.editor.insert_str(format!("select * from '{}'", pq.display()));
    let AppCommand::RunQuery { id, sql } = data.run().map_err(anyhow::Error::msg)? else { unreachable!() };
    worker.send(DataRequest::Query { id, sql });
    let wait = |pred: &dyn Fn(&DataEvent) -> bool| -> anyhow::Result<DataEvent> {
        loop {
            let e = rx.recv_timeout(Duration::from_secs(120))?;
            if pred(&e) {
                return Ok(e);
            }
        }
    };
    let ev = wait(&|e| matches!(e, DataEvent::QueryCount { .. } | DataEvent::QueryFailed { .. }))?;
    // The shape arrived before the count.
    while let Ok(e) = rx.try_recv() {
        data.apply(&e);
    }
    data.apply(&ev);
    let total = data.result.as_ref().and_then(|r| r.total).unwrap_or(0);
    anyhow::ensure!(total > 0, "the grid query failed: {ev:?}");
    let base = crate::engine::sysmon::rss_bytes();
    let mut peak = base;
    let jumps = 1000u64;
    let t = Instant::now();
    for k in 1..=jumps {
        let target = total * k / jumps - 1;
        data.result.as_mut().unwrap().row = target.saturating_sub(1);
        if let Some(AppCommand::FetchPage { id, sql, offset }) = data.move_selection(&Action::ScrollDown, 40) {
            worker.send(DataRequest::Page { id, sql, offset });
            let e = wait(&|e| matches!(e, DataEvent::QueryPage { .. } | DataEvent::QueryFailed { .. }))?;
            data.apply(&e);
        }
        peak = peak.max(crate::engine::sysmon::rss_bytes());
    }
    let pages = data.result.as_ref().map(|r| r.pages.len()).unwrap_or(0);
    println!(
        "{:<44} {:>9.1} MB  limit < 50 MB  ({} jumps through {} rows in {:.1} s, {} pages held, RSS {:.0} -> {:.0} MB)",
        "grid: RSS growth scrolling the whole result",
        (peak - base) as f64 / 1e6,
        jumps,
        total,
        t.elapsed().as_secs_f64(),
        pages,
        base as f64 / 1e6,
        peak as f64 / 1e6
    );
    Ok(())
}
