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

use anyhow::{bail, ensure, Context, Result};
use tract_onnx::pb::NodeProto;

/// Values per block: the GGUF's and MatMulNBits' `block_size`.
pub const BLOCK: usize = 32;

/// `(K, N)` of a `MatMulNBits` node, when it is what both [`op`] and
/// [`expand`] compute exactly as written: 4 bits in blocks of [`BLOCK`],
/// weights and scales only (the default zero point 8, no bias), one output.
/// Anything else is an error naming the node.
pub(crate) fn nbits_shape(node: &NodeProto) -> Result<(usize, usize)> {
    let what = || format!("MatMulNBits [{}]", node.name);
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    let required = |name: &str| {
        attr(name)
            .map(|i| i as usize)
            .with_context(|| format!("{} has no attribute {name}", what()))
    };
    ensure!(
        node.input.len() == 3 && node.output.len() == 1,
        "{}: only weights, scales and the default zero point are supported",
        what()
    );
    let (k, n) = (required("K")?, required("N")?);
    if attr("bits").unwrap_or(4) != 4 || required("block_size")? != BLOCK || k % BLOCK != 0 {
        bail!("{}: only 4 bits in blocks of {BLOCK} are supported", what());
    }
    Ok((k, n))
}

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
