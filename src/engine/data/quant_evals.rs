//! Quantization reports in the catalog: `lathe.quant_evals`, one row per file a report measured
//! (each type with and without the importance matrix, and the f16 file they were made from), and
//! which file is the best trade-off of size against quality.

use duckdb::params;
use serde::{Deserialize, Serialize};

use super::{Catalog, DataError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lathe.quant_evals (
    report VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    quant VARCHAR NOT NULL,
    imatrix BOOLEAN NOT NULL,
    eval VARCHAR NOT NULL,
    calibration VARCHAR,
    path VARCHAR,
    size_bytes UBIGINT NOT NULL,
    ppl DOUBLE NOT NULL,
    ppl_err DOUBLE NOT NULL,
    kld DOUBLE NOT NULL,
    kld_err DOUBLE NOT NULL,
    same_top DOUBLE NOT NULL,
    exact_match DOUBLE,
    exact_asked INTEGER,
    prompt_tps DOUBLE,
    gen_tps DOUBLE,
    n_ctx INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (report, quant, imatrix)
);
";

/// One measured file of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantEval {
    /// The report's id (`q-` and the time it started).
    pub report: String,
    /// The run id or model folder the files were made from.
    pub source: String,
    /// The type's name as `lathe export --quant` takes it (f16 for the reference).
    pub quant: String,
    pub imatrix: bool,
    /// What it was measured on: a view's eval split or a text file.
    pub eval: String,
    /// What the importance matrix came from, when one was used.
    pub calibration: Option<String>,
    /// The file, where the report kept it.
    pub path: Option<String>,
    pub size_bytes: u64,
    pub ppl: f64,
    pub ppl_err: f64,
    /// Mean KL divergence from the f16 file per token (nats; 0 for the f16 file itself).
    pub kld: f64,
    pub kld_err: f64,
    /// How often it ranks the f16 file's first token first.
    pub same_top: f64,
    /// Greedy exact match on the view's answers, where it has answers.
    pub exact_match: Option<f64>,
    pub exact_asked: Option<i64>,
    pub prompt_tps: Option<f64>,
    pub gen_tps: Option<f64>,
    pub n_ctx: i64,
    pub chunks: i64,
    pub created_at: String,
}

impl QuantEval {
    /// `q4_k_m` or `q4_k_m+imatrix`.
    pub fn label(&self) -> String {
        if self.imatrix {
            format!("{}+imatrix", self.quant)
        } else {
            self.quant.clone()
        }
    }

    pub fn is_reference(&self) -> bool {
        self.kld == 0.0 && matches!(self.quant.as_str(), "f16" | "bf16" | "f32")
    }
}

const COLS: &str = "report, source, quant, imatrix, eval, calibration, path, size_bytes, ppl, ppl_err, kld, kld_err, same_top, exact_match, exact_asked, prompt_tps, gen_tps, n_ctx, chunks, CAST(created_at AS VARCHAR)";

impl Catalog {
    /// Records one measured file (a second measurement of the same report and type replaces it).
    pub fn add_quant_eval(&self, e: &QuantEval) -> Result<(), DataError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO lathe.quant_evals (report, source, quant, imatrix, eval, calibration, path, size_bytes, ppl, ppl_err, kld, kld_err, same_top, exact_match, exact_asked, prompt_tps, gen_tps, n_ctx, chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                e.report,
                e.source,
                e.quant,
                e.imatrix,
                e.eval,
                e.calibration,
                e.path,
                e.size_bytes,
                e.ppl,
                e.ppl_err,
                e.kld,
                e.kld_err,
                e.same_top,
                e.exact_match,
                e.exact_asked,
                e.prompt_tps,
                e.gen_tps,
                e.n_ctx,
                e.chunks
            ],
        )?;
        Ok(())
    }

    /// Every measured file, newest report first (ids begin with the time), each report's files
    /// largest first.
    pub fn quant_evals(&self) -> Result<Vec<QuantEval>, DataError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLS} FROM lathe.quant_evals ORDER BY report DESC, size_bytes DESC, imatrix"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(QuantEval {
                report: r.get(0)?,
                source: r.get(1)?,
                quant: r.get(2)?,
                imatrix: r.get(3)?,
                eval: r.get(4)?,
                calibration: r.get(5)?,
                path: r.get(6)?,
                size_bytes: r.get(7)?,
                ppl: r.get(8)?,
                ppl_err: r.get(9)?,
                kld: r.get(10)?,
                kld_err: r.get(11)?,
                same_top: r.get(12)?,
                exact_match: r.get(13)?,
                exact_asked: r.get(14)?,
                prompt_tps: r.get(15)?,
                gen_tps: r.get(16)?,
                n_ctx: r.get(17)?,
                chunks: r.get(18)?,
                created_at: r.get(19)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The best trade-off among one report's files: on the front of files that no smaller file beats
