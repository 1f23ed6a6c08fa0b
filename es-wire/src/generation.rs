//! completion and chat_completion: generation options from a request and its
//! endpoint, and the Server-Sent Events frames of a streamed generation.
//! Pure, so every host renders the same stream.

use crate::endpoint::Endpoint;
use crate::error::EsError;
use crate::infer::{ChatCompletionRequest, ChatRole, InferenceRequest};
use crate::response::{chat_completion_chunk, completion_delta, sse_done, sse_error, sse_event};
use crate::settings::TaskSettings;
use crate::types::TaskType;
use crate::Usage;

/// Generated tokens when neither the request nor the endpoint sets a limit.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// How to generate: the request's settings over the endpoint's.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

impl GenerationParams {
    /// For a perform-inference request on a `completion` endpoint.
    pub fn for_completion(request: &InferenceRequest, endpoint: &Endpoint) -> Self {
        Self::from_settings(request.options(endpoint).task_settings, Vec::new())
    }

    /// For an OpenAI-style chat body on a `chat_completion` endpoint.
    pub fn for_chat(chat: &ChatCompletionRequest, endpoint: &Endpoint) -> Self {
        let from_chat = TaskSettings {
            max_tokens: chat.max_completion_tokens,
            temperature: chat.temperature,
            top_p: chat.top_p,
            ..TaskSettings::default()
        };
        let settings = from_chat.over(TaskSettings::read(&endpoint.task_settings));
        Self::from_settings(settings, chat.stop.clone())
    }

    /// Greedy (temperature 0) and up to [`DEFAULT_MAX_TOKENS`] unless set.
    fn from_settings(settings: TaskSettings, stop: Vec<String>) -> Self {
        Self {
            max_tokens: settings.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: settings.temperature.unwrap_or(0.0),
            top_p: settings.top_p.unwrap_or(1.0),
            seed: settings.seed,
            stop,
        }
    }
}

/// A chat message's role as the chat template names it.
pub fn chat_role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}

/// Renders a streamed generation as SSE frames, in the completion or the
/// chat-completion shape.
#[derive(Debug, Clone)]
pub struct SseFrames {
    task: TaskType,
    model_id: String,
    id: String,
    role_sent: bool,
}

impl SseFrames {
    /// `id` names the chat completion (`chatcmpl-...`).
    pub fn new(task: TaskType, model_id: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            task,
            model_id: model_id.into(),
            id: id.into(),
            role_sent: false,
        }
    }

    /// The frame carrying one piece of generated text.
    pub fn chunk(&mut self, text: &str) -> String {
        if self.task == TaskType::ChatCompletion {
            let role = (!std::mem::replace(&mut self.role_sent, true)).then_some("assistant");
            self.chat(role, Some(text), None, None)
        } else {
            sse_event(&json_text(&completion_delta(text)))
        }
    }

    /// The closing frames: for chat, the finish reason and the usage; then
    /// `[DONE]`.
    pub fn done(&mut self, finish_reason: Option<&str>, usage: Usage) -> String {
        if self.task != TaskType::ChatCompletion {
            return sse_done();
        }
        let role = (!self.role_sent).then_some("assistant");
        let mut text = self.chat(role, None, Some(finish_reason.unwrap_or("stop")), None);
        text.push_str(&self.chat(None, None, None, Some(usage)));
        text.push_str(&sse_done());
        text
    }

    /// The frame of a failure once the stream has begun.
    pub fn error(&self, err: &EsError) -> String {
        sse_error(err)
    }

    fn chat(
        &self,
        role: Option<&str>,
        content: Option<&str>,
        finish: Option<&str>,
        usage: Option<Usage>,
    ) -> String {
        let chunk = chat_completion_chunk(&self.id, &self.model_id, role, content, finish, usage);
        sse_event(&json_text(&chunk))
    }
}

fn json_text(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).expect("response bodies serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_frames_send_the_role_once_and_close_with_usage() {
        let mut frames = SseFrames::new(TaskType::ChatCompletion, "m", "chatcmpl-1");
        let first = frames.chunk("Hel");
        let second = frames.chunk("lo");
        assert!(first.contains("\"role\":\"assistant\""), "{first}");
        assert!(!second.contains("\"role\""), "{second}");
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
        };
        let end = frames.done(Some("length"), usage);
        assert!(end.contains("\"finish_reason\":\"length\""), "{end}");
        assert!(end.contains("\"total_tokens\":5"), "{end}");
        assert!(end.ends_with(&sse_done()), "{end}");
    }

    #[test]
    fn completion_frames_are_deltas_then_done() {
        let mut frames = SseFrames::new(TaskType::Completion, "m", "x");
        assert_eq!(
            frames.chunk("Paris"),
            sse_event(&json_text(&completion_delta("Paris")))
        );
        let usage = Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 2,
        };
        assert_eq!(frames.done(None, usage), sse_done());
    }
}
