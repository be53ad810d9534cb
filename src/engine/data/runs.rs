//! Training runs in the catalog: `lathe.runs` (one row per run) and `lathe.metrics` (per-step
//! train metrics and per-eval eval metrics), queryable from the SQL pane.

use duckdb::params;
use serde::Serialize;

use super::{Catalog, DataError};
use crate::engine::types::RunStatus;

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RunRow {
    pub id: String,
    pub status: RunStatus,
    pub method: String,
    pub model: String,
    pub model_hash: Option<String>,
    pub view: String,
    pub view_sql: Option<String>,
    pub rows_hash: Option<String>,
    pub train_examples: Option<i64>,
    pub eval_examples: Option<i64>,
    pub params: Option<String>,
    pub total_steps: Option<i64>,
    pub step: Option<i64>,
    pub train_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub exact_match: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_s: Option<f64>,
    pub artifacts: Option<String>,
    pub message: Option<String>,
    /// How the frozen base was held: f32 or nf4.
    pub base: String,
    /// adamw or adamw8bit.
    pub optimizer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricRow {
    pub step: i64,
    /// "train" or "eval"
    pub kind: String,
    pub loss: f64,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub epoch: Option<f64>,
    pub elapsed_s: Option<f64>,
}

const COLS: &str = "id, status, method, model, model_hash, view, view_sql, rows_hash, train_examples, eval_examples, \
    params, total_steps, step, train_loss, eval_loss, best_eval_loss, exact_match, tokens_per_s, peak_rss_bytes, \
    strftime(created_at, '%Y-%m-%d %H:%M:%S'), strftime(finished_at, '%Y-%m-%d %H:%M:%S'), duration_s, artifacts, message, \
    coalesce(base, 'f32'), coalesce(optimizer, 'adamw')";

fn row(r: &duckdb::Row) -> duckdb::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        status: RunStatus::parse(&r.get::<_, String>(1)?),
        method: r.get(2)?,
        model: r.get(3)?,
        model_hash: r.get(4)?,
        view: r.get(5)?,
        view_sql: r.get(6)?,
        rows_hash: r.get(7)?,
        train_examples: r.get(8)?,
        eval_examples: r.get(9)?,
        params: r.get(10)?,
        total_steps: r.get(11)?,
        step: r.get(12)?,
        train_loss: r.get(13)?,
        eval_loss: r.get(14)?,
        best_eval_loss: r.get(15)?,
        exact_match: r.get(16)?,
        tokens_per_s: r.get(17)?,
        peak_rss_bytes: r.get(18)?,
        created_at: r.get(19)?,
        finished_at: r.get(20)?,
        duration_s: r.get(21)?,
        artifacts: r.get(22)?,
        message: r.get(23)?,
        base: r.get(24)?,
        optimizer: r.get(25)?,
    })
}

impl RunRow {
    /// The weights a run left: its base model with the run's LoRA adapter, or the model folder it
    /// trained (full fine-tuning); Err while it has neither.
    pub fn weights(&self) -> Result<(std::path::PathBuf, Option<std::path::PathBuf>), String> {
        let art = std::path::PathBuf::from(self.artifacts.clone().unwrap_or_default());
        if art.join("adapter_config.json").exists() {
            Ok((self.model.clone().into(), Some(art)))
        } else if art.join("config.json").exists() {
            Ok((art, None))
        } else {
            Err(format!("Run {} has no finished adapter or model ({}); finish or resume it first.", self.id, art.display()))
        }
    }
}

