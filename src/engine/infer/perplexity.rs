//! Perplexity of a GGUF model on a text through llama.cpp, computed as llama.cpp's own perplexity
//! tool computes it, so the figures compare with its: the whole text tokenized once (with BOS
//! where the model wants one, special tokens read as text), cut into chunks of `n_ctx` tokens (the
//! tail that fills no chunk is left out), each chunk read on a fresh cache with its first token
//! replaced by BOS, and only the second half of each chunk scored: position i's logits predict
//! token i + 1 for i from n_ctx/2 to n_ctx - 2, the first half serving as context. PPL is
//! exp(mean negative log-likelihood), with the standard error of that mean carried through. The KL
//! divergence of a quantized file from its base is taken on the same chunks and positions, as
//! llama.cpp's `--kl-divergence` does (here from the base's exact log-probabilities, not its
//! 16-bit copy of them), with how often both models rank the same token first.

use std::time::Instant;

use llama_cpp_2::token::LlamaToken;

use super::llama::{Gguf, Options};

/// What a text's perplexity came to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// One standard error of the PPL (from the spread of the tokens' log-likelihoods).
    pub ppl_err: f64,
    pub chunks: usize,
    pub n_ctx: usize,
    /// Tokens scored (n_ctx/2 - 1 per chunk).
    pub scored: usize,
    /// Tokens read, context included.
    pub tokens: usize,
    pub secs: f64,
}

/// The text as the perplexity tool tokenizes it.
pub fn tokens(g: &Gguf, text: &str) -> Vec<LlamaToken> {
    g.model.vocab().tokenize(text.as_bytes(), true, false)
}

/// The chunks a text of `n` tokens gives at `n_ctx`, or why it is too short (llama.cpp asks for
/// two chunks at least).
pub fn chunks(n: usize, n_ctx: usize) -> Result<usize, String> {
    if n_ctx < 8 {
        return Err(format!("A context of {n_ctx} tokens is too small to measure perplexity; use 8 or more."));
    }
    if n < 2 * n_ctx {
        return Err(format!("The text has {n} tokens and perplexity at a {n_ctx}-token context needs at least {} (two chunks); give a longer text or a smaller context.", 2 * n_ctx));
    }
    Ok(n / n_ctx)
}

/// -log p(target) from one row of logits, in f64 (log-sum-exp from the row's maximum).
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    sum.ln() + max - logits[target] as f64
}

/// The perplexity of `g` on `text` at a context of `n_ctx` tokens; `on_chunk(done, of, ppl so
/// far)` after each chunk (return false to stop: Err "stopped").
pub fn perplexity(g: &Gguf, text: &str, n_ctx: usize, threads: i32, on_chunk: &mut dyn FnMut(usize, usize, f64) -> bool) -> Result<Perplexity, String> {
    let all = cut(g, &tokens(g, text), n_ctx)?;
    let n_chunks = all.len();
    let mut session = g.session(&Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 })?;
    let first = n_ctx / 2;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
    let t = Instant::now();
    for (c, chunk) in all.iter().enumerate() {
        session.score(chunk, first, &mut |pos, logits| {
            if pos + 1 < n_ctx {
                let v = nll(logits, chunk[pos + 1].0 as usize);
                sum += v;
                sum2 += v * v;
                count += 1;
            }
        })?;
        if !on_chunk(c + 1, n_chunks, (sum / count.max(1) as f64).exp()) {
            return Err("stopped".into());
        }
    }
    let (mean, err) = mean_err(sum, sum2, count);
    let (ppl, ppl_err) = (mean.exp(), err * mean.exp());
    Ok(Perplexity { ppl, ppl_err, chunks: n_chunks, n_ctx, scored: count, tokens: n_chunks * n_ctx, secs: t.elapsed().as_secs_f64() })
}

/// How a quantized file's next-token distributions differ from its base's on one text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Divergence {
    pub base: Perplexity,
    pub quant: Perplexity,
    /// Mean KL(base || quant) per scored token, in nats, with its standard error.
    pub kld: f64,
    pub kld_err: f64,
    pub kld_max: f64,
    /// How often the two put the same token first.
    pub same_top: f64,
}

/// Mean, its standard error, from a sum, a sum of squares and a count.
fn mean_err(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let m = sum / n.max(1) as f64;
    let var = sum2 / n.max(1) as f64 - m * m;
    (m, if n > 1 && var > 0.0 { (var / (n - 1) as f64).sqrt() } else { 0.0 })
}

/// Log-softmax of a row, in f64.
fn log_probs(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&l| l as f64 - lse).collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}

/// Sums over the scored tokens of a comparison: both models' negative log-likelihoods, the KL
/// divergence and the same-top count.
#[derive(Default)]
struct Tally {
    nb: f64,
    nb2: f64,
    nq: f64,
    nq2: f64,
    k: f64,
    k2: f64,
    kmax: f64,
    same: usize,
    count: usize,
}

