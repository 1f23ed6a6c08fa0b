//! Calls into the task components, which the Spin app wires to these imports
//! (component dependencies). Every call is synchronous; a long batch is cut
//! into slices so a request's `timeout` is checked between them.

spin_sdk::wit_bindgen::generate!({
    path: "../../wit",
    world: "spin-router",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    generate_all,
});

use edge::inference::types::{Error as TaskError, InputType as WitInputType, ModelInfo};
use edge::inference::{completion, rerank, sparse_embedding, text_embedding};
use es_wire::{EsError, InputType, LongDocumentStrategy};
use std::time::{Duration, Instant};

pub use completion::Generation;

/// Inputs per call into a task, so a deadline is noticed within one slice.
const SLICE: usize = 16;

fn task_error(e: TaskError) -> EsError {
    match e {
        TaskError::InvalidInput(m) => EsError::illegal_argument(m),
        TaskError::Model(m) => EsError::internal(format!("model error: {m}")),
        TaskError::Inference(m) => EsError::internal(format!("inference failed: {m}")),
    }
}

/// A request's deadline: when it started and how long it may take.
#[derive(Clone, Copy)]
pub struct Deadline {
    pub start: Instant,
    pub timeout: Option<Duration>,
}

impl Deadline {
    pub fn check(&self) -> Result<(), EsError> {
        match self.timeout {
            Some(t) if self.start.elapsed() > t => Err(EsError::timed_out(t)),
            _ => Ok(()),
        }
    }
}

/// The instance's task component must hold `model_id`: a component loads one
/// model per instance (and a pre-initialised one comes with it loaded).
fn check_loaded(
    info: Result<ModelInfo, TaskError>,
    model_id: &str,
    task: &str,
) -> Result<(), EsError> {
    let info = info.map_err(task_error)?;
    if info.model_id != model_id {
        return Err(EsError::internal(format!(
            "the {task} component of this app holds model [{}], not [{model_id}]",
            info.model_id
        )));
    }
    Ok(())
}

fn model_dir(models_dir: &str, model_id: &str) -> String {
    format!("{models_dir}/{model_id}")
}

fn wit_input_type(t: InputType) -> WitInputType {
    match t {
        InputType::Search => WitInputType::Search,
        InputType::Ingest => WitInputType::Ingest,
        InputType::Classification => WitInputType::Classification,
        InputType::Clustering => WitInputType::Clustering,
    }
}

pub fn embed(
    models_dir: &str,
    model_id: &str,
    inputs: &[String],
    input_type: Option<InputType>,
    deadline: Deadline,
) -> Result<Vec<Vec<f32>>, EsError> {
    check_loaded(
        text_embedding::load(&model_dir(models_dir, model_id)),
        model_id,
        "text-embedding",
    )?;
    let mut out = Vec::with_capacity(inputs.len());
    for slice in inputs.chunks(SLICE) {
        deadline.check()?;
        let embeddings =
            text_embedding::embed(slice, input_type.map(wit_input_type)).map_err(task_error)?;
        out.extend(embeddings.into_iter().map(|e| e.values));
    }
    deadline.check()?;
    Ok(out)
}

pub fn sparse_embed(
    models_dir: &str,
    model_id: &str,
    inputs: &[String],
    input_type: Option<InputType>,
    deadline: Deadline,
) -> Result<Vec<(bool, Vec<(String, f32)>)>, EsError> {
    check_loaded(
        sparse_embedding::load(&model_dir(models_dir, model_id)),
        model_id,
        "sparse-embedding",
    )?;
    let mut out = Vec::with_capacity(inputs.len());
    for slice in inputs.chunks(SLICE) {
        deadline.check()?;
        let embeddings =
            sparse_embedding::embed(slice, input_type.map(wit_input_type)).map_err(task_error)?;
        out.extend(embeddings.into_iter().map(|e| (e.truncated, e.tokens)));
    }
    deadline.check()?;
    Ok(out)
}

pub fn rerank(
    models_dir: &str,
    model_id: &str,
    query: &str,
    documents: &[String],
    strategy: LongDocumentStrategy,
    max_chunks: Option<u32>,
    deadline: Deadline,
) -> Result<Vec<f32>, EsError> {
    check_loaded(
        rerank::load(&model_dir(models_dir, model_id)),
        model_id,
        "rerank",
    )?;
    let options = rerank::RerankOptions {
        long_document_strategy: match strategy {
            LongDocumentStrategy::Truncate => rerank::LongDocumentStrategy::Truncate,
            LongDocumentStrategy::Chunk => rerank::LongDocumentStrategy::Chunk,
        },
        max_chunks_per_doc: max_chunks.unwrap_or(0),
    };
    let mut out = Vec::with_capacity(documents.len());
    for slice in documents.chunks(SLICE) {
        deadline.check()?;
        out.extend(rerank::score(query, slice, options).map_err(task_error)?);
    }
    deadline.check()?;
    Ok(out)
}

/// What to generate from.
pub enum Prompt {
    Text(String),
    Chat(Vec<(String, String)>),
}

/// Starts one generation; pull its chunks with [`next_chunk`].
pub fn generate(
    models_dir: &str,
    model_id: &str,
    prompt: Prompt,
    params: &es_wire::GenerationParams,
) -> Result<Generation, EsError> {
    check_loaded(
        completion::load(&model_dir(models_dir, model_id)),
        model_id,
        "completion",
    )?;
    let options = completion::GenerationOptions {
        max_tokens: params.max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        seed: params.seed,
        stop: params.stop.clone(),
    };
    match prompt {
        Prompt::Text(text) => completion::complete(&text, &options),
        Prompt::Chat(messages) => {
            let messages: Vec<completion::ChatMessage> = messages
                .into_iter()
                .map(|(role, content)| completion::ChatMessage { role, content })
                .collect();
            completion::chat(&messages, &options)
        }
    }
    .map_err(task_error)
}

pub fn next_chunk(generation: &Generation) -> Result<Option<String>, EsError> {
    generation.next_chunk().map_err(task_error)
}

/// (finish reason, prompt tokens, completion tokens) once finished.
pub fn summary(generation: &Generation) -> (Option<&'static str>, u32, u32) {
    let usage = generation.usage();
    let reason = generation.finish_reason().map(|r| match r {
        completion::FinishReason::Stop => "stop",
        completion::FinishReason::Length => "length",
    });
    (reason, usage.prompt_tokens, usage.completion_tokens)
}
