//! Misbehaves on command. Each input is an order:
//! - `loop`: spins forever (the host's deadline must stop it);
//! - `alloc`: allocates without bound (the memory cap must stop it);
//! - `panic`: panics (a trap: the host must replace the instance);
//! - `read:PATH`: tries to read a file and answers whether it could;
//! - `write:PATH`: tries to create a file and answers whether it could;
//! - `env`: answers how many environment variables it sees;
//! - `nn:graph:NAME`: asks the host for the graph NAME through `wasi:nn`;
//! - `nn:load-bytes`: asks the host to load a graph from bytes it sends;
//! - `nn:oversized`, `nn:dtype`, `nn:short`, `nn:rank`, `nn:unknown-input`:
//!   sends its own graph a tensor too large, of the wrong type, shorter
//!   than its shape, of the wrong rank, or under a name the graph lacks;
//! - `nn:bad-ids`: sends ids far outside the vocabulary;
//! - `nn:spin`: computes without end on valid tensors (the deadline must
//!   stop it, in the host or in the sandbox);
//! - `nn:hoard`: makes tensors without bound in the host (its cap must
//!   stop it);
//! - `sleep:MS`: spins for MS milliseconds, then answers as for any text;
//! - `count`: a one-value embedding holding how many inputs the call had
//!   (the host's cross-request batching merges requests into one call);
//! - anything else: a one-value embedding holding the text's length.
//!
//! An answer to `read:`, `env` or `nn:` comes back as an `invalid-input`
//! error whose message the test reads.

