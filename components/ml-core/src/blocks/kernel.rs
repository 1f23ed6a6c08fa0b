//! 4-bit blocks times 16-bit activations: the product behind [`super::op`].
//!
//! A weight row is blocks of 32 codes `c` in 0..16 with an f32 scale `d`
//! each, standing for `d * (c - 8)`; the codes are packed as MatMulNBits
//! packs them, column `2i` in the low nibble of byte `i` and column `2i + 1`
//! in its high nibble. An activation row is rounded per block of 32 to i16
//! `q` with a scale `e = max|x| / 32767`. One block's product is then
//!
//! ```text
//! d * e * (sum c * q  -  8 * sum q)
//! ```
//!
//! where `sum c * q` is exact in i32 and `8 * e * sum q` is the activation's
//! own constant per block ([`Int16Rows`]), computed once for every weight row.
//!
//! Why 16 bits: llama.cpp rounds activations to int8, and so did this
//! kernel first, on relaxed SIMD's `i32x4.relaxed_dot_i8x16_i7x16_add`. It
//! was no faster in the sandbox (42.4 against 41.3 tokens/s: a token's time
//! is mostly reading the weights), and it changed greedy answers where the
//! exact model's margin is small. The first token of "What is the capital
//! of France?" leads by 0.08 logits in f32; it went the other way, and the
//! answer with it, as it does in llama.cpp. With 16 bits the rounding is
//! 256 times finer, and the sandbox answers as the host does.
//!
//! In wasm, `sum c * q` is four `i32x4.dot_i16x8_s` per block (plain
//! simd128, 8 products each) on the codes widened to 16 bits. Four blocks'
//! sums are gathered into one vector and scaled in f32, lane by lane.
//! Elsewhere [`Matrix::matmul`] runs the same operations in the same order
//! without SIMD, so the native tests check the kernel's arithmetic; the
//! SIMD itself runs in the sandbox, where the server tests check its text.

use super::BLOCK;
use anyhow::{ensure, Result};

/// Bytes of codes per block: two 4-bit codes a byte.
const BLOCK_BYTES: usize = BLOCK / 2;

/// Lanes of one f32 accumulator: blocks are scaled four at a time.
const LANES: usize = 4;

/// An `[n, k]` matrix of 4-bit blocks, the weights of one MatMulNBits node.
#[derive(Debug)]
pub struct Matrix {
    n: usize,
    blocks: usize,
    /// `[n, blocks, 16]`.
    codes: Vec<u8>,
    /// `[n, padded(blocks)]`, zero past `blocks`: the lanes of a last,
    /// partial group of four blocks add nothing.
    scales: Vec<f32>,
}

/// Blocks rounded up to a whole number of lanes.
fn padded(blocks: usize) -> usize {
    blocks.div_ceil(LANES) * LANES
}

