//! The host side of `wasi:nn@0.2.0-rc-2024-10-28`, bound from the WIT that
//! wasmtime-wasi-nn 48 ships (`wit/deps/wasi-nn`). Written on the WIT
//! directly rather than on that crate's backends: its backend trait sees
//! neither the instance's deadline nor its limits, and its errors cannot
//! stop an instance whose deadline passed.
//!
//! Every check of the module essay happens here, before a backend runs.

use super::{HostGraph, MAX_TENSOR_BYTES};
use ml_core::Input;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/wasi-nn",
        world: "ml",
        imports: { default: trappable },
        with: {
            "wasi:nn/graph.graph": super::GraphRes,
            "wasi:nn/tensor.tensor": super::TensorRes,
            "wasi:nn/inference.graph-execution-context": super::ContextRes,
            "wasi:nn/errors.error": super::ErrorRes,
        },
    });
}

use bindings::wasi::nn::errors::{self, ErrorCode};
use bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use bindings::wasi::nn::inference;
use bindings::wasi::nn::tensor::{self, TensorType};

/// What an instance may compute with: its endpoint's graph, within a deadline.
#[derive(Default)]
pub struct NnState {
    /// The one graph `load-by-name` gives; none for a sandboxed instance.
    pub graph: Option<Arc<HostGraph>>,
    /// When the current call must end.
    pub deadline: Option<Instant>,
    /// Bytes of tensors the instance holds now.
    tensor_bytes: usize,
}

impl NnState {
    /// State for an instance that may run `graph` (none: sandboxed).
    pub fn new(graph: Option<Arc<HostGraph>>) -> Self {
        Self {
            graph,
            ..Self::default()
        }
    }
}

/// The deadline passed during a host call: the instance stops as if
/// interrupted (a 408 for the request).
#[derive(Debug, thiserror::Error)]
#[error("the deadline passed during wasi:nn compute")]
pub struct DeadlinePassed;

pub struct GraphRes(Arc<HostGraph>);

pub struct ContextRes {
    graph: Arc<HostGraph>,
    context: Box<dyn super::Context>,
}

pub struct TensorRes {
    dimensions: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

pub struct ErrorRes {
    code: ErrorCode,
    message: String,
}

/// The instance state `wasi:nn` calls see.
pub struct NnView<'a> {
    pub state: &'a mut NnState,
    pub table: &'a mut ResourceTable,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    bindings::Ml::add_to_linker::<T, HasNn>(linker, view)
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<ErrorRes>>>;

impl NnView<'_> {
    fn fail<T>(&mut self, code: ErrorCode, message: impl Into<String>) -> NnResult<T> {
        let message = message.into();
        tracing::debug!(?code, %message, "wasi:nn call refused");
        Ok(Err(self.table.push(ErrorRes { code, message })?))
    }

    fn hold(&mut self, tensor: TensorRes) -> wasmtime::Result<Resource<TensorRes>> {
        let bytes = tensor.data.len();
        if self.state.tensor_bytes + bytes > MAX_TENSOR_BYTES {
            // Tensors are made by a constructor, which cannot fail: stop the instance.
            wasmtime::bail!(
                "the instance holds more than {MAX_TENSOR_BYTES} bytes of wasi:nn tensors"
            );
        }
        self.state.tensor_bytes += bytes;
        Ok(self.table.push(tensor)?)
    }