impl Catalog {
    pub fn create_run(&self, r: &RunRow) -> Result<(), DataError> {
        self.conn.execute(
            "INSERT INTO lathe.runs (id, status, method, model, model_hash, view, view_sql, rows_hash, train_examples, \
             eval_examples, params, total_steps, artifacts, base, optimizer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                r.id, r.status.name(), r.method, r.model, r.model_hash, r.view, r.view_sql, r.rows_hash, r.train_examples,
                r.eval_examples, r.params, r.total_steps, r.artifacts, r.base, r.optimizer
            ],
        )?;
        Ok(())
    }

    pub fn set_run_status(&self, id: &str, status: RunStatus, message: Option<&str>) -> Result<(), DataError> {
        self.conn.execute("UPDATE lathe.runs SET status = ?, message = coalesce(?, message) WHERE id = ?", params![status.name(), message, id])?;
        Ok(())
    }

    /// Progress after a logging step or an eval.
    #[allow(clippy::too_many_arguments)]
    pub fn update_run(
        &self,
        id: &str,
        step: usize,
        train_loss: Option<f64>,
        eval_loss: Option<f64>,
        best_eval_loss: Option<f64>,
        tokens_per_s: Option<f64>,
        peak_rss: Option<u64>,
        duration_s: f64,
    ) -> Result<(), DataError> {
        self.conn.execute(
            "UPDATE lathe.runs SET step = ?, train_loss = coalesce(?, train_loss), eval_loss = coalesce(?, eval_loss), \
             best_eval_loss = coalesce(?, best_eval_loss), tokens_per_s = coalesce(?, tokens_per_s), \
             peak_rss_bytes = greatest(coalesce(peak_rss_bytes, 0), coalesce(?, 0)), duration_s = ? WHERE id = ?",
            params![step as i64, train_loss, eval_loss, best_eval_loss, tokens_per_s, peak_rss, duration_s, id],
        )?;
        Ok(())
    }

    pub fn finish_run(&self, id: &str, status: RunStatus, message: Option<&str>, exact_match: Option<f64>) -> Result<(), DataError> {
        self.conn.execute(
            "UPDATE lathe.runs SET status = ?, message = coalesce(?, message), exact_match = coalesce(?, exact_match), \
             finished_at = current_timestamp WHERE id = ?",
            params![status.name(), message, exact_match, id],
        )?;
        Ok(())
    }

    pub fn record_metrics(&self, id: &str, rows: &[MetricRow]) -> Result<(), DataError> {
        let mut stmt = self.conn.prepare(
            "INSERT OR REPLACE INTO lathe.metrics (run_id, step, kind, loss, lr, grad_norm, tokens_per_s, epoch, elapsed_s) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for m in rows {
            stmt.execute(params![id, m.step, m.kind, m.loss, m.lr, m.grad_norm, m.tokens_per_s, m.epoch, m.elapsed_s])?;
        }
        Ok(())
    }

    /// Drops metrics past `step` (a resumed run recomputes them).
    pub fn truncate_metrics(&self, id: &str, step: usize) -> Result<(), DataError> {
        self.conn.execute("DELETE FROM lathe.metrics WHERE run_id = ? AND step > ?", params![id, step as i64])?;
        Ok(())
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, DataError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {COLS} FROM lathe.runs ORDER BY created_at DESC, id DESC"))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn run(&self, id: &str) -> Result<RunRow, DataError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {COLS} FROM lathe.runs WHERE id = ?"))?;
        let mut rows = stmt.query_map([id], row)?;
        match rows.next() {
            Some(r) => Ok(r?),
            None => Err(DataError::User(format!("No run {id}; `lathe runs list` shows the runs of this workspace."))),
        }
    }

    pub fn metrics(&self, id: &str) -> Result<Vec<MetricRow>, DataError> {
        let mut stmt = self.conn.prepare(
            "SELECT step, kind, loss, lr, grad_norm, tokens_per_s, epoch, elapsed_s FROM lathe.metrics WHERE run_id = ? ORDER BY step, kind",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(MetricRow {
                step: r.get(0)?,
                kind: r.get(1)?,
                loss: r.get(2)?,
                lr: r.get(3)?,
                grad_norm: r.get(4)?,
                tokens_per_s: r.get(5)?,
                epoch: r.get(6)?,
                elapsed_s: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs left "running" or "paused" by a process that is gone become "interrupted".
    pub fn mark_interrupted(&self) -> Result<usize, DataError> {
        let n = self.conn.execute(
            "UPDATE lathe.runs SET status = 'interrupted', message = coalesce(message, 'lathe stopped while this run trained; `lathe train --resume ' || id || '` continues it') \
             WHERE status IN ('running', 'paused', 'starting')",
            [],
        )?;
        Ok(n)
    }
}

/// Points of a loss curve: (step, loss).
pub type Curve = Vec<(f64, f64)>;

/// A run's metric rows as (step, loss) curves: training, then evaluation.
pub fn split_metrics(m: &[MetricRow]) -> (Curve, Curve) {
    let t = m.iter().filter(|r| r.kind == "train").map(|r| (r.step as f64, r.loss)).collect();
    let e = m.iter().filter(|r| r.kind == "eval").map(|r| (r.step as f64, r.loss)).collect();
    (t, e)
}

