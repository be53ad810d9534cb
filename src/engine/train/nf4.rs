//! NF4, QLoRA's 4-bit store of a frozen weight, as bitsandbytes defines it: the weight flattened
//! and cut into blocks of 64, one absmax per block, each value scaled into [-1, 1] and replaced by
//! the index of the nearest of the 16 NormalFloat levels, two indices per byte (the first in the
//! high nibble). Double quantization stores the absmax values again in 8 bits, in blocks of 256,
//! after taking out their mean. Quantizing a tensor here gives the bytes bitsandbytes 0.50's
//! `quantize_4bit` gives (tests/nf4.rs checks them against its output).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// The values within one block of 64 share a scale.
pub const BLOCK: usize = 64;
/// Absmax values share an 8-bit scale per 256 when double-quantized.
pub const BLOCK2: usize = 256;

/// The 16 NormalFloat levels (quantiles of a normal distribution, scaled to [-1, 1], with an
/// exact zero), as float32.
pub const LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' signed dynamic 8-bit code book (`create_dynamic_map(signed=True)`), which double
/// quantization maps the absmax values to: 256 sorted float32 values, as bits.
const DYNAMIC_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// One weight matrix in NF4: (rows, cols) = (out, in), as the safetensors file stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    pub rows: usize,
    pub cols: usize,
    /// Two 4-bit indices per byte, ⌈rows·cols / 2⌉ bytes.
    pub packed: Vec<u8>,
    pub scales: Scales,
}

/// The per-block absmax values, plain or double-quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    Plain(Vec<f32>),
    /// `absmax[i] = DYNAMIC[codes[i]] · state2[i / 256] + offset`.
    Double { codes: Vec<u8>, state2: Vec<f32>, offset: f32 },
}

impl Nf4 {
    /// Quantizes a (rows, cols) matrix given row by row.
    pub fn quantize(x: &[f32], rows: usize, cols: usize, double: bool) -> Nf4 {
        assert_eq!(x.len(), rows * cols, "an NF4 matrix needs rows·cols values");
        let (packed, absmax) = quantize(x);
        let scales = if double { double_quantize(&absmax) } else { Scales::Plain(absmax) };
        Nf4 { rows, cols, packed, scales }
    }

    /// The absmax of every block of 64.
    pub fn absmax(&self) -> Vec<f32> {
        match &self.scales {
            Scales::Plain(a) => a.clone(),
            Scales::Double { codes, state2, offset } => {
                let code = dynamic();
                codes.iter().enumerate().map(|(i, &q)| code[q as usize] * state2[i / BLOCK2] + offset).collect()
            }
        }
    }

    /// The matrix back in float32, row by row (what bitsandbytes' `dequantize_4bit` gives).
    pub fn dequantize(&self) -> Vec<f32> {
        self.dequantize_with(Kernel::detect())
    }

    fn dequantize_with(&self, kernel: Kernel) -> Vec<f32> {
        let n = self.rows * self.cols;
        let absmax = self.absmax();
        let mut out: Vec<f32> = Vec::with_capacity(n);
        // 64 blocks per task: a task per block costs more in scheduling than the block's work.
        out.spare_capacity_mut()[..n].par_chunks_mut(BLOCK * 64).enumerate().for_each(|(t, span)| {
            for (i, chunk) in span.chunks_mut(BLOCK).enumerate() {
                let (b, first) = (t * 64 + i, (t * 64 + i) * BLOCK);
                kernel.block(&self.packed[first / 2..(first + chunk.len()).div_ceil(2)], absmax[b], chunk);
            }
        });
        // SAFETY: every value was written above (the chunks cover 0..n).
        unsafe { out.set_len(n) };
        out
    }

    /// The matrix transposed, (cols, rows) row by row: what x·Wᵀ multiplies by as a contiguous
    /// operand (candle's matmul runs 15-50% faster on it than on a transposed view). Written a
    /// band of 64 columns at a time on every core, 16 rows of blocks per pass, so each pass writes
    /// whole cache lines. With AVX-512 a tile goes straight from the packed bytes to its transposed
    /// place (`tile_avx512`).
    pub fn dequantize_transposed(&self) -> Vec<f32> {
        self.dequantize_transposed_with(Kernel::detect())
    }

