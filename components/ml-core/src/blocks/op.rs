//! `MatMulNBits` as a tract op on [`Matrix`]: 4-bit blocks times 16-bit
//! activations ([`super::kernel`]).
//!
//! [`register`] replaces tract-onnx's loader for `MatMulNBits`, which maps
//! the node onto tract's Q4_0 format. Ours takes the node's constant codes
//! and scales into a [`Matrix`] and wires one [`BlockMatMul`] on the
//! activations; anything the kernel cannot compute exactly as written (other
//! bit widths or block sizes, zero points, a bias) is an error naming the
//! node.

use super::kernel::Matrix;
use std::sync::Arc;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Makes `onnx` load `MatMulNBits` nodes as [`BlockMatMul`].
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("MatMulNBits", load);
}

fn load(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (k, n) = super::nbits_shape(node)?;
    Ok((expand(Loader { k, n }), vec![]))
}

/// The node until its constants are known: wiring reads them.
#[derive(Debug, Clone)]
struct Loader {
    k: usize,
    n: usize,
}

impl Expansion for Loader {
    fn name(&self) -> StaticName {
        "MatMulNBits".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        let n = self.n.to_dim();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank - 1 {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[rank - 1], n.clone())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let constant = |input: usize, what: &str| {
            model
                .outlet_fact(inputs[input])?
                .konst
                .clone()
                .with_context(|| format!("MatMulNBits [{prefix}]: {what} must be a constant"))
        };
        let codes = constant(1, "the weights")?;
        let scales = constant(2, "the scales")?.cast_to::<f32>()?.into_owned();
        let matrix = Matrix::new(
            self.n,
            self.k,
            codes.try_as_plain_ram()?.as_slice::<u8>()?,
            scales.try_as_plain_ram()?.as_slice::<f32>()?,
        )
        .with_context(|| format!("MatMulNBits [{prefix}]"))?;
        model.wire_node(prefix, BlockMatMul(Arc::new(matrix)), &[inputs[0]])
    }
}

/// `x [.., k] · Wᵀ` for a [`Matrix`] `W`, on f32 `x`.
#[derive(Debug, Clone)]
pub struct BlockMatMul(Arc<Matrix>);

/// Two ops are the same when they hold the same weights.
impl PartialEq for BlockMatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BlockMatMul {}

impl Op for BlockMatMul {
    fn name(&self) -> StaticName {
        "BlockMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "4-bit [{}, {}], 16-bit activations",
            self.0.n(),
            self.0.k()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for BlockMatMul {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut shape: TVec<usize> = x.shape().into();
        ensure!(
            shape.last() == Some(&self.0.k()),
            "BlockMatMul: x of shape {shape:?} against K {}",
            self.0.k()
        );
        *shape.last_mut().expect("checked") = self.0.n();
        let mut y = Tensor::zero::<f32>(&shape)?;
        self.0.matmul(
            x.try_as_plain_ram()?.as_slice::<f32>()?,
            y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for BlockMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.datum_type == f32::datum_type(), "BlockMatMul takes f32");
        let mut shape = x.shape.to_tvec();
        let last = shape.last_mut().context("BlockMatMul takes [.., K]")?;
        ensure!(
            *last == self.0.k().to_dim(),
            "BlockMatMul: K {}, not {last}",
            self.0.k()
        );
        *last = self.0.n().to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::expand::tests::{model, nbits, weights};
    use super::*;

    /// Runs `proto` on `x [2, k]` with MatMulNBits loaded as ours.
    fn run_ours(proto: &tract_onnx::pb::ModelProto, x: &[f32], k: usize) -> TractResult<Vec<f32>> {
        let mut onnx = tract_onnx::onnx();
        register(&mut onnx);
        let mut model = onnx.model_for_proto_model(proto)?;
        model.set_input_fact(0, f32::fact([2, k]).into())?;
        let plan = model.into_optimized()?.into_runnable()?;
        let ops: Vec<_> = plan.model().nodes().iter().map(|n| n.op.name()).collect();
        assert!(ops.iter().any(|op| op == "BlockMatMul"), "{ops:?}");
        let y = plan.run(tvec!(Tensor::from_shape(&[2, k], x)?.into()))?;
        Ok(y[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }

    #[test]
    fn loads_matmulnbits_as_ours() {
        let (n, k) = (3, 96);
        let (inits, values) = weights("a", n, k, 5);
        let proto = model(vec![nbits("a", "x", n, k)], inits, &["a"]);
        let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = run_ours(&proto, &x, k).unwrap();
        for (i, got) in y.iter().enumerate() {
            let (row, col) = (i / n, i % n);
            let want: f32 = (0..k).map(|j| x[row * k + j] * values[col * k + j]).sum();
            // The activations' rounding: a step of max|x| / 32767.
            assert!((got - want).abs() < 1e-3, "[{row}, {col}]: {got} != {want}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        let (n, k) = (2, 32);
        let (inits, _) = weights("a", n, k, 3);
        let mut node = nbits("a", "x", n, k);
        node.input.push("zero_points".into());
        let err = run_ours(&model(vec![node], inits.clone(), &["a"]), &[0.0; 64], k).unwrap_err();
        assert!(format!("{err:#}").contains("default zero point"), "{err:#}");

        let three_rows = nbits("a", "x", n + 1, k);
        let err = run_ours(&model(vec![three_rows], inits, &["a"]), &[0.0; 64], k).unwrap_err();
        assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
    }
}
