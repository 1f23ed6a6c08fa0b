//! GELU as one operation, where tract's own detection misses it.
//!
//! BERT-style ONNX exports compute GELU as `((1 + erf(x / sqrt 2)) * 0.5) * x`.
//! tract recognises `0.5 * x * (1 + erf(..))` and `((1 + erf(..)) * x) * 0.5`
//! and fuses them into `GeluExact`, but not this order, so the encoders' four
//! element-wise steps stay separate binary operations. With symbolic batch
//! and sequence sizes tract also cannot prove them large enough for its
//! vectorised by-scalar forms, so each runs element by element through a
//! function pointer: cheap natively, but in wasm every call pays a
//! stack-limit and an epoch check (element-by-element binary operations,
//! most of them these, took about a tenth of a sandboxed embedding's time).
//! Rewriting the chain to tract's `GeluExact` computes the same formula in
//! one pass.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::model::TypedModelHelpers;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Add, Erf, Mul};
use tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact;

/// Replaces every `((1 + erf(x / sqrt 2)) * 0.5) * x` in `model` with
/// `GeluExact(x)`; returns how many it replaced.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    loop {
        let patch = model
            .eval_order()?
            .into_iter()
            .find_map(|id| half_first(model, &model.nodes()[id]).transpose());
        match patch {
            Some(patch) => {
                patch?.apply(model)?;
                fused += 1;
            }
            None => return Ok(fused),
        }
    }
}

/// The patch for the chain through `erf`, if `erf` is the middle of one.
fn half_first(model: &TypedModel, erf: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let is_erf = erf
        .op_as::<ElementWiseOp>()
        .is_some_and(|op| op.0.is::<Erf>());
    if !is_erf || model.outlet_fact(erf.id.into())?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let bin =
        |node: &TypedNode, is: fn(&TypedBinOp) -> bool| node.op_as::<TypedBinOp>().is_some_and(is);
    // x / sqrt 2, as a product with the constant.
    let scale = &model.nodes()[erf.inputs[0].node];
    if !bin(scale, |op| op.0.is::<Mul>())
        || !model.matches_single_input_const(scale, std::f32::consts::FRAC_1_SQRT_2)
    {
        return Ok(None);
    }
    let Some(x) = scale
        .inputs
        .iter()
        .find(|o| model.outlet_fact(**o).is_ok_and(|f| f.konst.is_none()))
        .copied()
    else {
        return Ok(None);
    };
    let Some(one_plus) = model.find_succ_bin_with_const::<Add>(erf, 1.0) else {
        return Ok(None);
    };
    let Some(half) = model.find_succ_bin_with_const::<Mul>(one_plus, 0.5) else {
        return Ok(None);
    };
    let Some(out) = model.single_succ(half.id)? else {
        return Ok(None);
    };
    if !bin(out, |op| op.0.is::<Mul>())
        || !out.inputs.contains(&x)
        || model.outlet_fact(out.id.into())?.shape != model.outlet_fact(x)?.shape
    {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let tap = patch.taps(model, &[x])?;
    let gelu = patch.wire_node(format!("{}.gelu", erf.name), gelu_exact(), &tap)?;
    patch.shunt_outside(model, out.id.into(), gelu[0])?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::math::{add, erf, mul};

    /// The chain as BERT exports it, with `half` for the 0.5.
    fn chain(half: f32) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([7]))?;
        let konst = |m: &mut TypedModel, name: &str, v: f32| m.add_const(name, tensor1(&[v]));
        let c = konst(&mut m, "c", std::f32::consts::FRAC_1_SQRT_2)?;
        let scaled = m.wire_node("scale", mul(), &[x, c])?[0];
        let e = m.wire_node("erf", erf(), &[scaled])?[0];
        let one = konst(&mut m, "one", 1.0)?;
        let one_plus = m.wire_node("one_plus", add(), &[e, one])?[0];
        let half = konst(&mut m, "half", half)?;
        let halved = m.wire_node("halved", mul(), &[one_plus, half])?[0];
        let out = m.wire_node("out", mul(), &[halved, x])?;
        m.select_output_outlets(&out)?;
        Ok(m)
    }

    fn run(model: TypedModel, xs: &[f32]) -> TractResult<Vec<f32>> {
        let out = model
            .into_runnable()?
            .run(tvec!(tensor1(xs).into_tvalue()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }

    #[test]
    fn the_half_first_chain_becomes_one_gelu_with_the_same_values() -> TractResult<()> {
        let xs = [-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 4.0];
        let mut fused = chain(0.5)?;
        assert_eq!(fuse(&mut fused)?, 1);
        let names: Vec<String> = fused.nodes().iter().map(|n| n.op().name().into()).collect();
        assert!(names.iter().any(|n| n == "GeluExact"), "{names:?}");
        assert!(!names.iter().any(|n| n == "Erf"), "{names:?}");
        for (a, b) in run(fused, &xs)?.iter().zip(run(chain(0.5)?, &xs)?) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn other_chains_are_left_alone() -> TractResult<()> {
        // The same steps with 0.25 for the half: not a GELU.
        let mut m = chain(0.25)?;
        assert_eq!(fuse(&mut m)?, 0);
        Ok(())
    }
}