    fn dequantize_transposed_with(&self, kernel: Kernel) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        if cols % BLOCK != 0 {
            // Blocks straddle rows: dequantize, then transpose.
            let w = self.dequantize_with(kernel);
            let mut out = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = w[r * cols + c];
                }
            }
            return out;
        }
        let absmax = self.absmax();
        let per_row = cols / BLOCK;
        let mut out: Vec<f32> = Vec::with_capacity(rows * cols);
        out.spare_capacity_mut()[..rows * cols].par_chunks_mut(BLOCK * rows).enumerate().for_each(|(band, dst)| {
            let mut tile = [[MaybeUninit::<f32>::uninit(); BLOCK]; 16];
            for r0 in (0..rows).step_by(16) {
                let n = 16.min(rows - r0);
                #[cfg(target_arch = "x86_64")]
                if matches!(kernel, Kernel::Avx512) && n == 16 {
                    // SAFETY: detect() found AVX-512F; rows r0..r0+16 exist and the band lies inside each.
                    unsafe { tile_avx512(&self.packed, &absmax, r0, band, cols, rows, dst) };
                    continue;
                }
                for (k, t) in tile.iter_mut().enumerate().take(n) {
                    let b = (r0 + k) * per_row + band;
                    kernel.block(&self.packed[b * BLOCK / 2..(b + 1) * BLOCK / 2], absmax[b], t);
                }
                for j in 0..BLOCK {
                    for (k, v) in dst[j * rows + r0..j * rows + r0 + n].iter_mut().enumerate() {
                        *v = tile[k][j];
                    }
                }
            }
        });
        // SAFETY: each band writes its 64 output rows whole: every row r0..rows of each.
        unsafe { out.set_len(rows * cols) };
        out
    }

    /// Bytes held: the packed indices and the scales.
    pub fn bytes(&self) -> usize {
        self.packed.len()
            + match &self.scales {
                Scales::Plain(a) => a.len() * 4,
                Scales::Double { codes, state2, .. } => codes.len() + state2.len() * 4 + 4,
            }
    }
}


/// How a block of 64 is dequantized: with AVX-512 (the 16 levels are one register, so a
/// permute looks up 16 indices at once), or one byte at a time.
#[derive(Clone, Copy)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        Kernel::Scalar
    }

    /// `out[i] = LEVELS[index i of bytes] · absmax`, high nibble first; `out` up to 64 values.
    fn block(self, bytes: &[u8], absmax: f32, out: &mut [MaybeUninit<f32>]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() found AVX-512F; a full block has its 32 bytes and 64 values.
            Kernel::Avx512 if out.len() == BLOCK && bytes.len() == BLOCK / 2 => unsafe { block_avx512(bytes, absmax, out) },
            _ => {
                for (j, v) in out.iter_mut().enumerate() {
                    let b = bytes[j / 2];
                    v.write(LEVELS[if j % 2 == 0 { b >> 4 } else { b & 15 } as usize] * absmax);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(bytes: &[u8], absmax: f32, out: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let table = unsafe { _mm512_loadu_ps(LEVELS.as_ptr()) };
    let scale = _mm512_set1_ps(absmax);
    let low = _mm_set1_epi8(0x0f);
    for g in 0..4 {
        // 8 bytes: 16 indices, interleaved high, low so that value 2j is byte j's high nibble.
        let b = unsafe { _mm_loadl_epi64(bytes.as_ptr().add(8 * g) as *const __m128i) };
        let idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), low), _mm_and_si128(b, low)));
        let v = _mm512_mul_ps(_mm512_permutexvar_ps(idx, table), scale);
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * g) as *mut f32, v) };
    }
}

/// The signed dynamic code book as float32.
pub fn dynamic() -> [f32; 256] {
    DYNAMIC_BITS.map(f32::from_bits)
}

