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
    let all = tokens(g, text);
    let n_chunks = chunks(all.len(), n_ctx)?;
    let mut session = g.session(&Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 })?;
    let bos = g.model.vocab().bos();
    let add_bos = g.model.vocab().should_add_bos();
    let first = n_ctx / 2;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
    let t = Instant::now();
    for c in 0..n_chunks {
        let mut chunk = all[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if add_bos {
            chunk[0] = bos;
        }
        session.score(&chunk, first, &mut |pos, logits| {
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

/// The perplexities of `base` and `quant` on `text` and the KL divergence of `quant` from `base`,
/// chunk by chunk (both models loaded; each chunk is read by the base, then by the quantized
/// file). `on_chunk(done, of, mean KLD so far)`; false stops.
pub fn kl_divergence(base: &Gguf, quant: &Gguf, text: &str, n_ctx: usize, threads: i32, on_chunk: &mut dyn FnMut(usize, usize, f64) -> bool) -> Result<Divergence, String> {
    let n_vocab = base.model.vocab().n_tokens();
    if quant.model.vocab().n_tokens() != n_vocab {
        return Err(format!(
            "{} and {} have different vocabularies ({} and {} tokens); compare files of one model.",
            base.path.display(),
            quant.path.display(),
            n_vocab,
            quant.model.vocab().n_tokens()
        ));
    }
    let all = tokens(base, text);
    let n_chunks = chunks(all.len(), n_ctx)?;
    let opts = Options { ctx: n_ctx as u32, threads, batch: n_ctx.min(2048) as u32 };
    let (mut sb, mut sq) = (base.session(&opts)?, quant.session(&opts)?);
    let add_bos = base.model.vocab().should_add_bos();
    let first = n_ctx / 2;
    // nll sums (base, quant), KLD sums, same-top count, scored count
    let (mut nb, mut nb2, mut nq, mut nq2, mut k, mut k2, mut kmax, mut same, mut count) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64, 0usize, 0usize);
    let (mut secs_b, mut secs_q) = (0.0, 0.0);
    for c in 0..n_chunks {
        let mut chunk = all[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if add_bos {
            chunk[0] = base.model.vocab().bos();
        }
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(n_ctx - first);
        let t = Instant::now();
        sb.score(&chunk, first, &mut |pos, logits| {
            if pos + 1 < n_ctx {
                rows.push(log_probs(logits));
            }
        })?;
        secs_b += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut i = 0;
        sq.score(&chunk, first, &mut |pos, logits| {
            if pos + 1 >= n_ctx {
                return;
            }
            let (lb, lq) = (&rows[i], log_probs(logits));
            i += 1;
            let target = chunk[pos + 1].0 as usize;
            let (vb, vq) = (-lb[target], -lq[target]);
            nb += vb;
            nb2 += vb * vb;
            nq += vq;
            nq2 += vq * vq;
            let d: f64 = lb.iter().zip(&lq).map(|(b, q)| b.exp() * (b - q)).sum::<f64>().max(0.0);
            k += d;
            k2 += d * d;
            kmax = kmax.max(d);
            same += usize::from(argmax(lb) == argmax(&lq));
            count += 1;
        })?;
        secs_q += t.elapsed().as_secs_f64();
        if !on_chunk(c + 1, n_chunks, k / count.max(1) as f64) {
            return Err("stopped".into());
        }
    }
    let ppl = |sum: f64, sum2: f64, secs: f64| {
        let (m, e) = mean_err(sum, sum2, count);
        Perplexity { ppl: m.exp(), ppl_err: e * m.exp(), chunks: n_chunks, n_ctx, scored: count, tokens: n_chunks * n_ctx, secs }
    };
    let (kld, kld_err) = mean_err(k, k2, count);
    Ok(Divergence { base: ppl(nb, nb2, secs_b), quant: ppl(nq, nq2, secs_q), kld, kld_err, kld_max: kmax, same_top: same as f64 / count.max(1) as f64 })
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
