//! Data preparation: a view's examples through the model's template and tokenizer, truncated or
//! packed into training units, split into train and eval, with the length distribution and a hash
//! of the rows for the run record; and the preview a user sees before starting.

use super::config::ModelConfig;
use super::spec::RunSpec;
use super::text::{length_stats, Encoded, LengthStats, TextCodec};
use super::weights::{fnv, FNV0};
use crate::engine::data::views::{Example, Split};
use crate::engine::data::Catalog;

/// Units of training: one example each, or packed sequences.
pub(super) struct Prepared {
    pub(super) codec: TextCodec,
    pub(super) cfg: ModelConfig,
    pub(super) train: Vec<Encoded>,
    pub(super) eval: Vec<Encoded>,
    pub(super) eval_examples: Vec<Example>,
    pub(super) lengths: LengthStats,
    pub(super) rows_hash: String,
    pub(super) view_sql: String,
}

pub(super) fn truncate(mut e: Encoded, max_len: usize) -> Option<Encoded> {
    e.ids.truncate(max_len);
    e.train.truncate(max_len);
    if e.trained_tokens() == 0 {
        None
    } else {
        Some(e)
    }
}

pub(super) fn pack(units: Vec<Encoded>, max_len: usize) -> Vec<Encoded> {
    let mut out = Vec::new();
    let mut cur = Encoded { ids: Vec::new(), train: Vec::new() };
    for u in units {
        if !cur.ids.is_empty() && cur.ids.len() + u.ids.len() > max_len {
            out.push(std::mem::replace(&mut cur, Encoded { ids: Vec::new(), train: Vec::new() }));
        }
        cur.ids.extend(u.ids);
        cur.train.extend(u.train);
    }
    if !cur.ids.is_empty() {
        out.push(cur);
    }
    out
}

pub(super) fn prepare(catalog: &Catalog, spec: &RunSpec) -> Result<Prepared, String> {
    let cfg = ModelConfig::load(&spec.model).map_err(|e| e.to_string())?;
    let codec = TextCodec::load(&spec.model)?;
    if codec.vocab_size() > cfg.vocab_size {
        return Err(format!(
            "The tokenizer in {} has {} tokens but config.json says vocab_size {}; the folder mixes two models.",
            spec.model.display(),
            codec.vocab_size(),
            cfg.vocab_size
        ));
    }
    let info = catalog.view_info(&spec.view).map_err(|e| e.to_string())?;
    let train_ex = catalog.examples(&spec.view, Split::Train, None).map_err(|e| e.to_string())?;
    if train_ex.is_empty() {
        return Err(format!(
            "View {} has no rows in its train split; check its SQL with `lathe data view show {}`.",
            spec.view, spec.view
        ));
    }
    let eval_ex = catalog.examples(&spec.view, Split::Eval, Some(spec.config.eval_max.max(spec.config.exact_match))).map_err(|e| e.to_string())?;
    let mut h = FNV0;
    let mut lengths = Vec::with_capacity(train_ex.len());
    let mut train = Vec::with_capacity(train_ex.len());
    for ex in &train_ex {
        h = fnv(serde_json::to_string(ex).unwrap_or_default().as_bytes(), h);
        let enc = codec.encode(ex)?;
        lengths.push(enc.ids.len());
        if let Some(e) = truncate(enc, spec.config.max_len) {
            train.push(e);
        }
    }
    let stats = length_stats(&lengths, spec.config.max_len);
    if train.is_empty() {
        return Err(format!(
            "Every example of view {} loses its whole answer at max_len {} (shortest is {} tokens); raise --max-len.",
            spec.view, spec.config.max_len, stats.min
        ));
    }
    let mut eval = Vec::new();
    for ex in eval_ex.iter().take(spec.config.eval_max) {
        if let Some(e) = truncate(codec.encode(ex)?, spec.config.max_len) {
            eval.push(e);
        }
    }
    if spec.config.packing {
        train = pack(train, spec.config.max_len);
    }
    Ok(Prepared { codec, cfg, train, eval, eval_examples: eval_ex, lengths: stats, rows_hash: format!("{h:016x}"), view_sql: info.sql })
}

/// A few examples as tokens with their loss mask, and the length distribution: what a user sees
/// before starting.
pub struct Preview {
    pub examples: Vec<String>,
    pub lengths: LengthStats,
    pub train_examples: usize,
    pub eval_examples: usize,
}

pub fn preview(catalog: &Catalog, spec: &RunSpec, n: usize) -> Result<Preview, String> {
    let p = prepare(catalog, spec)?;
    let examples = p.train.iter().take(n).map(|e| super::text::render_mask(&p.codec, e)).collect();
    Ok(Preview { examples, lengths: p.lengths, train_examples: p.train.len(), eval_examples: p.eval.len() })
}
