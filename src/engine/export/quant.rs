//! The file types a GGUF export can have: f32 and f16 written by lathe, every other one made by
//! llama.cpp's quantizer (`llama_model_quantize`), named as `llama-quantize` names them. Each knows
//! its llama.cpp file type, its bits per weight as llama-quantize lists them, and whether llama.cpp
//! refuses to make it without an importance matrix (the 1- and 2-bit IQ types, IQ3_XXS, Q2_K_S).

/// One GGUF file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Quant {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6K,
    Q5KM,
    Q5KS,
    Q5_1,
    Q5_0,
    Q4KM,
    Q4KS,
    Q4_1,
    Q4_0,
    IQ4NL,
    IQ4XS,
    Q3KL,
    Q3KM,
    Q3KS,
    IQ3M,
    IQ3S,
    IQ3XS,
    IQ3XXS,
    Q2K,
    Q2KS,
    IQ2M,
    IQ2S,
    IQ2XS,
    IQ2XXS,
    IQ1M,
    IQ1S,
}

use llama_cpp_sys_2 as sys;

/// (type, name, llama.cpp file type, bits per weight as llama-quantize lists them for a 7B Llama)
const TYPES: &[(Quant, &str, u32, f32)] = &[
    (Quant::F32, "f32", sys::LLAMA_FTYPE_ALL_F32, 32.0),
    (Quant::F16, "f16", sys::LLAMA_FTYPE_MOSTLY_F16, 16.0),
    (Quant::BF16, "bf16", sys::LLAMA_FTYPE_MOSTLY_BF16, 16.0),
    (Quant::Q8_0, "q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0, 8.5),
    (Quant::Q6K, "q6_k", sys::LLAMA_FTYPE_MOSTLY_Q6_K, 6.56),
    (Quant::Q5KM, "q5_k_m", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M, 5.67),
    (Quant::Q5KS, "q5_k_s", sys::LLAMA_FTYPE_MOSTLY_Q5_K_S, 5.52),
    (Quant::Q5_1, "q5_1", sys::LLAMA_FTYPE_MOSTLY_Q5_1, 6.0),
    (Quant::Q5_0, "q5_0", sys::LLAMA_FTYPE_MOSTLY_Q5_0, 5.5),
    (Quant::Q4KM, "q4_k_m", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M, 4.89),
    (Quant::Q4KS, "q4_k_s", sys::LLAMA_FTYPE_MOSTLY_Q4_K_S, 4.58),
    (Quant::Q4_1, "q4_1", sys::LLAMA_FTYPE_MOSTLY_Q4_1, 5.0),
    (Quant::Q4_0, "q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0, 4.5),
    (Quant::IQ4NL, "iq4_nl", sys::LLAMA_FTYPE_MOSTLY_IQ4_NL, 4.5),
    (Quant::IQ4XS, "iq4_xs", sys::LLAMA_FTYPE_MOSTLY_IQ4_XS, 4.25),
    (Quant::Q3KL, "q3_k_l", sys::LLAMA_FTYPE_MOSTLY_Q3_K_L, 4.27),
    (Quant::Q3KM, "q3_k_m", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M, 3.91),
    (Quant::Q3KS, "q3_k_s", sys::LLAMA_FTYPE_MOSTLY_Q3_K_S, 3.5),
    (Quant::IQ3M, "iq3_m", sys::LLAMA_FTYPE_MOSTLY_IQ3_M, 3.66),
    (Quant::IQ3S, "iq3_s", sys::LLAMA_FTYPE_MOSTLY_IQ3_S, 3.44),
    (Quant::IQ3XS, "iq3_xs", sys::LLAMA_FTYPE_MOSTLY_IQ3_XS, 3.3),
    (Quant::IQ3XXS, "iq3_xxs", sys::LLAMA_FTYPE_MOSTLY_IQ3_XXS, 3.06),
    (Quant::Q2K, "q2_k", sys::LLAMA_FTYPE_MOSTLY_Q2_K, 2.96),
    (Quant::Q2KS, "q2_k_s", sys::LLAMA_FTYPE_MOSTLY_Q2_K_S, 2.96),
    (Quant::IQ2M, "iq2_m", sys::LLAMA_FTYPE_MOSTLY_IQ2_M, 2.7),
    (Quant::IQ2S, "iq2_s", sys::LLAMA_FTYPE_MOSTLY_IQ2_S, 2.5),
    (Quant::IQ2XS, "iq2_xs", sys::LLAMA_FTYPE_MOSTLY_IQ2_XS, 2.31),
    (Quant::IQ2XXS, "iq2_xxs", sys::LLAMA_FTYPE_MOSTLY_IQ2_XXS, 2.06),
    (Quant::IQ1M, "iq1_m", sys::LLAMA_FTYPE_MOSTLY_IQ1_M, 1.75),
    (Quant::IQ1S, "iq1_s", sys::LLAMA_FTYPE_MOSTLY_IQ1_S, 1.56),
];

impl Quant {
    /// Every type, largest first.
    pub fn all() -> impl Iterator<Item = Quant> {
        TYPES.iter().map(|t| t.0)
    }

    fn row(self) -> &'static (Quant, &'static str, u32, f32) {
        TYPES.iter().find(|t| t.0 == self).expect("every type is in the table")
    }

    /// A name as llama-quantize takes it (any case; q4_k is q4_k_m, as there).
    pub fn parse(s: &str) -> Result<Quant, String> {
        let lower = s.to_ascii_lowercase();
        let wanted = match lower.as_str() {
            "q3_k" => "q3_k_m",
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        TYPES.iter().find(|t| t.1 == wanted).map(|t| t.0).ok_or_else(|| {
            let names: Vec<&str> = TYPES.iter().map(|t| t.1).collect();
            format!("Unknown quantization {s:?}; use one of {}.", names.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// llama.cpp's file type.
    pub fn ftype(self) -> u32 {
        self.row().2
    }

    /// Bits per weight as llama-quantize lists them (a 7B Llama's mix; small models differ).
    pub fn bits(self) -> f32 {
        self.row().3
    }

    /// Written by lathe itself (no quantizer).
    pub fn is_float(self) -> bool {
        matches!(self, Quant::F32 | Quant::F16)
    }

    /// llama.cpp makes this type only with an importance matrix.
    pub fn needs_imatrix(self) -> bool {
        matches!(self, Quant::IQ2XXS | Quant::IQ2XS | Quant::IQ2S | Quant::IQ2M | Quant::IQ3XXS | Quant::IQ1S | Quant::IQ1M | Quant::Q2KS)
    }

    /// The block every row of a matrix must fill: 32 for the legacy types and IQ4_NL, 256 for
    /// the K and other IQ types (llama.cpp stores a matrix whose rows do not fill them in a
    /// fallback type).
    pub fn block(self) -> usize {
        match self {
            Quant::F32 | Quant::F16 | Quant::BF16 => 1,
            Quant::Q8_0 | Quant::Q5_0 | Quant::Q5_1 | Quant::Q4_0 | Quant::Q4_1 | Quant::IQ4NL => 32,
            _ => 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_rest() {
        for q in Quant::all() {
            assert_eq!(Quant::parse(q.name()), Ok(q));
            assert_eq!(Quant::parse(&q.name().to_uppercase()), Ok(q));
        }
        assert_eq!(Quant::parse("Q4_K"), Ok(Quant::Q4KM));
        let e = Quant::parse("q9_9").unwrap_err();
        assert!(e.contains("iq4_xs") && e.contains("q6_k"), "{e}");
        assert!(Quant::IQ2XXS.needs_imatrix() && Quant::Q2KS.needs_imatrix() && !Quant::Q2K.needs_imatrix() && !Quant::IQ4XS.needs_imatrix());
    }
}
