//! The DuckDB catalog on real files: imports of every format, bad input, exports, SQL output,
//! the demo datasets, one writer at a time and an import killed halfway.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lathe::engine::data::{Catalog, DataError, ExportSource, ImportOptions, OutputFormat};
use lathe::engine::workspace::Workspace;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(d: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn import(cat: &Catalog, p: &Path) -> Result<lathe::engine::data::DatasetInfo, DataError> {
    cat.import(p, &ImportOptions::default())
}

fn sql(cat: &Catalog, q: &str, f: OutputFormat) -> String {
    let mut out = Vec::new();
    cat.run_sql(q, f, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn imports_every_format() {
    let d = dir("formats");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    let csv = write(&d, "people.csv", b"name,age\nada,36\nalan,41\n");
    let info = import(&cat, &csv).unwrap();
    assert_eq!((info.name.as_str(), info.rows, info.columns), ("people", 2, 2));
    let tsv = write(&d, "t.tsv", b"x\ty\n1\ta\n2\tb\n3\tc\n");
    assert_eq!(import(&cat, &tsv).unwrap().rows, 3);
    let arr = write(&d, "arr.json", br#"[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]"#);
    assert_eq!(import(&cat, &arr).unwrap().columns, 2);
    let recs = write(&d, "recs.json", b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n");
    assert_eq!(import(&cat, &recs).unwrap().rows, 3);
    let jl = write(&d, "chat.jsonl", br#"{"messages": [{"role": "user", "content": "hi"}]}
{"messages": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "hey"}]}
"#);
    assert_eq!(import(&cat, &jl).unwrap().rows, 2);
    // Nested JSON keeps its structure: a list of structs.
    let n = sql(&cat, "select len(messages) as n from chat order by n", OutputFormat::Csv);
    assert_eq!(n, "n\n1\n2\n");
    let pq = d.join("p.parquet");
    cat.export(&ExportSource::Dataset("people".into()), &pq).unwrap();
    assert_eq!(cat.import(&pq, &ImportOptions { name: Some("people2".into()), replace: false }).unwrap().rows, 2);
    // The types were inferred.
    let t = sql(&cat, "select typeof(age) as t from people limit 1", OutputFormat::Csv);
    assert_eq!(t, "t\nBIGINT\n");
}

#[test]
fn imports_a_folder_and_a_glob() {
    let d = dir("multi");
    let parts = d.join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    for i in 0..3 {
        write(&parts, &format!("part-{i}.csv"), format!("id,v\n{i},a\n{},b\n", i + 10).as_bytes());
    }
    write(&parts, "notes.txt", b"ignored");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    let info = import(&cat, &parts).unwrap();
    assert_eq!((info.name.as_str(), info.rows), ("parts", 6));
    let g = cat.import(&parts.join("part-[01]*.csv"), &ImportOptions { name: Some("g".into()), replace: false });
    // '[' is a glob character; our matcher treats it literally, so the pattern matches nothing.
    assert!(g.is_err());
    let info = cat.import(&parts.join("part-*.csv"), &ImportOptions { name: Some("some".into()), replace: false }).unwrap();
    assert_eq!(info.rows, 6);
}

#[test]
fn reusing_a_name_needs_replace() {
    let d = dir("replace");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    let a = write(&d, "x.csv", b"v\n1\n");
    import(&cat, &a).unwrap();
    let b = write(&d, "x2.csv", b"v\n1\n2\n");
    let opts = ImportOptions { name: Some("x".into()), replace: false };
    let err = cat.import(&b, &opts).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("--replace"), "{err}");
    assert_eq!(cat.list().unwrap()[0].rows, 1);
    let info = cat.import(&b, &ImportOptions { replace: true, ..opts }).unwrap();
    assert_eq!(info.rows, 2);
}

/// Each bad input: a one-line error that says what to do, and the catalog unchanged.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let d = dir("bad");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    import(&cat, &write(&d, "good.csv", b"a,b\n1,2\n")).unwrap();
    let before = cat.list().unwrap();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("ragged rows", write(&d, "ragged.csv", b"a,b,c\n1,2,3\n4,5\n6,7,8\n"), "Could not import"),
        ("broken quoting", write(&d, "quote.csv", b"a,b\n1,\"open\n2,3\n4,5\n"), "Could not import"),
        ("invalid JSON", write(&d, "bad.json", b"[{\"a\": 1}, {\"a\": "), "Could not import"),
        ("invalid JSONL", write(&d, "bad.jsonl", b"{\"a\": 1}\n{\"a\" 2}\n"), "Could not import"),
        ("non-UTF-8", write(&d, "latin1.csv", b"name,city\nzoe,K\xf6ln\n"), "Could not import"),
        ("empty file", write(&d, "empty.csv", b""), "is empty"),
        ("0-byte parquet", write(&d, "zero.parquet", b""), "is empty"),
        ("missing path", d.join("nope.csv"), "No file or folder"),
        ("unknown extension", write(&d, "notes.txt", b"hello"), "use .csv"),
        ("not parquet", write(&d, "fake.parquet", b"this is not parquet at all"), "Could not import"),
    ];
    // CSV problems name the line and the column.
    let err = import(&cat, &d.join("ragged.csv")).unwrap_err().to_string();
    assert!(err.contains("ragged.csv line 3, column 2 (c): Expected Number of Columns: 3 Found: 2"), "{err}");
    let err = import(&cat, &d.join("latin1.csv")).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.to_lowercase().contains("not utf-8"), "{err}");
    for (what, path, expect) in cases {
        let err = match import(&cat, &path) {
            Ok(i) => panic!("{what}: imported {i:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!err.contains('\n'), "{what}: more than one line: {err}");
        assert!(err.ends_with("nothing was changed.") || !err.starts_with("Could not"), "{what}: {err}");
        assert!(!err.contains("LINE 1:") && !err.contains("Possible"), "{what}: DuckDB's hints leaked: {err}");
        assert_eq!(cat.list().unwrap(), before, "{what} changed the catalog");
    }
}

#[test]
fn sql_errors_say_what_went_wrong() {
    let d = dir("sqlerr");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    let mut out = Vec::new();
    let err = cat.run_sql("selec 1", OutputFormat::Table, &mut out).unwrap_err().to_string();
    assert!(err.starts_with("SQL error:") && err.contains("syntax error") && err.ends_with("run it again."), "{err}");
    import(&cat, &write(&d, "t.csv", b"a\n1\n")).unwrap();
    cat.drop_dataset("t").unwrap();
    let err = cat.run_sql("select * from t", OutputFormat::Table, &mut out).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = cat.drop_dataset("t").unwrap_err().to_string();
    assert!(err.contains("No dataset named t"), "{err}");
    let err = cat.run_sql("  ", OutputFormat::Table, &mut out).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    // Every query, good or bad, is in the history.
    let h = sql(&cat, "select ok, count(*) as n from lathe.query_history group by ok order by ok", OutputFormat::Csv);
    assert_eq!(h, "ok,n\nfalse,3\n");
}

#[test]
fn sql_output_formats_and_files() {
    let d = dir("fmt");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    import(&cat, &write(&d, "t.csv", b"name,n\n\"a, b\",1\nc,\n")).unwrap();
    let q = "select name, n from t order by name";
    assert_eq!(sql(&cat, q, OutputFormat::Csv), "name,n\n\"a, b\",1\nc,\n");
    let j: serde_json::Value = serde_json::from_str(&sql(&cat, q, OutputFormat::Json)).unwrap();
    assert_eq!(j, serde_json::json!([{"name": "a, b", "n": 1}, {"name": "c"}]));
    let t = sql(&cat, q, OutputFormat::Table);
    assert!(t.starts_with("name (Utf8) │ n (Int64)"), "{t}");
    assert!(t.contains("NULL") && t.trim_end().ends_with("(2 rows)"), "{t}");
    // Queries read files directly.
    let pq = d.join("t.parquet");
    cat.export(&ExportSource::Query("select * from range(5) r(x)".into()), &pq).unwrap();
    let q = format!("select sum(x) as s from '{}'", pq.display());
    assert_eq!(sql(&cat, &q, OutputFormat::Csv), "s\n10\n");
}

#[test]
fn exports_round_trip_and_are_atomic() {
    let d = dir("export");
    let cat = Catalog::open(&d.join("c.duckdb")).unwrap();
    import(&cat, &write(&d, "t.csv", b"a,b\n1,x\n2,y\n3,z\n")).unwrap();
    for ext in ["csv", "parquet", "jsonl"] {
        let out = d.join(format!("out.{ext}"));
        assert_eq!(cat.export(&ExportSource::Dataset("t".into()), &out).unwrap(), 3);
        let back = cat.import(&out, &ImportOptions { name: Some(format!("back_{ext}")), replace: false }).unwrap();
        assert_eq!(back.rows, 3, "{ext}");
    }
    let err = cat.export(&ExportSource::Dataset("t".into()), &d.join("out.xlsx")).unwrap_err().to_string();
    assert!(err.contains(".csv, .parquet or .jsonl"), "{err}");
    let before: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    let err = cat.export(&ExportSource::Query("select * from nope".into()), &d.join("q.csv"));
    assert!(err.is_err());
    let after: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "a failed export left a file behind");
}

#[test]
fn a_new_workspace_gets_the_demo_datasets_once() {
    let d = dir("demo");
    let ws = Workspace::open(&d).unwrap();
    let cat = Catalog::open_workspace(&ws).unwrap();
    let list = cat.list().unwrap();
    let names: Vec<_> = list.iter().map(|d| (d.name.as_str(), d.rows)).collect();
    assert_eq!(names, [("chat", 1500), ("instruct", 8000)]);
    let tasks = sql(&cat, "select task, count(*) as n from instruct group by task order by task", OutputFormat::Csv);
    assert_eq!(tasks, "task,n\nadd,2000\ncount,2000\nreverse,2000\nsort,2000\n");
    cat.drop_dataset("chat").unwrap();
    drop(cat);
    let cat = Catalog::open_workspace(&ws).unwrap();
    assert_eq!(cat.list().unwrap().len(), 1, "a dropped demo dataset came back");
}

fn lathe(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lathe"));
    c.args(args).env("LATHE_HOME", home).env("XDG_CONFIG_HOME", home.join("config"));
    c
}

#[test]
fn a_second_writer_is_told_who_holds_the_catalog() {
    let d = dir("lock");
    let ws = Workspace::open(&d).unwrap();
    let cat = Catalog::open_workspace(&ws).unwrap();
    let out = lathe(&d, &["data", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open in another process") && err.contains(&format!("PID {}", std::process::id())), "{err}");
    assert!(err.contains("--home"), "{err}");
    drop(cat);
    let out = lathe(&d, &["data", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_import_killed_halfway_leaves_no_half_dataset() {
    let d = dir("kill");
    let ws = Workspace::open(&d).unwrap();
    // A CSV big enough that importing it takes a while.
    let big = d.join("big.csv");
    Catalog::in_memory()
        .unwrap()
        .conn
        .execute_batch(&format!(
            "COPY (SELECT range AS id, 'row ' || range AS label, range * 0.5 AS x FROM range(3000000)) TO '{}' (HEADER)",
            big.display()
        ))
        .unwrap();
    drop(Catalog::open_workspace(&ws).unwrap());
    let db = ws.catalog_path();
    let size0 = std::fs::metadata(&db).unwrap().len();
    let wal = PathBuf::from(format!("{}.wal", db.display()));
    let mut child = lathe(&d, &["data", "import", big.to_str().unwrap()]).spawn().unwrap();
    // Kill once the import is writing (the file grows or a WAL appears).
    let start = Instant::now();
    loop {
        let grew = std::fs::metadata(&db).map(|m| m.len() > size0).unwrap_or(false) || wal.exists();
        if grew || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "the import finished before it could be killed");
    child.kill().unwrap();
    child.wait().unwrap();
    let cat = Catalog::open_workspace(&ws).unwrap();
    let names: Vec<_> = cat.list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["chat", "instruct"]);
    let n = sql(&cat, "select count(*) as n from duckdb_tables() where table_name = 'big'", OutputFormat::Csv);
    assert_eq!(n, "n\n0\n");
}

#[test]
fn training_views_check_columns_and_split_deterministically() {
    use lathe::engine::data::views::{Example, Split, ViewFormat};
    let d = dir("views");
    let ws = Workspace::open(&d).unwrap();
    let cat = Catalog::open_workspace(&ws).unwrap();
    // A new workspace has a view over each demo dataset.
    let views: Vec<_> = cat.views().unwrap().into_iter().map(|(_, v)| v.unwrap()).collect();
    let names: Vec<_> = views.iter().map(|v| (v.name.as_str(), v.format, v.train_rows + v.eval_rows)).collect();
    assert_eq!(names, [("chat", ViewFormat::Chat, 1500), ("instruct", ViewFormat::Alpaca, 8000)]);
    let inst = &views[1];
    let share = inst.eval_rows as f64 / 8000.0;
    assert!((0.03..0.07).contains(&share), "eval share {share}");

    // The split is a pure function of each row: redefining gives the same rows, a bigger
    // fraction only moves rows from train to eval.
    let eval1 = cat.examples("instruct", Split::Eval, None).unwrap();
    cat.create_view("instruct", "SELECT instruction, input, output FROM instruct", ViewFormat::Alpaca, 0.05, true).unwrap();
    assert_eq!(cat.examples("instruct", Split::Eval, None).unwrap(), eval1);
    cat.create_view("more", "SELECT instruction, input, output FROM instruct", ViewFormat::Alpaca, 0.2, false).unwrap();
    let eval2 = cat.examples("more", Split::Eval, None).unwrap();
    assert!(eval1.iter().all(|e| eval2.contains(e)));
    let train = cat.examples("instruct", Split::Train, None).unwrap();
    assert!(train.iter().all(|e| !eval1.contains(e)));
    assert_eq!(train.len() + eval1.len(), 8000);

    match &cat.examples("chat", Split::Train, Some(1)).unwrap()[0] {
        Example::Chat { messages } => {
            assert_eq!(messages[0].role, "system");
            assert_eq!(messages[1].role, "user");
            assert_eq!(messages[2].role, "assistant");
        }
        other => panic!("{other:?}"),
    }
    // Text and completion views over any query.
    cat.create_view("t", "SELECT input AS text FROM instruct WHERE task = 'reverse'", ViewFormat::Text, 0.1, false).unwrap();
    assert!(matches!(cat.examples("t", Split::Train, Some(1)).unwrap()[0], Example::Text { .. }));
    cat.create_view("c", "SELECT input AS prompt, output AS completion FROM instruct", ViewFormat::Completion, 0.0, false).unwrap();
    assert_eq!(cat.view_info("c").unwrap().eval_rows, 0);

    // Wrong shapes are refused with what to do.
    let bad = [
        ("SELECT input, output FROM instruct", ViewFormat::Alpaca, "needs a column named instruction"),
        ("SELECT id AS text FROM instruct", ViewFormat::Text, "cast it in the query"),
        ("SELECT task AS messages FROM instruct", ViewFormat::Chat, "list of {role, content}"),
        ("SELECT * FROM nowhere", ViewFormat::Text, "fix it and try again"),
    ];
    for (sql, format, expect) in bad {
        let err = cat.create_view("bad", sql, format, 0.05, false).unwrap_err().to_string();
        assert!(err.contains(expect), "{sql}: {err}");
    }
    let err = cat.create_view("instruct", "SELECT instruction, output FROM instruct", ViewFormat::Alpaca, 0.05, false).unwrap_err();
    assert!(err.to_string().contains("--replace"));
    let err = cat.create_view("x", "SELECT input AS text FROM instruct", ViewFormat::Text, 1.5, false).unwrap_err();
    assert!(err.to_string().contains("below 1"));
    // A view whose source is dropped says so.
    cat.drop_dataset("chat").unwrap();
    let err = cat.view_info("chat").unwrap_err().to_string();
    assert!(err.contains("no longer runs") && err.contains("--replace"), "{err}");
}
