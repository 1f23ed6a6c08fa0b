//! Block-quantised weights: how tract runs the completion model's products.
//!
//! The completion model keeps its GGUF's 4-bit blocks as `com.microsoft`
//! `MatMulNBits` nodes (`models/llama_gguf_onnx.py`), so the graph is a
//! quarter of the fp32 one and each token reads a quarter of the bytes.
//! Where the graph runs decides who multiplies them ([`Blocks`]):
//!
//! - Natively, tract runs them as its own Q4_0 block format.
//! - On wasm tract-linalg has no Q4_0 kernel: its packer would dequantise
//!   every weight on every call, several times slower than plain fp32. There
//!   the node loads as this crate's [`op::BlockMatMul`] instead, a kernel
//!   on the blocks as they are, in wasm SIMD, with 16-bit activations and
//!   exact integer sums per block ([`kernel`]). The sandbox then holds the
//!   blocks instead of 655 MB of fp32 weights, and a token reads a quarter
//!   of the bytes: 2.6 to 2.7 times the decode speed of fp32 here.
//! - [`expand`] turns every product back into fp32 before tract sees it:
//!   the exact reference the tests hold the kernels to.

pub mod expand;
pub mod kernel;
pub mod op;

pub use expand::expand;

/// Values per block: the GGUF's and MatMulNBits' `block_size`.
pub const BLOCK: usize = 32;

/// How a tract graph's `MatMulNBits` products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    /// tract's own Q4_0 kernels, on fp32 activations.
    Tract,
    /// [`op::BlockMatMul`]: 4-bit blocks times 16-bit activations.
    Int16,
    /// Expanded to fp32 weights first ([`expand`]): exact, and 4 times the
    /// bytes.
    Expand,
}

impl Blocks {
    /// What runs fastest where this build runs: tract's kernels natively,
    /// ours in wasm.
    pub const HERE: Blocks = if cfg!(target_family = "wasm") {
        Blocks::Int16
    } else {
        Blocks::Tract
    };
}
