//! Training engine tests on the tiny fixtures that Hugging Face transformers made
//! (tests/fixtures/models/make.py).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use lathe::engine::train::config::ModelConfig;
use lathe::engine::train::model::{Ctx, Model, Trainable};
use lathe::engine::train::rng::Rng;
use lathe::engine::train::base::BasePrecision;
use lathe::engine::train::weights::{load_all, SafetensorsSource};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

fn load(name: &str, trainable: &Trainable) -> Model {
    let dir = fixture(name);
    let cfg = ModelConfig::load(&dir).unwrap();
    let mut src = SafetensorsSource::open(&dir, &Device::Cpu).unwrap();
    Model::build(&cfg, &mut src, trainable, &mut Rng::new(1), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn logits_match_transformers_for_every_family() {
    for name in ["tiny-llama", "tiny-phi", "tiny-qwen2"] {
        let model = load(name, &Trainable::None);
        let r = load_all(&fixture(name).join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids = r["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
        let logits = model.forward(&ids, &mut Ctx::eval()).unwrap();
        assert_eq!(logits.dims(), r["logits"].dims(), "{name}");
        let d = max_abs_diff(&logits, &r["logits"]);
        eprintln!("{name}: logits vs transformers, max abs diff {d:.2e}");
        assert!(d < 1e-4, "{name}: max abs diff {d}");
    }
}

/// QLoRA's view of each fixture: every projection in the decoder layers NF4 (embeddings, norms
/// and the head f32) gives the logits and loss that transformers computes with those weights
/// replaced by bitsandbytes' `dequantize_4bit(quantize_4bit(W))`, which is what a bitsandbytes
/// `Linear4bit` computes when it trains (tests/fixtures/nf4/make_qlora_ref.py); and the same with
/// double quantization (nf4-dq).
#[test]
fn an_nf4_base_matches_bitsandbytes_for_every_family() {
    use lathe::engine::train::base::BasePrecision;
    use lathe::engine::train::model::Held;
    // With double quantization too (the absmax quantized again, bitsandbytes' compress_statistics).
    for (name, precision) in ["tiny-llama", "tiny-phi", "tiny-qwen2"].into_iter().flat_map(|n| [(n, BasePrecision::Nf4), (n, BasePrecision::Nf4Dq)]) {
        let dir = fixture(name);
        let cfg = ModelConfig::load(&dir).unwrap();
        let mut src = SafetensorsSource::open(&dir, &Device::Cpu).unwrap();
        let mut held = Held { src: &mut src, precision };
        let model = Model::build(&cfg, &mut held, &Trainable::None, &mut Rng::new(1), &Device::Cpu).unwrap();
        let kind = precision.name().replace('-', "");
        let refs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/nf4/{}_{kind}_reference.safetensors", name.replace('-', "_")));
        let r = load_all(&refs, &Device::Cpu).unwrap();
        let ids = r["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
        let logits = model.forward(&ids, &mut Ctx::eval()).unwrap();
        let d = max_abs_diff(&logits, &r["logits"]);
        // The mean next-token loss, as transformers shifts it.
        let (b, t, v) = logits.dims3().unwrap();
        let pred = logits.narrow(1, 0, t - 1).unwrap().reshape((b * (t - 1), v)).unwrap();
        let next = ids.narrow(1, 1, t - 1).unwrap().reshape(b * (t - 1)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&pred, &next).unwrap().to_scalar::<f32>().unwrap();
        let want = r["loss"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        eprintln!("{name}: {kind} logits vs bitsandbytes, max abs diff {d:.2e}; loss {loss} vs {want}");
        assert!(d < 1e-4, "{name} {kind}: max abs diff {d}");
        assert!(((loss - want) / want).abs() < 1e-4, "{name} {kind}: loss {loss} vs {want}");
    }
    // Full fine-tuning needs an f32 base: refused in a sentence.
    let dir = fixture("tiny-llama");
    let mut src = SafetensorsSource::open(&dir, &Device::Cpu).unwrap();
    let mut held = Held { src: &mut src, precision: BasePrecision::Nf4 };
    let e = Model::build(&ModelConfig::load(&dir).unwrap(), &mut held, &Trainable::Full, &mut Rng::new(1), &Device::Cpu).err().unwrap();
    assert!(e.contains("LoRA adapter on the nf4 base"), "{e}");
}

use std::sync::atomic::Ordering;

use lathe::engine::data::views::{Example, ViewFormat};
use lathe::engine::data::Catalog;
use lathe::engine::train::export;
use lathe::engine::train::model::LoraSpec;
use lathe::engine::train::text::TextCodec;
use lathe::engine::train::spec::{RunSpec, TrainConfig};
use lathe::engine::types::RunStatus;
use lathe::engine::train::step;
use lathe::engine::train::trainer::{self, Control, Ending, TrainEvent};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn catalog(rows: usize) -> Catalog {
    let cat = Catalog::in_memory().unwrap();
    cat.seed_demo().unwrap();
    let sql = format!("SELECT instruction, input, output FROM instruct ORDER BY id LIMIT {rows}");
    cat.create_view("small", &sql, ViewFormat::Alpaca, 0.2, true).unwrap();
    cat
}

fn quick(method: &str) -> TrainConfig {
    TrainConfig {
        method: method.into(),
        lr: 1e-2,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.1,
        micro_batch: 4,
        grad_accum: 2,
        max_len: 64,
        max_steps: Some(8),
        eval_every: 4,
        eval_max: 8,
        checkpoint_every: 4,
        warmup_ratio: 0.0,
        threads: 1,
        ..TrainConfig::default()
    }
}

fn alpaca(instruction: &str, input: &str, output: &str) -> Example {
    Example::Alpaca { instruction: instruction.into(), input: Some(input.into()), output: output.into() }
}

#[test]
fn lora_gradients_match_finite_differences_and_checkpointing() {
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()] };
    let model = load("tiny-llama", &Trainable::Lora(spec));
    // Only adapters train.
    assert!(model.trainable.iter().all(|(n, _)| n.contains(".lora_A.") || n.contains(".lora_B.")));
    assert_eq!(model.trainable.len(), 2 * 3 * 2);
    // B starts at zero (PEFT); give it values so that A's gradient is not zero too.
    let mut rng = Rng::new(5);
    for (n, v) in &model.trainable {
        if n.contains("lora_B") {
            let t = Tensor::from_vec(rng.normals(v.elem_count(), 0.2), v.shape(), &Device::Cpu).unwrap();
            v.set(&t).unwrap();
        }
    }
    let codec = TextCodec::load(&fixture("tiny-llama")).unwrap();
    let units: Vec<_> = [alpaca("Reverse the letters of the word.", "abcde", "edcba"), alpaca("Add the two numbers.", "12 + 30", "42")]
        .iter()
        .map(|e| codec.encode(e).unwrap())
        .collect();
    let (loss, grads) = step::loss_and_grads(&model, &units, 1, false, None).unwrap();
    let (loss_gc, grads_gc) = step::loss_and_grads(&model, &units, 1, true, None).unwrap();
    assert!((loss - loss_gc).abs() < 1e-6);
    for (g, h) in grads.iter().zip(&grads_gc) {
        let d = max_abs_diff(g.as_ref().unwrap(), h.as_ref().unwrap());
        assert!(d < 1e-6, "gradient checkpointing changed a gradient by {d}");
    }
    let eps = 1e-2f32;
    let mut checked = 0;
    for (k, (name, var)) in model.trainable.iter().enumerate() {
        let g: Vec<f32> = grads[k].as_ref().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // The two largest entries of each gradient.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in idx.iter().take(2) {
            let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let at = |delta: f32| {
                let mut v = orig.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                let (l, _) = step::loss_and_grads(&model, &units, 1, false, None).unwrap();
                l
            };
            let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
            var.set(&Tensor::from_vec(orig, var.shape(), &Device::Cpu).unwrap()).unwrap();
            assert!(g[i].abs() > 1e-4, "{name}: gradient too small to check ({})", g[i]);
            assert!((fd - g[i]).abs() < 2e-3 + 0.03 * g[i].abs(), "{name}[{i}]: backward {} vs finite difference {fd}", g[i]);
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

/// The fused head and loss (no full logits) gives the loss and the gradient to the hidden states
/// that the logits path gives: a separate head with a bias (Phi), a tied one (Qwen2), Llama's.
#[test]
fn the_fused_head_loss_equals_the_logits_path() {
    for name in ["tiny-llama", "tiny-phi", "tiny-qwen2"] {
        let model = load(name, &Trainable::Lora(LoraSpec { r: 2, alpha: 4.0, dropout: 0.0, targets: vec!["q_proj".into()] }));
        let (b, t, h) = (2, 70, model.cfg.hidden_size);
        let mut rng = Rng::new(9);
        let x = candle_core::Var::from_tensor(&Tensor::from_vec(rng.normals(b * t * h, 1.0), (b, t, h), &Device::Cpu).unwrap()).unwrap();
        let targets = Tensor::from_vec((0..b * t).map(|i| (i * 37 % model.cfg.vocab_size) as u32).collect::<Vec<_>>(), (b, t), &Device::Cpu).unwrap();
        let weights = Tensor::from_vec((0..b * t).map(|i| if i % 5 == 0 { 0f32 } else { 1.0 }).collect::<Vec<_>>(), (b, t), &Device::Cpu).unwrap();
        let fused = model.head_loss(x.as_tensor(), &targets, &weights).unwrap().expect("a frozen head fuses");
        let logits = model.head(x.as_tensor(), &mut Ctx::eval()).unwrap();
        let lsm = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1).unwrap();
        let picked = lsm.gather(&targets.unsqueeze(2).unwrap(), 2).unwrap().squeeze(2).unwrap();
        let want = (picked * &weights).unwrap().sum_all().unwrap().neg().unwrap();
        let (a, e) = (fused.to_scalar::<f32>().unwrap(), want.to_scalar::<f32>().unwrap());
        assert!(((a - e) / e).abs() < 1e-5, "{name}: loss {a} vs {e}");
        let ga = fused.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let ge = want.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let d = max_abs_diff(&ga, &ge);
        assert!(d < 1e-5, "{name}: gradient differs by {d}");
    }
    // A head that trains (full fine-tuning) keeps the logits path.
    assert!(load("tiny-llama", &Trainable::Full).head_loss(&Tensor::zeros((1, 2, 64), candle_core::DType::F32, &Device::Cpu).unwrap(), &Tensor::zeros((1, 2), candle_core::DType::U32, &Device::Cpu).unwrap(), &Tensor::ones((1, 2), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap().is_none());
}

/// A head computed a few vocabulary rows at a time (blocks that do not divide the vocabulary) gives
/// the loss and gradient of one block.
#[test]
fn the_fused_head_loss_is_the_same_across_vocabulary_blocks() {
    use candle_core::CustomOp1;
    use lathe::engine::train::ops::HeadLoss;
    let model = load("tiny-phi", &Trainable::Lora(LoraSpec { r: 2, alpha: 4.0, dropout: 0.0, targets: vec!["q_proj".into()] }));
    let head = model.lm_head.as_ref().unwrap();
    let (rows, h) = (50, model.cfg.hidden_size);
    let x = candle_core::Var::from_tensor(&Tensor::from_vec(Rng::new(4).normals(rows * h, 1.0), (rows, h), &Device::Cpu).unwrap()).unwrap();
    let targets: Vec<u32> = (0..rows).map(|i| (i * 53 % model.cfg.vocab_size) as u32).collect();
    let weights: Vec<f32> = (0..rows).map(|i| if i % 7 == 3 { 0.0 } else { 0.5 + (i % 3) as f32 }).collect();
    let op = |block: usize| {
        let op = HeadLoss::new(head.base.clone(), head.bias.clone(), targets.clone(), weights.clone()).unwrap();
        assert_eq!(op.name(), "head-loss");
        x.as_tensor().apply_op1(op.with_block(block)).unwrap()
    };
    let (one, blocked) = (op(model.cfg.vocab_size), op(37));
    let (a, e) = (blocked.to_scalar::<f32>().unwrap(), one.to_scalar::<f32>().unwrap());
    assert!(((a - e) / e).abs() < 1e-6, "loss {a} vs {e}");
    let ga = blocked.backward().unwrap().get(x.as_tensor()).unwrap().clone();
    let ge = one.backward().unwrap().get(x.as_tensor()).unwrap().clone();
    assert!(max_abs_diff(&ga, &ge) < 1e-6, "gradient differs by {}", max_abs_diff(&ga, &ge));
}

/// A checkpoint stored in bf16 keeps its embedding table and head in bf16 when they are frozen
/// (half the memory of f32), and computes exactly what the same values in f32 compute: logits,
/// the fused loss and its gradient, for a separate head with a bias (Phi), a tied one (Qwen2) and
/// Llama's.
#[test]
fn a_bf16_embedding_and_head_stay_bf16_and_change_nothing() {
    use candle_core::DType;
    use lathe::engine::train::base::BaseWeight;
    for name in ["tiny-llama", "tiny-phi", "tiny-qwen2"] {
        let dir = tmp(&format!("bf16-{name}"));
        let tables = |k: &str| k.contains("embed_tokens") || k.starts_with("lm_head.weight");
        let weights = load_all(&fixture(name).join("model.safetensors"), &Device::Cpu).unwrap();
        let mut half = std::collections::HashMap::new();
        let mut rounded = std::collections::HashMap::new();
        for (k, t) in weights {
            let h = if tables(&k) { t.to_dtype(DType::BF16).unwrap() } else { t };
            rounded.insert(k.clone(), h.to_dtype(DType::F32).unwrap());
            half.insert(k, h);
        }
        for (sub, map) in [("half", &half), ("f32", &rounded)] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            std::fs::copy(fixture(name).join("config.json"), dir.join(sub).join("config.json")).unwrap();
            candle_core::safetensors::save(map, dir.join(sub).join("model.safetensors")).unwrap();
        }
        let lora = Trainable::Lora(LoraSpec { r: 2, alpha: 4.0, dropout: 0.0, targets: vec!["q_proj".into()] });
        let build = |sub: &str| {
            let d = dir.join(sub);
            Model::build(&ModelConfig::load(&d).unwrap(), &mut SafetensorsSource::open(&d, &Device::Cpu).unwrap(), &lora, &mut Rng::new(1), &Device::Cpu).unwrap()
        };
        let (a, b) = (build("half"), build("f32"));
        assert_eq!(a.embed.dtype(), DType::BF16, "{name}");
        assert_eq!(b.embed.dtype(), DType::F32, "{name}");
        if let Some(head) = &a.lm_head {
            assert!(matches!(head.base, BaseWeight::Half(_)), "{name}: the head is held as stored");
        }
        let ids = Tensor::from_vec((0..24u32).map(|i| i * 13 % 320).collect::<Vec<_>>(), (2, 12), &Device::Cpu).unwrap();
        let (la, lb) = (a.forward(&ids, &mut Ctx::eval()).unwrap(), b.forward(&ids, &mut Ctx::eval()).unwrap());
        assert!(max_abs_diff(&la, &lb) < 1e-6, "{name}: logits differ by {}", max_abs_diff(&la, &lb));
        let x = candle_core::Var::from_tensor(&Tensor::from_vec(Rng::new(3).normals(24 * 64, 1.0), (2, 12, 64), &Device::Cpu).unwrap()).unwrap();
        let targets = Tensor::from_vec((0..24u32).map(|i| i * 29 % 320).collect::<Vec<_>>(), (2, 12), &Device::Cpu).unwrap();
        let w = Tensor::ones((2, 12), DType::F32, &Device::Cpu).unwrap();
        let (fa, fb) = (a.head_loss(x.as_tensor(), &targets, &w).unwrap().unwrap(), b.head_loss(x.as_tensor(), &targets, &w).unwrap().unwrap());
        let (va, vb) = (fa.to_scalar::<f32>().unwrap(), fb.to_scalar::<f32>().unwrap());
        assert!(((va - vb) / vb).abs() < 1e-6, "{name}: loss {va} vs {vb}");
        let ga = fa.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let gb = fb.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        assert!(max_abs_diff(&ga, &gb) < 1e-6, "{name}: gradient differs by {}", max_abs_diff(&ga, &gb));
        // The merged model (what merge and export write) is f32 throughout.
        assert!(a.merged_tensors().unwrap().values().all(|t| t.dtype() == DType::F32), "{name}");
        assert_eq!(a.param_counts(), b.param_counts(), "{name}");
        assert_eq!(a.param_counts().0, a.merged_tensors().unwrap().values().map(|t| t.elem_count()).sum::<usize>(), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The weights of a fixture with every decoder projection rounded through a base precision
/// (NF4, NF4 with double quantization, bf16) and back, in f32.
struct RoundTripped(SafetensorsSource, lathe::engine::train::base::BasePrecision);

impl lathe::engine::train::model::WeightSource for RoundTripped {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        use lathe::engine::train::base::BasePrecision;
        let t = self.0.get(name, shape)?;
        if !(name.contains(".layers.") && name.ends_with(".weight") && shape.len() == 2) {
            return Ok(t);
        }
        if self.1 == BasePrecision::Bf16 {
            return Ok(t.to_dtype(candle_core::DType::BF16).unwrap().to_dtype(candle_core::DType::F32).unwrap());
        }
        let q = lathe::engine::train::nf4::Nf4::quantize(&t.flatten_all().unwrap().to_vec1().unwrap(), shape[0], shape[1], self.1 == BasePrecision::Nf4Dq);
        Ok(Tensor::from_vec(q.dequantize(), (shape[0], shape[1]), &Device::Cpu).unwrap())
    }
    fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }
}

/// QLoRA's backward: the gradient reaches adapters below NF4 layers, and equals the gradient of
/// the same adapters over the f32 model whose weights are the dequantized NF4 ones, with and
/// without gradient checkpointing; the same for the other held precisions (nf4-dq, bf16).
#[test]
fn adapters_learn_through_a_held_base() {
    use lathe::engine::train::base::BasePrecision;
    use lathe::engine::train::model::Held;
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()] };
    let dir = fixture("tiny-llama");
    let cfg = ModelConfig::load(&dir).unwrap();
    let build = |src: &mut dyn lathe::engine::train::model::WeightSource| Model::build(&cfg, src, &Trainable::Lora(spec.clone()), &mut Rng::new(1), &Device::Cpu).unwrap();
    for precision in [BasePrecision::Nf4, BasePrecision::Nf4Dq, BasePrecision::Bf16] {
        let mut st = SafetensorsSource::open(&dir, &Device::Cpu).unwrap();
        let qlora = build(&mut Held { src: &mut st, precision });
        let dense = build(&mut RoundTripped(SafetensorsSource::open(&dir, &Device::Cpu).unwrap(), precision));
        // Give B values (it starts at zero) so that every adapter's gradient depends on the layers above.
        let mut rng = Rng::new(5);
        for ((n, a), (_, b)) in qlora.trainable.iter().zip(&dense.trainable) {
            if n.contains("lora_B") {
                let t = Tensor::from_vec(rng.normals(a.elem_count(), 0.2), a.shape(), &Device::Cpu).unwrap();
                a.set(&t).unwrap();
                b.set(&t).unwrap();
            }
        }
        let codec = TextCodec::load(&dir).unwrap();
        let units: Vec<_> = [alpaca("Reverse the letters of the word.", "abcde", "edcba"), alpaca("Add the two numbers.", "12 + 30", "42")]
            .iter()
            .map(|e| codec.encode(e).unwrap())
            .collect();
        let (want, want_g) = step::loss_and_grads(&dense, &units, 1, false, None).unwrap();
        for checkpointing in [false, true] {
            let (loss, grads) = step::loss_and_grads(&qlora, &units, 1, checkpointing, None).unwrap();
            assert!((loss - want).abs() < 1e-6, "{precision:?}: loss {loss} vs {want}");
            for ((name, _), (g, h)) in qlora.trainable.iter().zip(grads.iter().zip(&want_g)) {
                let (g, h) = (g.as_ref().unwrap(), h.as_ref().unwrap());
                let scale = h.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(scale > 1e-4, "{name}: no gradient reached it");
                let d = max_abs_diff(g, h);
                assert!(d <= 1e-5 * scale.max(1.0), "{precision:?} {name}: gradient differs by {d} (checkpointing {checkpointing})");
            }
        }
    }
}

#[test]
fn only_completion_tokens_carry_loss() {
    let codec = TextCodec::load(&fixture("tiny-llama")).unwrap();
    assert!(codec.has_template());
    let ex = alpaca("Sort the letters of the word alphabetically.", "dcba", "abcd");
    let enc = codec.encode(&ex).unwrap();
    let start = enc.completion_start().unwrap();
    assert!(enc.train[start..].iter().all(|&t| t));
    assert!(enc.train[..start].iter().all(|&t| !t));
    assert_eq!(codec.tok.decode(&enc.ids[start..], false).unwrap(), "abcd<|end|>\n");
    let prompt = codec.tok.decode(&enc.ids[..start], false).unwrap();
    assert_eq!(prompt, "<|user|>\nSort the letters of the word alphabetically.\n\ndcba<|end|>\n<|assistant|>\n");
    // The chat template in chat_template.jinja (transformers 5 layout) renders the same way.
    let qwen = TextCodec::load(&fixture("tiny-qwen2")).unwrap();
    assert_eq!(qwen.encode(&ex).unwrap(), enc);
    // Multi-turn chat: every assistant turn trains, nothing else.
    let chat = Example::Chat {
        messages: vec![
            lathe::engine::types::Message { role: "system".into(), content: "Convert units.".into() },
            lathe::engine::types::Message { role: "user".into(), content: "2 km to m".into() },
            lathe::engine::types::Message { role: "assistant".into(), content: "2000 m".into() },
            lathe::engine::types::Message { role: "user".into(), content: "3 h to min".into() },
            lathe::engine::types::Message { role: "assistant".into(), content: "180 min".into() },
        ],
    };
    let enc = codec.encode(&chat).unwrap();
    let trained: Vec<u32> = enc.ids.iter().zip(&enc.train).filter(|(_, &t)| t).map(|(&i, _)| i).collect();
    assert_eq!(codec.tok.decode(&trained, false).unwrap(), "2000 m<|end|>\n180 min<|end|>\n");
    // In a batch the mask becomes the loss weights: a prompt-only change leaves the loss alone
    // only through context, and the weights count exactly the completion tokens.
    assert_eq!(enc.trained_tokens(), trained.len());
}

fn run_quick(cat: &Catalog, runs: &std::path::Path, model: &str, cfg: TrainConfig, cancel_at: Option<usize>) -> trainer::Outcome {
    let control = Control::default();
    let c2 = control.clone();
    let spec = RunSpec { model: fixture(model), view: "small".into(), config: cfg };
    trainer::start(cat, runs, spec, &control, &mut |ev| {
        if let (TrainEvent::Checkpoint { step }, Some(at)) = (&ev, cancel_at) {
            if *step == at {
                c2.cancel.store(true, Ordering::Relaxed);
            }
        }
    })
    .unwrap()
}

#[test]
fn lora_runs_end_to_end_for_every_family() {
    for family in ["tiny-llama", "tiny-phi", "tiny-qwen2"] {
        let cat = catalog(120);
        let runs = tmp(&format!("runs-{family}"));
        // An uninterrupted run, and the same run cancelled at its step-4 checkpoint and resumed.
        let full = run_quick(&cat, &runs, family, quick("lora"), None);
        assert_eq!(full.ending, Ending::Completed);
        assert_eq!(full.losses.len(), 8);
        let first = (full.losses[0] + full.losses[1]) / 2.0;
        let last = (full.losses[6] + full.losses[7]) / 2.0;
        assert!(last < first, "{family}: loss did not fall: {:?}", full.losses);
        let cut = run_quick(&cat, &runs, family, quick("lora"), Some(4));
        assert_eq!(cut.ending, Ending::Cancelled);
        assert_eq!(cut.steps, 4);
        assert_eq!(cat.run(&cut.run_id).unwrap().status, RunStatus::Cancelled);
        let resumed = trainer::resume(&cat, &runs, &cut.run_id, &Control::default(), &mut |_| {}).unwrap();
        assert_eq!(resumed.ending, Ending::Completed);
        assert_eq!(resumed.losses, full.losses, "{family}: resume is not bit for bit");
        // The adapter is in PEFT's layout.
        let dir = &resumed.artifact;
        assert!(dir.ends_with("adapter"));
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["lora_alpha"], 8.0);
        assert!(cfg["target_modules"].as_array().unwrap().len() >= 6);
        let tensors = load_all(&dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
        let mcfg = ModelConfig::load(&fixture(family)).unwrap();
        for (name, t) in &tensors {
            assert!(name.starts_with("base_model.model.model.layers."), "{name}");
            assert!(name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight"), "{name}");
            if name.ends_with(".lora_A.weight") {
                assert_eq!(t.dims()[0], 4, "{name}");
            } else {
                assert_eq!(t.dims()[1], 4, "{name}");
            }
        }
        let per_layer = cfg["target_modules"].as_array().unwrap().len() * 2;
        assert_eq!(tensors.len(), per_layer * mcfg.num_layers);
        // It loads back into lathe with the same eval loss, and merges into the base.
        let row = cat.run(&resumed.run_id).unwrap();
        let (with_adapter, codec) = trainer::load_for_eval(&fixture(family), Some(dir), BasePrecision::F32).unwrap();
        let eval: Vec<_> = cat
            .examples("small", lathe::engine::data::views::Split::Eval, Some(8))
            .unwrap()
            .iter()
            .map(|e| codec.encode(e).unwrap())
            .collect();
        let pad = codec.eos.as_ref().unwrap().1;
        let l = step::mean_loss(&with_adapter, &eval, 4, pad).unwrap();
        assert!((l - row.eval_loss.unwrap()).abs() < 1e-4, "{family}: {l} vs {:?}", row.eval_loss);
        let merged = runs.join("merged");
        export::merge(&fixture(family), dir, &merged).unwrap();
        let (m, _) = trainer::load_for_eval(&merged, None, BasePrecision::F32).unwrap();
        let lm = step::mean_loss(&m, &eval, 4, pad).unwrap();
        assert!((lm - l).abs() < 1e-4, "{family}: merged {lm} vs adapter {l}");
        let base = trainer::load_for_eval(&fixture(family), None, BasePrecision::F32).unwrap().0;
        assert!((step::mean_loss(&base, &eval, 4, pad).unwrap() - l).abs() > 1e-3, "{family}: the adapter changed nothing");
        // The catalog has the run and its metrics.
        assert_eq!(row.status, RunStatus::Completed);
        assert_eq!(row.step, Some(8));
        assert!(row.model_hash.is_some() && row.rows_hash.is_some() && row.view_sql.is_some());
        let metrics = cat.metrics(&resumed.run_id).unwrap();
        assert_eq!(metrics.iter().filter(|m| m.kind == "train").count(), 8);
        assert_eq!(metrics.iter().filter(|m| m.kind == "eval").count(), 2);
    }
}

#[test]
fn full_training_saves_a_model_folder_lathe_loads() {
    let cat = catalog(60);
    let runs = tmp("full");
    let mut cfg = quick("full");
    cfg.lr = 3e-3;
    cfg.grad_checkpointing = true;
    let out = run_quick(&cat, &runs, "tiny-qwen2", cfg, None);
    assert!(out.artifact.ends_with("model"));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"] {
        assert!(out.artifact.join(f).exists(), "{f}");
    }
    let (m, _) = trainer::load_for_eval(&out.artifact, None, BasePrecision::F32).unwrap();
    // Tied embeddings stay tied: no lm_head tensor is written.
    assert!(m.lm_head.is_none());
    assert!(out.losses.last().unwrap() < &out.losses[0]);
}

#[test]
fn early_stopping_and_packing() {
    let cat = catalog(60);
    let runs = tmp("early");
    // A learning rate too small to change any weight: the eval loss never improves, so with
    // patience 2 the run stops at the third eval.
    let mut still = quick("lora");
    still.lr = 1e-30;
    still.eval_every = 1;
    still.patience = Some(2);
    let out = run_quick(&cat, &runs, "tiny-llama", still, None);
    assert_eq!(out.ending, Ending::StoppedEarly);
    assert_eq!(out.steps, 3);
    assert_eq!(cat.run(&out.run_id).unwrap().status, RunStatus::StoppedEarly);
    // Packing joins examples into full-length sequences: fewer, longer units.
    let mut packed = quick("lora");
    packed.packing = true;
    packed.max_len = 256;
    packed.max_steps = Some(2);
    let mut started = None;
    trainer::start(&cat, &runs, RunSpec { model: fixture("tiny-llama"), view: "small".into(), config: packed }, &Control::default(), &mut |ev| {
        if let TrainEvent::Started { train_examples, lengths, .. } = ev {
            started = Some((train_examples, lengths.count));
        }
    })
    .unwrap();
    let (units, rows) = started.unwrap();
    assert!(units * 3 < rows, "packing left {units} units from {rows} examples");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let cat = catalog(40);
    let runs = tmp("bad");
    let go = |model: PathBuf, view: &str, cfg: TrainConfig| {
        trainer::start(&cat, &runs, RunSpec { model, view: view.into(), config: cfg }, &Control::default(), &mut |_| {}).unwrap_err()
    };
    let empty = tmp("empty-model");
    assert!(go(empty.clone(), "small", quick("lora")).contains("No config.json"), "no config");
    std::fs::write(empty.join("config.json"), r#"{"model_type": "gpt2", "vocab_size": 10}"#).unwrap();
    let e = go(empty.clone(), "small", quick("lora"));
    assert!(e.contains("lathe trains llama, phi and qwen2"), "{e}");
    cat.create_view("none", "SELECT instruction, input, output FROM instruct WHERE false", ViewFormat::Alpaca, 0.1, true).unwrap();
    let e = go(fixture("tiny-llama"), "none", quick("lora"));
    assert!(e.contains("has no rows"), "{e}");
    let mut short = quick("lora");
    short.max_len = 8;
    let e = go(fixture("tiny-llama"), "small", short);
    assert!(e.contains("raise --max-len"), "{e}");
    let e = go(fixture("tiny-llama"), "missing", quick("lora"));
    assert!(e.to_lowercase().contains("missing"), "{e}");
    // A loss that blows up stops the run and keeps the last good checkpoint.
    let mut wild = quick("full");
    wild.lr = 1e30;
    wild.max_grad_norm = 0.0;
    wild.checkpoint_every = 1;
    let e = go(fixture("tiny-llama"), "small", wild);
    assert!(e.contains("The loss became") && e.contains("last good checkpoint is kept"), "{e}");
    let failed = cat.runs().unwrap().into_iter().find(|r| r.status == RunStatus::Failed).expect("a failed run");
    let ck = runs.join(&failed.id).join("checkpoint/state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ck).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() >= 1);
    assert!(state["losses"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap().is_finite()));
}

#[test]
fn runs_left_running_become_interrupted() {
    let cat = catalog(10);
    let row = lathe::engine::data::runs::RunRow { id: "r1".into(), status: RunStatus::Running, method: "lora".into(), model: "m".into(), view: "v".into(), ..Default::default() };
    cat.create_run(&row).unwrap();
    assert_eq!(cat.mark_interrupted().unwrap(), 1);
    let r = cat.run("r1").unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.message.unwrap().contains("--resume r1"));
}

// ---- The binary, as a user runs it. ----

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn lathe(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lathe"));
    c.env("LATHE_HOME", home).env("XDG_CONFIG_HOME", home.join("config"));
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{:?} failed: {}{}", c, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn small_view(home: &std::path::Path) {
    ok(lathe(home).args(["data", "view", "create", "small", "--format", "alpaca", "--eval-fraction", "0.2", "--sql", "SELECT instruction, input, output FROM instruct ORDER BY id LIMIT 160"]));
}

fn step_losses(json_lines: &str) -> Vec<(u64, f64)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("Step").map(|s| (s["step"].as_u64().unwrap(), s["loss"].as_f64().unwrap())))
        .collect()
}

fn run_id(json_lines: &str) -> String {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("Started").map(|s| s["run_id"].as_str().unwrap().to_string()))
        .expect("a Started event")
}

const TINY: &[&str] = &["--view", "small", "--max-steps", "10", "--checkpoint-every", "3", "--micro-batch", "8", "--grad-accum", "4", "--max-len", "64", "--threads", "1", "--json"];

#[test]
fn cli_demo_runs_eval_and_compare() {
    let home = tmp("cli-demo");
    let a = ok(lathe(&home).args(["train", "--demo", "--max-steps", "6", "--eval-every", "3", "--exact-match", "5"]));
    assert!(a.contains("preview (") && a.contains("[") && a.contains("token lengths:") && a.contains("memory estimate"), "{a}");
    assert!(a.contains("step     6/6") && a.contains("eval  step 6") && a.contains("exact match on eval: "), "{a}");
    assert!(a.contains("completed after 6 steps"), "{a}");
    let b = ok(lathe(&home).args(["train", "--demo", "--max-steps", "3", "--lr", "1e-3", "--json"]));
    let (id_b, list) = (run_id(&b), ok(lathe(&home).args(["runs", "list"])));
    assert_eq!(list.lines().filter(|l| l.contains("completed")).count(), 2, "{list}");
    let id_a = list.lines().find(|l| l.contains("completed") && !l.contains(&id_b)).unwrap().split_whitespace().next().unwrap().to_string();
    let show = ok(lathe(&home).args(["runs", "show", &id_a]));
    assert!(show.contains("loss ") && show.contains("exact match") && show.contains("eval @     6:") && show.contains("view SQL"), "{show}");
    let cmp = ok(lathe(&home).args(["runs", "compare", &id_a, &id_b]));
    assert!(cmp.contains("\"lr\"") || cmp.lines().any(|l| l.starts_with("lr ")), "{cmp}");
    // The trained demo is an ordinary model folder: eval reads it, on a view and on raw text.
    let base = home.join("models/lathe-demo-base");
    let e = ok(lathe(&home).args(["eval", "--model", base.to_str().unwrap(), "--run", &id_a, "--view", "instruct", "--limit", "20"]));
    assert!(e.contains("perplexity") && e.contains("20 examples"), "{e}");
    let text = home.join("t.txt");
    std::fs::write(&text, "Reverse the letters of the word.\n\nabc\n").unwrap();
    let e = ok(lathe(&home).args(["eval", "--model", base.to_str().unwrap(), "--text", text.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(e.trim()).unwrap();
    assert!(v["perplexity"].as_f64().unwrap() > 1.0);
    // The SQL pane sees runs and metrics.
    let q = ok(lathe(&home).args(["sql", "--format", "csv", "SELECT count(*) FROM lathe.metrics WHERE kind = 'train'"]));
    assert!(q.contains("\n9"), "{q}");
}

/// A run killed with SIGKILL after a checkpoint resumes where it was, bit for bit: full
/// fine-tuning with AdamW and with 8-bit moments, and QLoRA with 8-bit moments (r = 64, so the
/// adapters' moments are large enough to be kept in 8 bits).
#[test]
fn sigkill_then_resume_continues_bit_for_bit() {
    let configs: [&[&str]; 3] = [
        &["--method", "full"],
        &["--method", "full", "--optim", "adamw8bit"],
        &["--method", "lora", "--quant-base", "nf4", "--optim", "adamw8bit", "--lora-r", "64"],
    ];
    for (n, config) in configs.iter().enumerate() {
        let home = tmp(&format!("kill-{n}"));
        small_view(&home);
        let model = fixture("tiny-llama");
        let args = || -> Vec<String> {
            let mut v = vec!["train".to_string(), "--model".into(), model.display().to_string()];
            v.extend(config.iter().chain(TINY).map(|s| s.to_string()));
            v
        };
        let whole = step_losses(&ok(lathe(&home).args(args())));
        assert_eq!(whole.len(), 10);
        // The same run, killed with SIGKILL after its step-6 checkpoint.
        let mut child = lathe(&home).args(args()).stdout(Stdio::piped()).spawn().unwrap();
        let mut seen = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("\"Checkpoint\":{\"step\":6}") {
                break;
            }
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let id = run_id(&seen);
        let list = ok(lathe(&home).args(["runs", "list"]));
        let line = list.lines().find(|l| l.contains(&id)).unwrap();
        assert!(line.contains("interrupted"), "{line}");
        let resumed = ok(lathe(&home).args(["train", "--resume", &id, "--json"]));
        let after = step_losses(&resumed);
        assert_eq!(after.first().map(|s| s.0), Some(7), "{config:?}: {resumed}");
        assert_eq!(after, whole[6..].to_vec(), "{config:?}: resumed losses differ from the uninterrupted run");
        assert!(ok(lathe(&home).args(["runs", "show", &id])).contains("completed"));
        if n == 2 {
            // The checkpoint holds the 8-bit moments themselves.
            let ckpt = home.join("runs").join(&id).join("checkpoint/optimizer.safetensors");
            let st = lathe::engine::train::weights::load_all(&ckpt, &Device::Cpu).unwrap();
            assert!(st.iter().any(|(k, t)| k.starts_with("m8.") && t.dtype() == candle_core::DType::U8), "{:?}", st.keys().collect::<Vec<_>>());
        }
    }
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    // With AdamW, and with 8-bit moments (its checkpoint holds codes and scales).
    for optim in ["adamw", "adamw8bit"] {
        let home = tmp(&format!("full-disk-{optim}"));
        small_view(&home);
        let model = fixture("tiny-llama");
        let mut args = vec!["train".to_string(), "--model".into(), model.display().to_string(), "--method".into(), "full".into(), "--optim".into(), optim.into()];
        args.extend(TINY.iter().map(|s| s.to_string()));
        let mut child = lathe(&home).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut seen = String::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "ended early: {seen}");
            seen.push_str(&line);
            if line.contains("\"Checkpoint\":{\"step\":3}") {
                // From now on no file may grow past 200 KB: the next checkpoint (weights ~460 KB)
                // cannot be written, as on a disk that has filled.
                let lim = libc::rlimit { rlim_cur: 200_000, rlim_max: 200_000 };
                assert_eq!(unsafe { libc::prlimit(child.id() as i32, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) }, 0);
                break;
            }
        }
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("Checkpoint at step 6 failed") && err.contains("previous checkpoint is kept"), "{err}");
        let id = run_id(&seen);
        let root = home.join("runs").join(&id);
        let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("checkpoint/state.json")).unwrap()).unwrap();
        assert_eq!(state["step"], 3);
        assert!(!root.join("checkpoint.tmp").exists());
        // With space again, the run resumes from step 3 and finishes.
        let resumed = ok(lathe(&home).args(["train", "--resume", &id, "--json"]));
        assert_eq!(step_losses(&resumed).first().map(|s| s.0), Some(4));
        assert!(ok(lathe(&home).args(["runs", "show", &id])).contains("completed"));
    }
}

/// When torch, transformers and peft are installed, HF peft loads a lathe adapter and computes the
/// same logits as lathe does with it. (CI machines without torch check the layout only, above.)
#[test]
fn hf_peft_loads_a_lathe_adapter_when_available() {
    let has = Command::new("python3").args(["-c", "import torch, peft, transformers"]).output().is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: python3 with torch, transformers and peft is not installed");
        return;
    }
    for family in ["tiny-llama", "tiny-phi", "tiny-qwen2"] {
        let cat = catalog(80);
        let runs = tmp(&format!("peft-{family}"));
        let out = run_quick(&cat, &runs, family, quick("lora"), None);
        let (model, _) = trainer::load_for_eval(&fixture(family), Some(&out.artifact), BasePrecision::F32).unwrap();
        let r = load_all(&fixture(family).join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids = r["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
        let logits = model.forward(&ids, &mut Ctx::eval()).unwrap();
        let mut t = std::collections::BTreeMap::new();
        t.insert("input_ids".to_string(), ids);
        t.insert("logits".to_string(), logits);
        let path = runs.join("lathe_logits.safetensors");
        lathe::engine::train::weights::save_atomic(&t, &path, None).unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/check_peft.py");
        let o = Command::new("python3").arg(script).arg(fixture(family)).arg(&out.artifact).arg(&path).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{family}: peft failed: {}", String::from_utf8_lossy(&o.stderr));
        let d: f64 = text.trim().strip_prefix("max_abs_diff ").unwrap().parse().unwrap();
        eprintln!("{family}: lathe adapter in HF peft, logits max abs diff {d:.2e}");
        assert!(d < 1e-4, "{family}: peft logits differ by {d}");
    }
}

/// Full fine-tuning: gradients of norm weights (the fused RMSNorm's weight gradient), the
/// embeddings and an MLP projection (through the fused SwiGLU) against finite differences.
#[test]
fn full_training_gradients_match_finite_differences() {
    let model = load("tiny-llama", &Trainable::Full);
    let codec = TextCodec::load(&fixture("tiny-llama")).unwrap();
    let units: Vec<_> = [alpaca("Count the letters.", "abcd", "4")].iter().map(|e| codec.encode(e).unwrap()).collect();
    let (_, grads) = step::loss_and_grads(&model, &units, 1, false, None).unwrap();
    let eps = 1e-2f32;
    for want in ["model.layers.0.input_layernorm.weight", "model.norm.weight", "model.layers.1.mlp.gate_proj.weight", "model.embed_tokens.weight"] {
        let k = model.trainable.iter().position(|(n, _)| n == want).unwrap();
        let var = &model.trainable[k].1;
        let g: Vec<f32> = grads[k].as_ref().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let i = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let at = |delta: f32| {
            let mut v = orig.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            step::loss_and_grads(&model, &units, 1, false, None).unwrap().0
        };
        let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
        var.set(&Tensor::from_vec(orig, var.shape(), &Device::Cpu).unwrap()).unwrap();
        assert!(g[i].abs() > 1e-4, "{want}: gradient too small to check");
        assert!((fd - g[i]).abs() < 2e-3 + 0.03 * g[i].abs(), "{want}[{i}]: backward {} vs finite difference {fd}", g[i]);
    }
}
