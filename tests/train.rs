//! Training engine tests on the tiny fixtures that Hugging Face transformers made
//! (tests/fixtures/models/make.py).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use lathe::engine::train::config::ModelConfig;
use lathe::engine::train::model::{Ctx, Model, Trainable};
use lathe::engine::train::rng::Rng;
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
        assert!(d < 1e-4, "{name}: max abs diff {d}");
    }
}