impl Tally {
    /// One scored position: the base's log-probabilities, the quantized file's logits, the token.
    fn add(&mut self, lb: &[f32], logits: &[f32], target: usize) {
        let lq = log_probs(logits);
        let (vb, vq) = (-(lb[target] as f64), -lq[target]);
        self.nb += vb;
        self.nb2 += vb * vb;
        self.nq += vq;
        self.nq2 += vq * vq;
        let d: f64 = lb.iter().zip(&lq).map(|(&b, q)| (b as f64).exp() * (b as f64 - q)).sum::<f64>().max(0.0);
        self.k += d;
        self.k2 += d * d;
        self.kmax = self.kmax.max(d);
        let top_b = lb.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
        self.same += usize::from(top_b == argmax(&lq));
        self.count += 1;
    }

    fn kld(&self) -> f64 {
        self.k / self.count.max(1) as f64
    }

    fn finish(&self, chunks: usize, n_ctx: usize, secs_b: f64, secs_q: f64) -> Divergence {
        let ppl = |sum: f64, sum2: f64, secs: f64| {
            let (m, e) = mean_err(sum, sum2, self.count);
            Perplexity { ppl: m.exp(), ppl_err: e * m.exp(), chunks, n_ctx, scored: self.count, tokens: chunks * n_ctx, secs }
        };
        let (kld, kld_err) = mean_err(self.k, self.k2, self.count);
        Divergence {
            base: ppl(self.nb, self.nb2, secs_b),
            quant: ppl(self.nq, self.nq2, secs_q),
            kld,
            kld_err,
            kld_max: self.kmax,
            same_top: self.same as f64 / self.count.max(1) as f64,
        }
    }
}

/// A quantized file must share its base's vocabulary to be compared with it.
fn same_vocab(base: &std::path::Path, n_vocab: usize, quant: &Gguf) -> Result<(), String> {
    let n = quant.model.vocab().n_tokens() as usize;
    if n != n_vocab {
        return Err(format!("{} and {} have different vocabularies ({n_vocab} and {n} tokens); compare files of one model.", base.display(), quant.path.display()));
    }
    Ok(())
}

/// `all` cut into whole chunks of `n_ctx` tokens, each with its first token replaced by the model's
/// BOS where it adds one (the perplexity tool's rule).
pub fn cut(g: &Gguf, all: &[LlamaToken], n_ctx: usize) -> Result<Vec<Vec<LlamaToken>>, String> {
    let n_chunks = chunks(all.len(), n_ctx)?;
    let bos = g.model.vocab().should_add_bos().then(|| g.model.vocab().bos());
    Ok((0..n_chunks)
        .map(|c| {
            let mut chunk = all[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            chunk
        })
        .collect())
}

/// The perplexities of `base` and `quant` on `text` and the KL divergence of `quant` from `base`,
/// chunk by chunk (both models loaded; each chunk is read by the base, then by the quantized
/// file, so memory holds one chunk's rows whatever the text's length). `on_chunk(done, of, mean
/// KLD so far)`; false stops.
pub fn kl_divergence(base: &Gguf, quant: &Gguf, text: &str, n_ctx: usize, threads: i32, on_chunk: &mut dyn FnMut(usize, usize, f64) -> bool) -> Result<Divergence, String> {
    same_vocab(&base.path, base.model.vocab().n_tokens() as usize, quant)?;
    let chunks = cut(base, &tokens(base, text), n_ctx)?;
    let opts = Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 };
    let (mut sb, mut sq) = (base.session(&opts)?, quant.session(&opts)?);
    let first = n_ctx / 2;
    let mut tally = Tally::default();
    let (mut secs_b, mut secs_q) = (0.0, 0.0);
    for (c, chunk) in chunks.iter().enumerate() {
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(n_ctx - first);
        let t = Instant::now();
        sb.score(chunk, first, &mut |pos, logits| {
            if pos + 1 < n_ctx {
                rows.push(log_probs(logits).into_iter().map(|v| v as f32).collect());
            }
        })?;
        secs_b += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut i = 0;
        sq.score(chunk, first, &mut |pos, logits| {
            if pos + 1 < n_ctx {
                tally.add(&rows[i], logits, chunk[pos + 1].0 as usize);
                i += 1;
            }
        })?;
        secs_q += t.elapsed().as_secs_f64();
        if !on_chunk(c + 1, chunks.len(), tally.kld()) {
            return Err("stopped".into());
        }
    }
    Ok(tally.finish(chunks.len(), n_ctx, secs_b, secs_q))
}

/// A token sequence read on a fresh cache and the positions whose next-token prediction is
/// scored (position p's logits predict `tokens[p + 1]`; ascending, each below `tokens.len() - 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub tokens: Vec<LlamaToken>,
    pub scored: Vec<usize>,
}

impl Piece {
    /// A chunk as the perplexity tool scores it: its second half.
    pub fn second_half(chunk: Vec<LlamaToken>) -> Piece {
        let n = chunk.len();
        Piece { scored: (n / 2..n.saturating_sub(1)).collect(), tokens: chunk }
    }
}