impl Matrix {
    /// Takes MatMulNBits' `B` (`[n, k / 32, 16]` bytes) and `scales`
    /// (`[n * k / 32]`), with the default zero point 8.
    pub fn new(n: usize, k: usize, codes: &[u8], scales: &[f32]) -> Result<Self> {
        ensure!(
            k > 0 && k.is_multiple_of(BLOCK),
            "K {k} is not a whole number of blocks of {BLOCK}"
        );
        let blocks = k / BLOCK;
        ensure!(
            codes.len() == n * blocks * BLOCK_BYTES && scales.len() == n * blocks,
            "{} bytes of codes and {} scales do not fit K {k}, N {n}",
            codes.len(),
            scales.len()
        );
        let mut padded_scales = vec![0f32; n * padded(blocks)];
        for (row, scales) in padded_scales
            .chunks_exact_mut(padded(blocks))
            .zip(scales.chunks_exact(blocks))
        {
            row[..blocks].copy_from_slice(scales);
        }
        Ok(Self {
            n,
            blocks,
            codes: codes.to_vec(),
            scales: padded_scales,
        })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input columns.
    pub fn k(&self) -> usize {
        self.blocks * BLOCK
    }

    /// `y [m, n] = x [m, k] · selfᵀ`.
    pub fn matmul(&self, x: &[f32], y: &mut [f32]) {
        let m = x.len() / self.k();
        assert!(
            x.len() == m * self.k() && y.len() == m * self.n,
            "x and y are [m, k] and [m, n]"
        );
        let rows = Int16Rows::new(x, self.blocks);
        // Weight rows outside, activation rows inside: a prompt's rows
        // reuse one weight row from cache, so the weights are read once.
        for (col, (codes, scales)) in self
            .codes
            .chunks_exact(self.blocks * BLOCK_BYTES)
            .zip(self.scales.chunks_exact(padded(self.blocks)))
            .enumerate()
        {
            for row in 0..m {
                y[row * self.n + col] = rows.dot(row, codes, scales);
            }
        }
    }
}

/// Activation rows rounded to i16, a scale per block of 32.
struct Int16Rows {
    blocks: usize,
    /// `[m, blocks, 32]`: per block its 16 even columns, then its 16 odd
    /// ones, to meet the low and the high nibbles of the weights' bytes.
    codes: Vec<i16>,
    /// `[m, padded(blocks)]`: `e`, zero in the padding.
    scales: Vec<f32>,
    /// `[m, padded(blocks)]`: `8 * e * sum q`, what the weights' zero
    /// point takes off each block.
    offsets: Vec<f32>,
}

impl Int16Rows {
    fn new(x: &[f32], blocks: usize) -> Self {
        let m = x.len() / (blocks * BLOCK);
        let mut rows = Self {
            blocks,
            codes: vec![0; m * blocks * BLOCK],
            scales: vec![0.0; m * padded(blocks)],
            offsets: vec![0.0; m * padded(blocks)],
        };
        for (b, (x, codes)) in x
            .chunks_exact(BLOCK)
            .zip(rows.codes.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let at = b / blocks * padded(blocks) + b % blocks;
            // f32::max drops NaN: keep it, so that a non-finite activation
            // makes a non-finite output, as in fp32.
            let max = if x.iter().any(|v| v.is_nan()) {
                f32::NAN
            } else {
                x.iter().fold(0f32, |m, v| m.max(v.abs()))
            };
            let scale = max / 32767.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let (even, odd) = codes.split_at_mut(BLOCK_BYTES);
            let mut sum = 0i32;
            for (i, pair) in x.chunks_exact(2).enumerate() {
                even[i] = (pair[0] * inverse).round() as i16;
                odd[i] = (pair[1] * inverse).round() as i16;
                sum += even[i] as i32 + odd[i] as i32;
            }
            rows.scales[at] = scale;
            rows.offsets[at] = 8.0 * scale * sum as f32;
        }
        rows
    }

    /// Row `row` of x times the weight row `(codes, scales)`.
    fn dot(&self, row: usize, codes: &[u8], scales: &[f32]) -> f32 {
        let padded = padded(self.blocks);
        let dot = Dot {
            blocks: self.blocks,
            codes,
            scales,
            q: &self.codes[row * self.blocks * BLOCK..][..self.blocks * BLOCK],
            e: &self.scales[row * padded..][..padded],
            offsets: &self.offsets[row * padded..][..padded],
        };
        #[cfg(target_family = "wasm")]
        // SAFETY: the slices have the lengths `wasm` reads (blocks of 16
        // codes, 32 activations, padded scales), checked by `Matrix::new`
        // and `Int16Rows::new`.
        unsafe {
            dot.wasm()
        }
        #[cfg(not(target_family = "wasm"))]
        dot.portable()
    }
}

/// One weight row against one activation row.
struct Dot<'a> {
    blocks: usize,
    /// The weight row: `[blocks, 16]` codes, `padded(blocks)` scales.
    codes: &'a [u8],
    scales: &'a [f32],
    /// The activation row: `[blocks, 32]` values, `padded(blocks)` scales
    /// `e` and offsets.
    q: &'a [i16],
    e: &'a [f32],
    offsets: &'a [f32],
}

