//! Misbehaves on command. Each input is an order:
//! - `loop`: spins forever (the host's deadline must stop it);
//! - `alloc`: allocates without bound (the memory cap must stop it);
//! - `panic`: panics (a trap: the host must replace the instance);
//! - `read:PATH`: tries to read a file and answers whether it could;
//! - `write:PATH`: tries to create a file and answers whether it could;
//! - `env`: answers how many environment variables it sees;
//! - anything else: a one-value embedding holding the text's length.
//!
//! An answer to `read:` or `env` comes back as an `invalid-input` error whose
//! message the test reads.

wit_bindgen::generate!({
    path: "../../wit",
    world: "text-embedding-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, InputType, KernelReport, ModelInfo};
use exports::edge::text_embedding::text_embedding::{Embedding, Guest};

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
        for input in inputs {
            match input.as_str() {
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