wit_bindgen::generate!({
    path: "../../wit",
    world: "text-embedding-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, InputType, KernelReport, ModelInfo};
use exports::edge::text_embedding::text_embedding::{Embedding, Guest};

mod nn {
    wit_bindgen::generate!({ path: "../../wit/deps/wasi-nn", world: "ml" });
    pub use self::wasi::nn::*;
}

use nn::tensor::{Tensor, TensorType};

/// The model id in the granted model directory's `model.json`.
fn granted_model() -> String {
    let meta = std::fs::read_to_string("/model/model.json").unwrap_or_default();
    let after = meta.split("\"model_id\"").nth(1).unwrap_or("");
    after.split('"').nth(1).unwrap_or("").to_string()
}

/// `len` values of `value`: 1 is a valid token id, mask and token type.
fn i64_tensor(dims: &[u32], len: usize, value: i64) -> Tensor {
    let bytes: Vec<u8> = (0..len).flat_map(|_| value.to_le_bytes()).collect();
    Tensor::new(dims, TensorType::I64, &bytes)
}

/// A request for the granted graph, with every input of `[batch, sequence]`.
fn inputs(batch: u32, sequence: u32) -> Vec<(String, Tensor)> {
    let len = (batch * sequence) as usize;
    ["input_ids", "attention_mask", "token_type_ids"]
        .map(|name| (name.to_string(), i64_tensor(&[batch, sequence], len, 1)))
        .into()
}

fn describe(e: nn::errors::Error) -> String {
    format!("{:?}: {}", e.code(), e.data())
}

/// Runs one `nn:` order and answers what the host said.
fn nn_order(order: &str) -> String {
    if let Some(name) = order.strip_prefix("graph:") {
        return match nn::graph::load_by_name(name) {
            Ok(_) => "loaded".into(),
            Err(e) => format!("denied: {}", describe(e)),
        };
    }
    if order == "load-bytes" {
        // The graph's first MiB: what it sends does not matter (the host
        // takes no bytes), and the whole graph may not fit its memory cap.
        let mut bytes = Vec::new();
        if let Ok(file) = std::fs::File::open("/model/model.onnx") {
            let _ = std::io::Read::read_to_end(&mut std::io::Read::take(file, 1 << 20), &mut bytes);
        }
        return match nn::graph::load(
            &[bytes],
            nn::graph::GraphEncoding::Onnx,
            nn::graph::ExecutionTarget::Cpu,
        ) {
            Ok(_) => "loaded".into(),
            Err(e) => format!("denied: {}", describe(e)),
        };
    }
    let graph = match nn::graph::load_by_name(&granted_model()) {
        Ok(g) => g,
        Err(e) => return format!("no graph: {}", describe(e)),
    };
    let context = match graph.init_execution_context() {
        Ok(c) => c,
        Err(e) => return format!("no context: {}", describe(e)),
    };
    let request = match order {
        "oversized" => inputs(1, 100_000),
        "dtype" => {
            let floats = vec![0u8; 4 * 8];
            ["input_ids", "attention_mask", "token_type_ids"]
                .map(|n| {
                    (
                        n.to_string(),
                        Tensor::new(&[1, 8], TensorType::Fp32, &floats),
                    )
                })
                .into()
        }
        "short" => ["input_ids", "attention_mask", "token_type_ids"]
            .map(|n| (n.to_string(), i64_tensor(&[1, 8], 3, 1)))
            .into(),
        "rank" => ["input_ids", "attention_mask", "token_type_ids"]
            .map(|n| (n.to_string(), i64_tensor(&[1, 2, 4], 8, 1)))
            .into(),
        "bad-ids" => ["input_ids", "attention_mask", "token_type_ids"]
            .map(|n| (n.to_string(), i64_tensor(&[1, 8], 8, i64::MAX)))
            .into(),
        "unknown-input" => vec![("weights".to_string(), i64_tensor(&[1, 8], 8, 1))],
        "spin" => loop {
            if let Err(e) = context.compute(inputs(32, 256)) {
                return format!("stopped: {}", describe(e));
            }
        },
        "hoard" => {
            let bytes = vec![7u8; 16 << 20];
            let mut hoard = Vec::new();
            loop {
                hoard.push(Tensor::new(&[1, 2 << 20], TensorType::I64, &bytes));
            }
        }
        other => return format!("unknown order nn:{other}"),
    };
    match context.compute(request) {
        Ok(outputs) => format!("computed {} outputs", outputs.len()),
        Err(e) => format!("denied: {}", describe(e)),
    }
}

struct Component;

impl Guest for Component {
    fn load(dir: String) -> Result<ModelInfo, Error> {
        // Reads the granted model directory like a real task.
        let meta = std::fs::read_to_string(format!("{dir}/model.json"))
            .map_err(|e| Error::Model(e.to_string()))?;
        Ok(ModelInfo {
            model_id: format!("hostile ({} bytes of model.json)", meta.len()),
            task: "text_embedding".into(),
            max_sequence_length: 0,
            dimensions: 1,
        })
    }

    fn embed(inputs: Vec<String>, _: Option<InputType>) -> Result<Vec<Embedding>, Error> {
        let mut out = Vec::new();
        let in_call = inputs.len();
        for input in inputs {
            match input.as_str() {
                "count" => out.push(Embedding {
                    values: vec![in_call as f32],
                    truncated: false,
                }),
                _ if input.starts_with("sleep:") => {
                    let ms: u64 = input["sleep:".len()..].parse().unwrap_or(0);
                    let started = std::time::Instant::now();
                    while started.elapsed().as_millis() < u128::from(ms) {
                        std::hint::spin_loop();
                    }
                    out.push(Embedding {
                        values: vec![input.len() as f32],
                        truncated: false,
                    });
                }
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 16 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "panic" => panic!("asked to panic"),
                "env" => {
                    return Err(Error::InvalidInput(format!(
                        "env vars: {}",
                        std::env::vars().count()
                    )))
                }
                _ if input.starts_with("nn:") => {
                    return Err(Error::InvalidInput(nn_order(&input["nn:".len()..])));
                }
                _ if input.starts_with("read:") => {
                    let path = &input["read:".len()..];
                    let answer = match std::fs::read(path) {
                        Ok(bytes) => format!("read {} bytes", bytes.len()),
                        Err(e) => format!("denied: {e}"),
                    };
                    return Err(Error::InvalidInput(answer));
                }
                _ if input.starts_with("write:") => {
                    let answer = match std::fs::write(&input["write:".len()..], b"x") {
                        Ok(()) => "wrote".to_string(),
                        Err(e) => format!("denied: {e}"),
                    };
                    return Err(Error::InvalidInput(answer));
                }
                text => out.push(Embedding {
                    values: vec![text.len() as f32],
                    truncated: false,
                }),
            }
        }
        Ok(out)
    }

    fn kernels() -> KernelReport {
        KernelReport {
            isa: "none".into(),
            matmul_kernels: vec![],
            tiers: vec![],
        }
    }
}

export!(Component);