/// in KL divergence, the one farthest below the straight line from the smallest such file to the
/// f16 file (size as a share of the f16 file's, KL divergence as a share of the smallest file's):
/// where shrinking further starts to cost more quality than it saves. None when no file lies
/// below that line (or there is no f16 row to measure against).
pub fn best_tradeoff(rows: &[QuantEval]) -> Option<usize> {
    let reference = rows.iter().find(|r| r.is_reference())?;
    let full = reference.size_bytes.max(1) as f64;
    let mut front: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].is_reference()).collect();
    front.sort_by(|&a, &b| rows[a].size_bytes.cmp(&rows[b].size_bytes).then(rows[a].kld.total_cmp(&rows[b].kld)));
    let mut best_kld = f64::INFINITY;
    front.retain(|&i| {
        let keep = rows[i].kld < best_kld;
        best_kld = best_kld.min(rows[i].kld);
        keep
    });
    let &smallest = front.first()?;
    let (x0, y0) = (rows[smallest].size_bytes as f64 / full, 1.0);
    let top = rows[smallest].kld.max(f64::MIN_POSITIVE);
    // The line from (x0, 1) to (1, 0); a point's depth below it, along y.
    let below = |i: usize| {
        let (x, y) = (rows[i].size_bytes as f64 / full, rows[i].kld / top);
        let line = if x0 >= 1.0 { 0.0 } else { y0 * (1.0 - x) / (1.0 - x0) };
        line - y
    };
    front.into_iter().map(|i| (i, below(i))).filter(|&(_, d)| d > 1e-9).max_by(|a, b| a.1.total_cmp(&b.1)).map(|(i, _)| i)
}

/// What the importance matrix gained a file measured both ways in one report: the share of the
/// perplexity gap between the file made without it and the f16 file that the matrix closes, and the
/// share of the KL divergence it removes (1 = all of it, 0 = none, below 0 = it made the file
/// worse). None for a file made without the matrix, or when the report lacks the f16 file or the
/// file without the matrix; a share is None when there was no gap to close.
pub fn matrix_gain(rows: &[QuantEval], with: &QuantEval) -> Option<(Option<f64>, Option<f64>)> {
    if !with.imatrix {
        return None;
    }
    let reference = rows.iter().find(|r| r.is_reference())?;
    let plain = rows.iter().find(|r| !r.imatrix && r.quant == with.quant && r.report == with.report)?;
    let share = |gap: f64, closed: f64| (gap > 0.0).then(|| closed / gap);
    Some((share(plain.ppl - reference.ppl, plain.ppl - with.ppl), share(plain.kld, plain.kld - with.kld)))
}

/// The share of the perplexity gap to f16 the matrix closed for this row, as the tables show it
/// ("31%", "-" where it does not apply).
pub fn gap_closed(rows: &[QuantEval], r: &QuantEval) -> String {
    match matrix_gain(rows, r) {
        Some((Some(share), _)) => format!("{:.0}%", share * 100.0),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(quant: &str, imatrix: bool, mib: u64, kld: f64) -> QuantEval {
        QuantEval { quant: quant.into(), imatrix, size_bytes: mib << 20, kld, ..Default::default() }
    }

    #[test]
    fn the_knee_of_the_front_is_marked() {
        let rows = vec![
            row("f16", false, 2000, 0.0),
            row("q8_0", false, 1070, 0.0005),
            row("q4_k_m", false, 640, 0.007),
            row("q4_k_m", true, 640, 0.0064),
            row("q3_k_m", false, 520, 0.018),
            row("q2_k", false, 410, 0.06),
        ];
        // q8_0 is nearly free, but q4_k_m with the matrix lies deepest below the line from q2_k
        // to f16 (0.75 below it, q3_k_m 0.63, q8_0 0.58): it is the knee.
        assert_eq!(best_tradeoff(&rows).map(|i| rows[i].label()), Some("q4_k_m+imatrix".into()));
        // A file beaten by a smaller one is never the pick.
        let mut worse = rows.clone();
        worse.push(row("q5_k_m", false, 700, 0.05));
        assert_eq!(best_tradeoff(&worse).map(|i| worse[i].label()), Some("q4_k_m+imatrix".into()));
    }

    #[test]
    fn the_matrix_gain_is_the_share_of_the_gap_to_f16_it_closes() {
        let with_ppl = |quant: &str, imatrix: bool, ppl: f64, kld: f64| QuantEval { ppl, ..row(quant, imatrix, 100, kld) };
        let rows = vec![
            with_ppl("f16", false, 10.0, 0.0),
            with_ppl("q4_k_m", false, 12.0, 0.5),
            with_ppl("q4_k_m", true, 11.5, 0.375),
            with_ppl("q2_k", false, 10.0, 0.0),
            with_ppl("q2_k", true, 10.4, 0.01),
            with_ppl("q3_k_m", true, 11.0, 0.02),
        ];
        assert_eq!(matrix_gain(&rows, &rows[2]), Some((Some(0.25), Some(0.25))));
        assert_eq!(gap_closed(&rows, &rows[2]), "25%");
        assert_eq!(gap_closed(&rows, &rows[1]), "-");
        assert_eq!(matrix_gain(&rows, &rows[1]), None, "a file without the matrix gains nothing from it");
        assert_eq!(matrix_gain(&rows, &rows[4]), Some((None, None)), "no gap to close");
        assert_eq!(matrix_gain(&rows, &rows[5]), None, "no file without the matrix to compare with");
        assert_eq!(matrix_gain(&rows[1..], &rows[2]), None, "no f16 file");
    }

    #[test]
    fn without_a_reference_or_a_knee_nothing_is_marked() {
        assert_eq!(best_tradeoff(&[row("q4_k_m", false, 640, 0.007)]), None);
        // Quality falling in a straight line with size: no file is better than the line.
        let straight = vec![row("f16", false, 1000, 0.0), row("a", false, 500, 0.5), row("b", false, 250, 0.75)];
        assert_eq!(best_tradeoff(&straight), None);
    }
}
