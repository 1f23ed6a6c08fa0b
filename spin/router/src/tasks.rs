//! The router's task backend: the task components Spin plugs into this
//! component's imports (component dependencies). Every call is synchronous;
//! a long batch is cut into slices so the request's deadline is checked
//! between them.

spin_sdk::wit_bindgen::generate!({
    path: "../../wit",
    world: "spin-router",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    generate_all,
});

use edge::completion::completion;
use edge::inference_types::types::{Error as WitError, InputType as WitInputType, ModelInfo};
use edge::rerank::rerank;
use edge::sparse_embedding::sparse_embedding;
use edge::text_embedding::text_embedding;
use es_wire::{
    Answer, Call, Deadline, Endpoint, EsError, GenerationEnd, GenerationParams, InputType,
    LongDocumentStrategy, Prompt, SparseEmbedding, Task, TaskError,
};

/// Inputs per call into a task, so a deadline is noticed within one slice.
const SLICE: usize = 16;

impl From<WitError> for TaskError {
    fn from(e: WitError) -> Self {
        match e {
            WitError::InvalidInput(m) => TaskError::InvalidInput(m),
            WitError::Model(m) => TaskError::Model(m),
            WitError::Inference(m) => TaskError::Inference(m),
        }
    }
}

fn task_error(e: WitError) -> EsError {
    TaskError::from(e).into()
}

impl From<InputType> for WitInputType {
    fn from(t: InputType) -> Self {
        match t {
            InputType::Search => WitInputType::Search,
            InputType::Ingest => WitInputType::Ingest,
            InputType::Classification => WitInputType::Classification,
            InputType::Clustering => WitInputType::Clustering,
        }
    }
}

/// The task components, with the model directories mounted at `models_dir`.
pub struct Tasks {
    pub models_dir: String,
}

impl Tasks {
    /// `load`s the endpoint's model into its task component: free for a
    /// pre-initialised component that holds it, a model load otherwise.
    fn load(
        &self,
        load: impl FnOnce(&str) -> Result<ModelInfo, WitError>,
        endpoint: &Endpoint,
        task: &str,
    ) -> Result<(), EsError> {
        let model_id = &endpoint.service_settings.model_id;
        let info = load(&format!("{}/{model_id}", self.models_dir)).map_err(task_error)?;
        if &info.model_id != model_id {
            return Err(EsError::internal(format!(
                "the {task} component of this app holds model [{}], not [{model_id}]",
                info.model_id
            )));
        }
        Ok(())
    }
}

/// Runs `call` on slices of `inputs`, checking the deadline between them.
fn sliced<T>(
    inputs: &[String],
    deadline: Deadline,
    mut call: impl FnMut(&[String]) -> Result<Vec<T>, WitError>,
) -> Result<Vec<T>, EsError> {
    let mut out = Vec::with_capacity(inputs.len());
    for slice in inputs.chunks(SLICE) {
        deadline.check()?;
        out.extend(call(slice).map_err(task_error)?);
    }
    deadline.check()?;
    Ok(out)
}

impl Tasks {
    fn generate(&self, prompt: Prompt, params: GenerationParams) -> Result<Generation, EsError> {
        let options = completion::GenerationOptions {
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed,
            stop: params.stop,
        };
        let generation = match prompt {
            Prompt::Text(text) => completion::complete(&text, &options),
            Prompt::Chat(messages) => {
                let messages: Vec<completion::ChatMessage> = messages
                    .into_iter()
                    .map(|(role, content)| completion::ChatMessage { role, content })
                    .collect();
                completion::chat(&messages, &options)
            }
        };
        generation.map(Generation).map_err(task_error)
    }
}

impl es_wire::Backend for Tasks {
    type Generation = Generation;

    async fn run(&self, call: Call<'_>) -> Result<Answer<Generation>, EsError> {
        let (endpoint, deadline) = (call.endpoint, call.deadline);
        Ok(match call.task {
            Task::Embed { inputs, input_type } => {
                self.load(text_embedding::load, endpoint, "text-embedding")?;
                let t = input_type.map(Into::into);
                let embeddings = sliced(&inputs, deadline, |s| text_embedding::embed(s, t))?;
                Answer::Embeddings(embeddings.into_iter().map(|e| e.values).collect())
            }
            Task::SparseEmbed { inputs, input_type } => {
                self.load(sparse_embedding::load, endpoint, "sparse-embedding")?;
                let t = input_type.map(Into::into);
                let embeddings = sliced(&inputs, deadline, |s| sparse_embedding::embed(s, t))?;
                Answer::SparseEmbeddings(
                    embeddings
                        .into_iter()
                        .map(|e| SparseEmbedding {
                            tokens: e.tokens,
                            truncated: e.truncated,
                        })
                        .collect(),
                )
            }
            Task::Rerank {
                query,
                documents,
                options,
            } => {
                self.load(rerank::load, endpoint, "rerank")?;
                let options = rerank::RerankOptions {
                    long_document_strategy: match options.long_document_strategy {
                        LongDocumentStrategy::Truncate => rerank::LongDocumentStrategy::Truncate,
                        LongDocumentStrategy::Chunk => rerank::LongDocumentStrategy::Chunk,
                    },
                    max_chunks_per_doc: options.max_chunks_per_doc,
                };
                Answer::Scores(sliced(&documents, deadline, |s| {
                    rerank::score(&query, s, options)
                })?)
            }
            Task::Generate { prompt, params } => {
                self.load(completion::load, endpoint, "completion")?;
                let generation = self.generate(prompt, params)?;
                deadline.check()?;
                Answer::Generation(generation)
            }
        })
    }
}

/// A generation in the completion component, pulled chunk by chunk.
pub struct Generation(completion::Generation);

impl es_wire::Generation for Generation {
    async fn next_chunk(&mut self) -> Result<Option<String>, EsError> {
        self.0.next_chunk().map_err(task_error)
    }

    fn end(&self) -> GenerationEnd {
        let usage = self.0.usage();
        GenerationEnd {
            finish_reason: self.0.finish_reason().map(|r| match r {
                completion::FinishReason::Stop => "stop",
                completion::FinishReason::Length => "length",
            }),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}
