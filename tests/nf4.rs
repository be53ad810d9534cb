//! NF4 as lathe quantizes it against what bitsandbytes 0.50 gives for the same tensors
//! (tests/fixtures/nf4/nf4_reference.safetensors, made by make_nf4.py beside it): the packed
//! bytes and absmax byte for byte, ties, a partial last block, bf16 inputs, and double
//! quantization of the absmax values.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use lathe::engine::train::nf4::{double_quantize_with, dynamic, Nf4, Scales};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nf4/nf4_reference.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn quantized(f: &HashMap<String, Tensor>, case: &str, double: bool) -> Nf4 {
    let x = &f[&format!("{case}.input")];
    let (rows, cols) = x.dims2().unwrap();
    Nf4::quantize(&f32s(x), rows, cols, double)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn nf4_bytes_equal_bitsandbytes() {
    let f = fixture();
    // a: f32 with outliers, exact zeros and an all-zero block; b: bf16 with a partial last block;
    // d: values exactly on the midpoints between levels (a tie takes the lower level).
    for case in ["a", "b", "d"] {
        let q = quantized(&f, case, false);
        assert_eq!(q.packed, bytes(&f[&format!("{case}.packed")]), "case {case}: packed");
        let Scales::Plain(absmax) = &q.scales else { panic!() };
        assert_eq!(bits(absmax), bits(&f32s(&f[&format!("{case}.absmax")])), "case {case}: absmax");
    }
    // Dequantized, in f32 as bitsandbytes computes it (b's reference is rounded to bf16).
    let a = quantized(&f, "a", false);
    assert_eq!(bits(&a.dequantize()), bits(&f32s(&f["a.dequant"])));
    let b = quantized(&f, "b", false).dequantize();
    let b16: Vec<f32> = Tensor::new(b.as_slice(), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    assert_eq!(bits(&b16), bits(&f32s(&f["b.dequant"])));
}

#[test]
fn double_quantized_scales_equal_bitsandbytes() {
    let f = fixture();
    assert_eq!(bits(&dynamic()), bits(&f32s(&f["c.code2"])));
    for case in ["c", "e"] {
        let q = quantized(&f, case, true);
        assert_eq!(q.packed, bytes(&f[&format!("{case}.packed")]), "case {case}: packed");
        let Scales::Double { offset, .. } = &q.scales else { panic!() };
        // The offset is the absmax values' mean; torch sums them in its own order, so the last
        // bit may differ.
        let want = f32s(&f[&format!("{case}.offset")])[0];
        assert!((offset.to_bits() as i64 - want.to_bits() as i64).abs() <= 1, "case {case}: offset {offset} vs {want}");
        eprintln!("case {case}: offset {offset} ({} ulp from bitsandbytes')", offset.to_bits() as i64 - want.to_bits() as i64);
        // Given bitsandbytes' offset, the 8-bit codes and their scales are its own, bit for bit.
        let Scales::Plain(plain) = quantized(&f, case, false).scales else { panic!() };
        let scales = double_quantize_with(&plain, want);
        let Scales::Double { codes, state2, .. } = &scales else { panic!() };
        assert_eq!(*codes, bytes(&f[&format!("{case}.absmax_q")]), "case {case}: codes");
        assert_eq!(bits(state2), bits(&f32s(&f[&format!("{case}.state2_absmax")])), "case {case}: state2");
        let exact = Nf4 { scales, ..q };
        assert_eq!(bits(&exact.absmax()), bits(&f32s(&f[&format!("{case}.absmax_dequant")])), "case {case}: scales");
    }
    let c = quantized(&f, "c", true);
    let dq = c.dequantize();
    let want = f32s(&f["c.dequant"]);
    let worst = dq.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "double-quantized weights differ by {worst}");
}