    fn release(&mut self, tensor: Resource<TensorRes>) -> wasmtime::Result<TensorRes> {
        let tensor = self.table.delete(tensor)?;
        self.state.tensor_bytes -= tensor.data.len();
        Ok(tensor)
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builder: Vec<Vec<u8>>,
        _encoding: GraphEncoding,
        _target: ExecutionTarget,
    ) -> NnResult<Resource<GraphRes>> {
        self.fail(
            ErrorCode::Security,
            "graphs are not loaded from bytes here: load-by-name the endpoint's model",
        )
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphRes>> {
        match &self.state.graph {
            Some(graph) if graph.name == name => {
                let graph = GraphRes(graph.clone());
                Ok(Ok(self.table.push(graph)?))
            }
            Some(graph) => {
                let granted = graph.name.clone();
                self.fail(
                    ErrorCode::NotFound,
                    format!("no graph [{name}]: this instance may load [{granted}] only"),
                )
            }
            None => self.fail(
                ErrorCode::NotFound,
                format!("no graph [{name}]: this endpoint runs its graph in the sandbox"),
            ),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(
        &mut self,
        graph: Resource<GraphRes>,
    ) -> NnResult<Resource<ContextRes>> {
        let graph = self.table.get(&graph)?.0.clone();
        match catch_unwind(AssertUnwindSafe(|| graph.context())) {
            Ok(Ok(context)) => Ok(Ok(self.table.push(ContextRes { graph, context })?)),
            Ok(Err(e)) => self.fail(ErrorCode::RuntimeError, format!("{e:#}")),
            Err(_) => self.fail(ErrorCode::RuntimeError, "the backend panicked"),
        }
    }

    fn drop(&mut self, graph: Resource<GraphRes>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        context: Resource<ContextRes>,
        inputs: Vec<(String, Resource<TensorRes>)>,
    ) -> NnResult<Vec<(String, Resource<TensorRes>)>> {
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            tensors.push((name, self.release(tensor)?));
        }
        let deadline = self.state.deadline;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(DeadlinePassed.into());
        }
        let ContextRes { graph, context } = self.table.get_mut(&context)?;
        let (batch, sequence, inputs) = match check(graph, &tensors) {
            Ok(checked) => checked,
            Err(message) => return self.fail(ErrorCode::InvalidArgument, message),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            context.run(batch, sequence, inputs, deadline)
        }));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(DeadlinePassed.into());
        }
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return self.fail(ErrorCode::RuntimeError, format!("{e:#}")),
            Err(_) => return self.fail(ErrorCode::RuntimeError, "the backend panicked"),
        };
        let tensor = TensorRes {
            dimensions: output.shape.iter().map(|&d| d as u32).collect(),
            ty: TensorType::Fp32,
            // One pass the compiler turns into a copy: SPLADE's logits run
            // to hundreds of megabytes.
            data: output
                .values
                .iter()
                .map(|v| v.to_le_bytes())
                .collect::<Vec<[u8; 4]>>()
                .into_flattened(),
        };
        let name = graph.name.clone();
        Ok(Ok(vec![(name, self.hold(tensor)?)]))
    }

    fn drop(&mut self, context: Resource<ContextRes>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

/// The inputs in the graph's terms, or why they are refused.
fn check<'t>(
    graph: &'t HostGraph,
    tensors: &'t [(String, TensorRes)],
) -> Result<(usize, usize, Vec<Input<'t>>), String> {
    let limits = &graph.limits;
    let mut shape = None;
    let mut inputs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !limits.inputs.contains(name) {
            return Err(format!(
                "the graph has no input [{name}]; its inputs are {:?}",
                limits.inputs
            ));
        }
        if inputs.iter().any(|i: &Input| i.name == name) {
            return Err(format!("input [{name}] is given twice"));
        }
        if t.ty != TensorType::I64 {
            return Err(format!("input [{name}] must be i64, not {:?}", t.ty));
        }
        let &[batch, sequence] = t.dimensions.as_slice() else {
            return Err(format!(
                "input [{name}] must be [batch, sequence], not {:?}",
                t.dimensions
            ));
        };
        let (batch, sequence) = (batch as usize, sequence as usize);
        if *shape.get_or_insert((batch, sequence)) != (batch, sequence) {
            return Err(format!(
                "input [{name}] is {:?}, unlike the other inputs",
                t.dimensions
            ));
        }
        if batch == 0 || sequence == 0 {
            return Err(format!("input [{name}] is empty"));
        }
        if batch > limits.max_batch
            || sequence > limits.max_sequence
            || batch * sequence > limits.max_tokens
        {
            return Err(format!(
                "input [{name}] of [{batch}, {sequence}] exceeds the model's limits: batch {}, sequence {}, tokens {}",
                limits.max_batch, limits.max_sequence, limits.max_tokens
            ));
        }
        if t.data.len() != batch * sequence * 8 {
            return Err(format!(
                "input [{name}] has {} bytes, not the {} its shape needs",
                t.data.len(),
                batch * sequence * 8
            ));
        }
        let values = t
            .data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        inputs.push(Input { name, values });
    }
    if let Some(missing) = limits
        .inputs
        .iter()
        .find(|n| !inputs.iter().any(|i| i.name == n.as_str()))
    {
        return Err(format!("the graph needs input [{missing}]"));
    }
    let (batch, sequence) = shape.expect("the graph has inputs");
    Ok((batch, sequence, inputs))
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<TensorRes>> {
        self.hold(TensorRes {
            dimensions,
            ty,
            data,
        })
    }

    fn dimensions(&mut self, tensor: Resource<TensorRes>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<TensorRes>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<TensorRes>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    fn drop(&mut self, tensor: Resource<TensorRes>) -> wasmtime::Result<()> {
        self.release(tensor)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<ErrorRes>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<ErrorRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<ErrorRes>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}