/// The index of the level a scaled value in [-1, 1] takes: how many of the midpoints between
/// adjacent levels (summed in float32, then halved) lie strictly below it; a value exactly on a
/// midpoint takes the lower level.
fn level_of(v: f32) -> u8 {
    static MIDS: std::sync::OnceLock<[f32; 15]> = std::sync::OnceLock::new();
    let mids = MIDS.get_or_init(|| std::array::from_fn(|i| (LEVELS[i] + LEVELS[i + 1]) / 2.0));
    mids.partition_point(|&m| m < v) as u8
}

/// NF4 indices, packed, and the absmax of each block. A full block is scaled by the float32
/// reciprocal of its absmax; the last, partial block (not padded) by dividing by its absmax, which
/// is kept at least 1e-38. An odd count ends with a zero's index in the last low nibble.
fn quantize(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let n = x.len();
    let blocks = n.div_ceil(BLOCK);
    let mut absmax = vec![0f32; blocks];
    let mut idx = vec![0u8; n + n % 2];
    idx.par_chunks_mut(BLOCK).zip(absmax.par_iter_mut()).enumerate().for_each(|(b, (out, am))| {
        let vals = &x[b * BLOCK..(b * BLOCK + BLOCK).min(n)];
        let m = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
        if vals.len() == BLOCK {
            *am = m;
            let inv = 1.0 / m.max(1e-38);
            for (o, v) in out.iter_mut().zip(vals) {
                *o = level_of((v * inv).clamp(-1.0, 1.0));
            }
        } else {
            let m = m.max(1e-38);
            *am = m;
            for (o, v) in out.iter_mut().zip(vals) {
                *o = level_of((v / m).clamp(-1.0, 1.0));
            }
        }
        // The pad of an odd count (past `vals`) is the index of zero.
        for o in out.iter_mut().skip(vals.len()) {
            *o = level_of(0.0);
        }
    });
    let packed = idx.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    (packed, absmax)
}

/// Double quantization of the absmax values: their mean taken out, then each block of 256 scaled
/// by its own absmax and mapped to the dynamic code book through bitsandbytes' 16-bit lookup (the
/// scaled value in [-1, 1] rounded to one of 65536 steps, each step's code precomputed); a block
/// of zeros keeps code 0.
fn double_quantize(absmax: &[f32]) -> Scales {
    let offset = (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
    double_quantize_with(absmax, offset)
}

/// Double quantization around a given offset (the parity test gives bitsandbytes' own mean,
/// which torch sums in an order of its own).
pub fn double_quantize_with(absmax: &[f32], offset: f32) -> Scales {
    let lut = step_codes();
    let centred: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
    let mut codes = vec![0u8; centred.len()];
    let mut state2 = Vec::with_capacity(centred.len().div_ceil(BLOCK2));
    for (vals, out) in centred.chunks(BLOCK2).zip(codes.chunks_mut(BLOCK2)) {
        let m = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
        state2.push(m);
        if m == 0.0 {
            continue;
        }
        let inv = 1.0 / m;
        for (o, v) in out.iter_mut().zip(vals) {
            let t = ((v * inv).clamp(-1.0, 1.0) + 1.0) * 0.5;
            *o = lut[(t * 65535.0 + 0.5) as u16 as usize];
        }
    }
    Scales::Double { codes, state2, offset }
}

/// For each of 65536 steps across [-1, 1], the dynamic code it maps to: how many midpoints of the
/// code book lie strictly below the step's value.
fn step_codes() -> &'static [u8] {
    static LUT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let code = dynamic();
        let mids: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        (0..65536u32)
            .map(|i| {
                let v = -1.0 + (2.0 * i as f32) / 65535.0;
                mids.partition_point(|&m| m < v) as u8
            })
            .collect()
    })
}