/// The exact integer `sum c * q` of one block (at most 32 * 15 * 32767,
/// which f32 holds exactly).
#[cfg_attr(target_family = "wasm", allow(dead_code))]
fn block_sum(codes: &[u8], q: &[i16]) -> i32 {
    let (even, odd) = q.split_at(BLOCK_BYTES);
    codes
        .iter()
        .zip(even.iter().zip(odd))
        .map(|(&c, (&e, &o))| (c & 0x0F) as i32 * e as i32 + (c >> 4) as i32 * o as i32)
        .sum()
}

/// Sums lanes as the wasm kernel does: `(l0 + l1) + (l2 + l3)`.
fn lane_sum(l: [f32; LANES]) -> f32 {
    (l[0] + l[1]) + (l[2] + l[3])
}

impl Dot<'_> {
    /// The wasm kernel's arithmetic, in its order, without SIMD.
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    fn portable(&self) -> f32 {
        let (blocks, codes, q) = (self.blocks, self.codes, self.q);
        let (mut sum, mut offset) = ([0f32; LANES], [0f32; LANES]);
        for b in 0..padded(blocks) {
            let lane = b % LANES;
            let s = if b < blocks {
                block_sum(
                    &codes[b * BLOCK_BYTES..][..BLOCK_BYTES],
                    &q[b * BLOCK..][..BLOCK],
                )
            } else {
                0
            };
            sum[lane] += s as f32 * (self.scales[b] * self.e[b]);
            offset[lane] += self.scales[b] * self.offsets[b];
        }
        lane_sum(sum) - lane_sum(offset)
    }

    #[cfg(target_family = "wasm")]
    unsafe fn wasm(&self) -> f32 {
        use core::arch::wasm32::*;
        let (blocks, codes, q) = (self.blocks, self.codes, self.q);
        let low = u8x16_splat(0x0F);
        // `sum c * q` of block b in four i32 lanes (zero past the last block).
        let block = |b: usize| -> v128 {
            if b >= blocks {
                return i32x4_splat(0);
            }
            let c = v128_load(codes.as_ptr().add(b * BLOCK_BYTES) as *const v128);
            let q = q.as_ptr().add(b * BLOCK) as *const v128;
            let (even, odd) = (v128_and(c, low), u8x16_shr(c, 4));
            let s = i32x4_add(
                i32x4_dot_i16x8(u16x8_extend_low_u8x16(even), v128_load(q)),
                i32x4_dot_i16x8(u16x8_extend_high_u8x16(even), v128_load(q.add(1))),
            );
            let s = i32x4_add(
                s,
                i32x4_dot_i16x8(u16x8_extend_low_u8x16(odd), v128_load(q.add(2))),
            );
            i32x4_add(
                s,
                i32x4_dot_i16x8(u16x8_extend_high_u8x16(odd), v128_load(q.add(3))),
            )
        };
        let (mut sum, mut offset) = (f32x4_splat(0.0), f32x4_splat(0.0));
        for b in (0..padded(blocks)).step_by(LANES) {
            let (s0, s1, s2, s3) = (block(b), block(b + 1), block(b + 2), block(b + 3));
            // Transpose and add: lane j becomes block b + j's whole sum.
            let s01 = i32x4_add(
                i32x4_shuffle::<0, 4, 1, 5>(s0, s1),
                i32x4_shuffle::<2, 6, 3, 7>(s0, s1),
            );
            let s23 = i32x4_add(
                i32x4_shuffle::<0, 4, 1, 5>(s2, s3),
                i32x4_shuffle::<2, 6, 3, 7>(s2, s3),
            );
            let s = i32x4_add(
                i32x4_shuffle::<0, 1, 4, 5>(s01, s23),
                i32x4_shuffle::<2, 3, 6, 7>(s01, s23),
            );
            let d = v128_load(self.scales.as_ptr().add(b) as *const v128);
            let scale = f32x4_mul(d, v128_load(self.e.as_ptr().add(b) as *const v128));
            sum = f32x4_add(sum, f32x4_mul(f32x4_convert_i32x4(s), scale));
            let o = v128_load(self.offsets.as_ptr().add(b) as *const v128);
            offset = f32x4_add(offset, f32x4_mul(d, o));
        }
        let lanes = |v: v128| {
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        };
        lane_sum(lanes(sum)) - lane_sum(lanes(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic `[n, k]` matrix: codes, scales, and the values they
    /// stand for.
    fn matrix(n: usize, k: usize) -> (Matrix, Vec<f32>) {
        let codes: Vec<u8> = (0..n * k / 2)
            .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8)
            .collect();
        let scales: Vec<f32> = (0..n * k / BLOCK)
            .map(|i| 0.001 * ((i * 37 % 11) as f32 + 1.0))
            .collect();
        let values = (0..n * k)
            .map(|i| {
                let (row, col) = (i / k, i % k);
                let byte = codes[row * k / 2 + col / 2];
                let code = if col % 2 == 0 { byte & 15 } else { byte >> 4 };
                (code as f32 - 8.0) * scales[row * k / BLOCK + col / BLOCK]
            })
            .collect();
        (Matrix::new(n, k, &codes, &scales).unwrap(), values)
    }

    fn activations(m: usize, k: usize) -> Vec<f32> {
        (0..m * k)
            .map(|i| (i as f32 * 0.731).sin() * (1.0 + (i % 7) as f32))
            .collect()
    }

    /// The product stays within the rounding of the activations (at most
    /// half a step, `e / 2`, per value) and of f32 sums, against f64.
    #[test]
    fn products_stay_within_the_activations_rounding() {
        // 18 and 48 blocks: the shapes of SmolLM2's products, a last group
        // of four blocks partial and whole.
        for (n, k, m) in [(5, 576, 1), (3, 1536, 3), (2, 32, 2)] {
            let (w, values) = matrix(n, k);
            let x = activations(m, k);
            let mut y = vec![0f32; m * n];
            w.matmul(&x, &mut y);
            for row in 0..m {
                let x = &x[row * k..][..k];
                for col in 0..n {
                    let w = &values[col * k..][..k];
                    let exact: f64 = x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let bound: f64 = x
                        .chunks(BLOCK)
                        .zip(w.chunks(BLOCK))
                        .map(|(x, w)| {
                            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                            let step = max as f64 / 32767.0;
                            let weights: f64 = w.iter().map(|v| v.abs() as f64).sum();
                            step / 2.0 * weights
                        })
                        .sum();
                    let magnitude: f64 = x.iter().zip(w).map(|(&a, &b)| (a * b).abs() as f64).sum();
                    let bound = bound + 1e-6 * magnitude;
                    let got = y[row * n + col] as f64;
                    assert!(
                        (got - exact).abs() <= bound,
                        "[{row}, {col}] of [{m}, {k}]·[{n}, {k}]ᵀ: {got} against {exact}, bound {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_activations_per_block_half_away_from_zero() {
        let mut x = vec![0f32; BLOCK];
        x[0] = 65534.0; // the block's largest: 32767, at a scale of 2
        x[1] = -32767.0; // -16383.5
        x[2] = 1.0; // 0.5
        let rows = Int16Rows::new(&x, 1);
        assert_eq!(rows.codes[0], 32767);
        assert_eq!(rows.codes[BLOCK_BYTES], -16384, "odd columns come second");
        assert_eq!(rows.codes[1], 1);
        assert_eq!(rows.scales[0], 2.0);
        assert_eq!(rows.offsets[0], 8.0 * 2.0 * 16384.0);
        assert_eq!(&rows.scales[1..], [0.0; 3], "padding");

        let zeros = Int16Rows::new(&[0.0; BLOCK], 1);
        assert!(zeros.codes.iter().all(|&c| c == 0) && zeros.scales[0] == 0.0);
    }

    #[test]
    fn non_finite_activations_make_non_finite_outputs() {
        let (w, _) = matrix(2, 64);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut x = activations(1, 64);
            x[40] = bad;
            let mut y = [0f32; 2];
            w.matmul(&x, &mut y);
            assert!(y.iter().all(|v| !v.is_finite()), "{bad}: {y:?}");
        }
    }

    #[test]
    fn refuses_weights_that_do_not_fit() {
        let err = Matrix::new(2, 48, &[0; 24], &[1.0; 3]).unwrap_err();
        assert!(err.to_string().contains("blocks of 32"), "{err}");
        let err = Matrix::new(2, 64, &[0; 63], &[1.0; 4]).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