/// A base file's log-probabilities at the scored positions of some pieces, read once and kept, so
/// that many quantized files are compared with it without reading it again (`compare`). Memory:
/// scored tokens x vocabulary x 4 bytes.
pub struct BaseScores {
    pub path: std::path::PathBuf,
    pieces: Vec<Piece>,
    n_ctx: usize,
    rows: Vec<Vec<f32>>,
    n_vocab: usize,
    secs: f64,
}

/// Reads each piece with `session` and hands each scored position's logits and target to `row`.
fn read_pieces(session: &mut super::llama::Session, pieces: &[Piece], on_piece: &mut dyn FnMut(usize) -> bool, row: &mut dyn FnMut(&[f32], usize)) -> Result<(), String> {
    for (i, p) in pieces.iter().enumerate() {
        let Some(&first) = p.scored.first() else { continue };
        let mut next = 0;
        session.score(&p.tokens, first, &mut |pos, logits| {
            if p.scored.get(next) == Some(&pos) {
                next += 1;
                row(logits, p.tokens[pos + 1].0 as usize);
            }
        })?;
        if !on_piece(i + 1) {
            return Err("stopped".into());
        }
    }
    Ok(())
}

impl BaseScores {
    /// What `scored` positions keep for a vocabulary of `n_vocab`.
    pub fn bytes_for(scored: usize, n_vocab: usize) -> usize {
        scored * n_vocab * 4
    }

    /// Reads `pieces` with `base`; `on_piece(done, of)`, false stops.
    pub fn read(base: &Gguf, pieces: Vec<Piece>, threads: i32, on_piece: &mut dyn FnMut(usize, usize) -> bool) -> Result<BaseScores, String> {
        let n_ctx = pieces.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        if pieces.iter().all(|p| p.scored.is_empty()) {
            return Err("There is nothing to score: every piece is too short.".into());
        }
        let mut s = base.session(&Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 })?;
        let t = Instant::now();
        let mut rows = Vec::with_capacity(pieces.iter().map(|p| p.scored.len()).sum());
        let of = pieces.len();
        read_pieces(&mut s, &pieces, &mut |done| on_piece(done, of), &mut |logits, _| rows.push(log_probs(logits).into_iter().map(|v| v as f32).collect()))?;
        Ok(BaseScores { path: base.path.clone(), n_vocab: base.model.vocab().n_tokens() as usize, pieces, n_ctx, rows, secs: t.elapsed().as_secs_f64() })
    }

    fn tokens(&self) -> usize {
        self.pieces.iter().map(|p| p.tokens.len()).sum()
    }

    /// The base's own perplexity on the pieces (from the kept log-probabilities).
    pub fn perplexity(&self) -> Perplexity {
        let (mut sum, mut sum2, mut i) = (0.0f64, 0.0f64, 0usize);
        for p in &self.pieces {
            for &pos in &p.scored {
                let v = -(self.rows[i][p.tokens[pos + 1].0 as usize] as f64);
                sum += v;
                sum2 += v * v;
                i += 1;
            }
        }
        let (m, e) = mean_err(sum, sum2, i);
        Perplexity { ppl: m.exp(), ppl_err: e * m.exp(), chunks: self.pieces.len(), n_ctx: self.n_ctx, scored: i, tokens: self.tokens(), secs: self.secs }
    }

    /// The first piece's tokens, for a generation-speed prompt.
    pub fn first_tokens(&self) -> &[LlamaToken] {
        &self.pieces[0].tokens
    }

    /// `quant`'s perplexity on the same pieces and its KL divergence from the base.
    pub fn compare(&self, quant: &Gguf, threads: i32, on_piece: &mut dyn FnMut(usize, usize, f64) -> bool) -> Result<Divergence, String> {
        same_vocab(&self.path, self.n_vocab, quant)?;
        let n_ctx = self.n_ctx;
        let mut s = quant.session(&Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 })?;
        let t = Instant::now();
        let tally = std::cell::RefCell::new(Tally::default());
        let mut i = 0;
        let of = self.pieces.len();
        read_pieces(&mut s, &self.pieces, &mut |done| on_piece(done, of, tally.borrow().kld()), &mut |logits, target| {
            tally.borrow_mut().add(&self.rows[i], logits, target);
            i += 1;
        })?;
        let mut d = tally.into_inner().finish(self.pieces.len(), n_ctx, self.secs, t.elapsed().as_secs_f64());
        d.base.tokens = self.tokens();
        d.quant.tokens = self.tokens();
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_the_negative_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for t in 0..3 {
            let want = -((logits[t] as f64).exp() / z).ln();
            assert!((nll(&logits, t) - want).abs() < 1e-12);
        }
        // Large logits do not overflow.
        assert!((nll(&[1000.0, 1000.0], 0) - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn a_text_must_fill_two_chunks() {
        assert_eq!(chunks(1024, 512), Ok(2));
        assert_eq!(chunks(1500, 512), Ok(2));
        assert!(chunks(1023, 512).unwrap_err().contains("needs at least 1024"));
        assert!(chunks(100, 4).unwrap_err().contains("too small"));
    }
}