/// Rows r0..r0+16 of band `band` (columns band·64..+64) of a (rows, cols) NF4 matrix, written
/// transposed into the band's slice `dst` of the (cols, rows) output: output row j gets 16
/// consecutive values. One gather reads 4 bytes (8 columns) of each of the 16 rows; each column is
/// then a shift, a mask, a permute through the levels and a multiply by the 16 rows' absmax.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(packed: &[u8], absmax: &[f32], r0: usize, band: usize, cols: usize, rows: usize, dst: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let per_row = cols / BLOCK;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let table = unsafe { _mm512_loadu_ps(LEVELS.as_ptr()) };
    let low = _mm512_set1_epi32(15);
    let byte_offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((cols / 2) as i32));
    let am = unsafe { _mm512_i32gather_ps::<4>(_mm512_mullo_epi32(lanes, _mm512_set1_epi32(per_row as i32)), absmax.as_ptr().add(r0 * per_row + band)) };
    let base = unsafe { packed.as_ptr().add((r0 * cols + band * BLOCK) / 2) };
    let out = dst.as_mut_ptr() as *mut f32;
    for m in 0..BLOCK / 8 {
        // Byte q of each lane holds columns 8m+2q (high nibble) and 8m+2q+1 (low).
        let v = unsafe { _mm512_i32gather_epi32::<1>(byte_offsets, base.add(4 * m) as *const _) };
        for q in 0..4 {
            for (c, shift) in [(8 * m + 2 * q, 8 * q as i32 + 4), (8 * m + 2 * q + 1, 8 * q as i32)] {
                let idx = _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(shift)), low);
                let val = _mm512_mul_ps(_mm512_permutexvar_ps(idx, table), am);
                unsafe { _mm512_storeu_ps(out.add(c * rows + r0), val) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_the_dynamic_code_are_sorted() {
        assert!(LEVELS.windows(2).all(|w| w[0] < w[1]) && LEVELS[7] == 0.0);
        let d = dynamic();
        assert!(d.windows(2).all(|w| w[0] < w[1]) && d[255] == 1.0 && d.contains(&0.0));
        assert_eq!(level_of(0.0), 7);
        assert_eq!((level_of(-1.0), level_of(1.0)), (0, 15));
    }

    #[test]
    fn a_round_trip_stays_within_half_a_level_step() {
        let x: Vec<f32> = (0..3 * 100).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        let q = Nf4::quantize(&x, 3, 100, false);
        let back = q.dequantize();
        let am = q.absmax();
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            // The widest gap between levels is 0.304 (of a block's absmax).
            assert!((a - b).abs() <= 0.16 * am[i / BLOCK], "{i}: {a} vs {b}");
        }
        assert_eq!(q.packed.len(), 150);
        // Transposed, with blocks straddling rows (100 columns) and whole blocks per row (128).
        for (rows, cols) in [(3, 100), (37, 128)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1009) as f32 - 500.0) / 300.0).collect();
            let q = Nf4::quantize(&x, rows, cols, false);
            let (w, t) = (q.dequantize(), q.dequantize_transposed());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(w[r * cols + c], t[c * rows + r], "({r}, {c}) of {rows}x{cols}");
                }
            }
        }
        assert_eq!(q.bytes(), 150 + 5 * 4);
    }

    /// Every kernel (AVX-512 where this CPU has it, and the scalar one every CPU runs) gives the
    /// level times the absmax, row by row and transposed, at shapes with partial tiles and blocks.
    #[test]
    fn every_kernel_dequantizes_alike() {
        for (rows, cols) in [(3, 100), (37, 128), (48, 192), (5, 64), (1, 7)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1009) as f32 - 500.0) / 300.0).collect();
            let q = Nf4::quantize(&x, rows, cols, false);
            let am = q.absmax();
            let want: Vec<f32> = (0..rows * cols).map(|i| LEVELS[((q.packed[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15) as usize] * am[i / BLOCK]).collect();
            for kernel in [Kernel::Scalar, Kernel::detect()] {
                assert_eq!(q.dequantize_with(kernel), want, "{rows}x{cols}");
                let t = q.dequantize_transposed_with(kernel);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(t[c * rows + r], want[r * cols + c], "({r}, {c}) of {rows}x{cols}");
                    }
                }
            }
        }
    }
}
