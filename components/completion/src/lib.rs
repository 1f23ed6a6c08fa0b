//! The completion task component: a thin WIT adapter over
//! `ml_core::Generator`. A `generation` resource yields text as the model
//! makes it, so the host can stream it and stop at any point.

wit_bindgen::generate!({
    path: "../../wit",
    world: "completion-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, KernelReport, ModelInfo};
use exports::edge::completion::completion::{
    ChatMessage, FinishReason, Generation, GenerationOptions, Guest, GuestGeneration, Usage,
};
use std::cell::RefCell;

/// The instance's model: the host calls `load` once after instantiating.
static MODEL: ml_core::ModelSlot<ml_core::Generator> = ml_core::ModelSlot::new();

struct Component;

ml_core::wit_records!();

/// A generation in progress (resources are borrowed immutably by WIT).
struct Running(RefCell<ml_core::Generation>);

fn model() -> Result<std::sync::Arc<ml_core::Generator>, Error> {
    MODEL.get().map_err(Error::Model)
}

fn start(prompt: &str, options: GenerationOptions) -> Result<Generation, Error> {
    let options = ml_core::GenerationOptions {
        max_tokens: options.max_tokens as usize,
        temperature: options.temperature,
        top_p: options.top_p,
        seed: options.seed,
        stop: options.stop,
    };
    let generation = model()?
        .start(prompt, options)
        .map_err(|e| Error::InvalidInput(format!("{e:#}")))?;
    Ok(Generation::new(Running(RefCell::new(generation))))
}

impl Guest for Component {
    type Generation = Running;

    fn load(dir: String) -> Result<ModelInfo, Error> {
        let model = MODEL
            .load(&dir, ml_core::Generator::load)
            .map_err(Error::Model)?;
        let config = model.config();
        Ok(model_info(
            &config.model_id,
            &config.task,
            config.max_sequence_length,
            0,
        ))
    }

    fn complete(input: String, options: GenerationOptions) -> Result<Generation, Error> {
        start(&model()?.completion_prompt(&input), options)
    }

    fn chat(messages: Vec<ChatMessage>, options: GenerationOptions) -> Result<Generation, Error> {
        let messages: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        start(&model()?.chat_prompt(&messages), options)
    }

    fn kernels() -> KernelReport {
        kernel_report()
    }
}

impl GuestGeneration for Running {
    fn next_chunk(&self) -> Result<Option<String>, Error> {
        self.0
            .borrow_mut()
            .next_chunk()
            .map_err(|e| Error::Inference(format!("{e:#}")))
    }

    fn finish_reason(&self) -> Option<FinishReason> {
        self.0.borrow().finish_reason().map(|r| match r {
            ml_core::FinishReason::Stop => FinishReason::Stop,
            ml_core::FinishReason::Length => FinishReason::Length,
        })
    }

    fn usage(&self) -> Usage {
        let u = self.0.borrow().usage();
        Usage {
            prompt_tokens: u.prompt_tokens as u32,
            completion_tokens: u.completion_tokens as u32,
        }
    }
}

export!(Component);
