//! Text that the CLI and the workstation both print: a run's details and a comparison of two runs,
//! parameter counts. Plain strings, no terminal: each front end lays them out its own way.

use crate::engine::data::runs::{split_metrics, MetricRow, RunRow};
use crate::units::bytes;

/// A parameter count the way model cards say it: 1.10B, 494M.
pub fn params(n: u64) -> String {
    match n {
        0 => "-".into(),
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        n => format!("{:.1}K", n as f64 / 1e3),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

/// The lines of a run's detail overlay.
pub fn detail_lines(r: &RunRow, metrics: &[MetricRow]) -> Vec<String> {
    let mut out = vec![
        format!("status      {}", r.status),
        format!("method      {}", r.method),
        format!("model       {}", r.model),
        format!("weights     hash {}", r.model_hash.as_deref().unwrap_or("-")),
        format!("view        {}  ({} train / {} eval rows)", r.view, r.train_examples.unwrap_or(0), r.eval_examples.unwrap_or(0)),
        format!("view SQL    {}", r.view_sql.as_deref().unwrap_or("-")),
        format!("steps       {}/{}", r.step.unwrap_or(0), r.total_steps.unwrap_or(0)),
        format!("train loss  {}   eval loss {}   best eval {}", opt(r.train_loss), opt(r.eval_loss), opt(r.best_eval_loss)),
    ];
    if let Some(a) = r.exact_match {
        out.push(format!("exact match {:.1}%", a * 100.0));
    }
    out.push(format!("speed       {} tok/s", r.tokens_per_s.map(|t| format!("{t:.0}")).unwrap_or("-".into())));
    out.push(format!("started     {}   took {:.0} s", r.created_at, r.duration_s.unwrap_or(0.0)));
    out.push(format!("artifacts   {}", r.artifacts.as_deref().unwrap_or("-")));
    if let Some(m) = &r.message {
        out.push(format!("note        {m}"));
    }
    let (t, e) = split_metrics(metrics);
    if !t.is_empty() {
        out.push(format!("loss        {}", crate::units::sparkline(&t.iter().map(|p| p.1).collect::<Vec<_>>(), 50)));
    }
    for (s, l) in e {
        out.push(format!("eval @ {s:>5}: {l:.4}"));
    }
    out.push(String::new());
    out.push("parameters:".into());
    if let Some(p) = r.params.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()) {
        if let Some(o) = p.as_object() {
            for (k, v) in o {
                out.push(format!("  {k:<20} {v}"));
            }
        }
    }
    out
}

/// The lines of a two-run comparison.
pub fn compare_lines(a: &RunRow, b: &RunRow) -> Vec<String> {
    let mut out = vec![format!("{:<16} {:<26} {:<26}", "", a.id, b.id)];
    let rows: Vec<(&str, String, String)> = vec![
        ("status", a.status.to_string(), b.status.to_string()),
        ("method", a.method.clone(), b.method.clone()),
        ("view", a.view.clone(), b.view.clone()),
        ("steps", format!("{}/{}", a.step.unwrap_or(0), a.total_steps.unwrap_or(0)), format!("{}/{}", b.step.unwrap_or(0), b.total_steps.unwrap_or(0))),
        ("train loss", opt(a.train_loss), opt(b.train_loss)),
        ("best eval loss", opt(a.best_eval_loss), opt(b.best_eval_loss)),
        ("exact match", a.exact_match.map(|x| format!("{:.1}%", x * 100.0)).unwrap_or("-".into()), b.exact_match.map(|x| format!("{:.1}%", x * 100.0)).unwrap_or("-".into())),
        ("tokens/s", opt(a.tokens_per_s), opt(b.tokens_per_s)),
    ];
    for (k, x, y) in rows {
        out.push(format!("{k:<16} {x:<26} {y:<26}"));
    }
    let pa: serde_json::Value = serde_json::from_str(a.params.as_deref().unwrap_or("{}")).unwrap_or_default();
    let pb: serde_json::Value = serde_json::from_str(b.params.as_deref().unwrap_or("{}")).unwrap_or_default();
    if let (Some(oa), Some(ob)) = (pa.as_object(), pb.as_object()) {
        out.push(String::new());
        out.push("parameters that differ:".into());
        for (k, va) in oa {
            let vb = ob.get(k).cloned().unwrap_or_default();
            if *va != vb {
                out.push(format!("{k:<16} {:<26} {:<26}", va.to_string(), vb.to_string()));
            }
        }
    }
    out
}

/// The check of a run before it starts, as the new-run form shows it: memory against what is
/// free, the split, the token lengths with a histogram, and examples with trained tokens in
/// [brackets].
pub fn plan_lines(p: &crate::service::TrainPlan) -> Vec<String> {
    let advice = match p.memory_4bit {
        _ if p.fits() => String::new(),
        Some(q) if q <= p.memory_available => format!(" (will not fit; with base precision nf4, QLoRA, about {}, which fits)", bytes(q)),
        _ => " (will not fit: lower max length or micro-batch, or use LoRA)".to_string(),
    };
    let mut out = vec![
        format!("memory: about {} of {} available{advice}", bytes(p.memory_needed), bytes(p.memory_available)),
        format!("{} train / {} eval examples", p.train_examples, p.eval_examples),
        format!(
            "tokens per example: min {} median {} p95 {} max {}; {} longer than {}",
            p.lengths.min, p.lengths.median, p.lengths.p95, p.lengths.max, p.lengths.truncated, p.max_len
        ),
    ];
    let top = p.lengths.histogram.iter().map(|h| h.1).max().unwrap_or(1).max(1);
    for (upper, n) in &p.lengths.histogram {
        out.push(format!("  ≤{upper:>5} {:<30} {n}", "█".repeat(n * 30 / top)));
    }
    out.push("examples (trained tokens in [brackets]):".into());
    for e in &p.examples {
        out.push(format!("  {}", e.replace('\n', "⏎")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::plan_lines;
    use crate::engine::train::text::length_stats;
    use crate::service::TrainPlan;

    #[test]
    fn a_plan_that_does_not_fit_offers_the_4bit_base_when_that_fits() {
        let gib = 1u64 << 30;
        let plan = |needed, four| TrainPlan {
            memory_needed: needed,
            memory_available: 8 * gib,
            memory_4bit: four,
            train_examples: 1,
            eval_examples: 1,
            max_len: 8,
            lengths: length_stats(&[4], 8),
            examples: vec![],
        };
        assert_eq!(plan_lines(&plan(6 * gib, Some(2 * gib)))[0], "memory: about 6.0 GiB of 8.0 GiB available");
        assert!(plan_lines(&plan(11 * gib, Some(2 * gib)))[0].contains("with base precision nf4, QLoRA, about 2.0 GiB, which fits"));
        assert!(plan_lines(&plan(11 * gib, Some(9 * gib)))[0].contains("lower max length"));
        assert!(plan_lines(&plan(11 * gib, None))[0].contains("lower max length"));
    }
}
