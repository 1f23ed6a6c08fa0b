//! Text generation with a decoder-only language model converted by
//! `models/llama_gguf_onnx.py`: a KV cache, greedy or nucleus sampling, stop
//! sequences, and streaming in whole UTF-8 characters.

use crate::decoder::{Decoder, DecoderRun};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::sync::Arc;
use tokenizers::Tokenizer;

/// Prompt tokens per model run. Bounds the attention scores of a long prompt
/// (`heads × chunk × past` floats: 9 × 256 × 8192 × 4 B = 75 MB at most)
/// instead of `heads × prompt²` (2.3 GB for 8192 tokens). The host takes no
/// more in one `wasi:nn` call.
pub const PREFILL_CHUNK: usize = 256;

/// The decoder fused for ONNX Runtime alone (its contrib operators, int8
/// activations), beside `model.onnx` when the converter could write it. Same
/// inputs and outputs; only the host's ONNX Runtime backend reads it.
pub const ONNXRUNTIME_GRAPH: &str = "model.onnxruntime.onnx";

/// The sampling seed when the options give none: generation is reproducible
/// either way; callers that want variety pass their own seed.
pub const DEFAULT_SEED: u64 = 0;

/// `model.json` of a generative model (task `completion`).
#[derive(Debug, Clone, Deserialize)]
pub struct GeneratorConfig {
    pub model_id: String,
    pub task: String,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Prompt plus generated tokens at most.
    pub max_sequence_length: usize,
    /// Generation stops at any of these (not part of the text).
    pub eos_token_ids: Vec<u32>,
    /// The chat template; a base model without one continues raw text.
    #[serde(default)]
    pub chat_format: Option<ChatFormat>,
    pub inputs: GraphInputs,
    pub outputs: GraphOutputs,
}

impl GeneratorConfig {
    pub fn from_json(model_json: &[u8]) -> Result<Self> {
        serde_json::from_slice(model_json)
            .context("model.json is not a valid generative model description")
    }

    /// Graph input and output names, in the order the converter writes them:
    /// ids then each layer's past key and value; logits then each layer's
    /// present key and value.
    pub fn graph_names(&self) -> (Vec<String>, Vec<String>) {
        let (i, o) = (&self.inputs, &self.outputs);
        let mut inputs = vec![i.input_ids.name.clone()];
        let mut outputs = vec![o.logits.name.clone()];
        for layer in 0..self.num_layers {
            let layer = layer.to_string();
            for (names, key, value) in [
                (&mut inputs, &i.past_key, &i.past_value),
                (&mut outputs, &o.present_key, &o.present_value),
            ] {
                names.push(key.name.replace("{i}", &layer));
                names.push(value.name.replace("{i}", &layer));
            }
        }
        (inputs, outputs)
    }
}

/// How chat messages become a prompt (ChatML for SmolLM2).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatFormat {
    /// One message, with `{role}` and `{content}` placeholders.
    pub message: String,
    /// Appended after the last message: the assistant's turn begins.
    pub generation_prompt: String,
    /// Inserted as a system message when the first message is not one.
    pub default_system_prompt: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GraphInputs {
    pub input_ids: TensorName,
    /// Names with `{i}` standing for the layer.
    pub past_key: TensorName,
    pub past_value: TensorName,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GraphOutputs {
    pub logits: TensorName,
    pub present_key: TensorName,
    pub present_value: TensorName,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TensorName {
    pub name: String,
}

/// What to generate, as in the WIT `generation-options`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Generated tokens at most; lowered to fit `max_sequence_length`.
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities add up to `top_p` (1 keeps every token).
    pub top_p: f32,
    /// `None` uses [`DEFAULT_SEED`].
    pub seed: Option<u64>,
    /// Generation ends before the first of these appears in the text; it is
    /// never part of the output.
    pub stop: Vec<String>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` (or the model's maximum sequence length) reached.
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Generated tokens, end-of-sequence tokens excluded.
    pub completion_tokens: usize,
}

/// A loaded model: tokenizer plus its decoder graph (see [`crate::decoder`]),
/// built once and shared (cheaply cloned) by every [`Generation`].
#[derive(Clone)]
pub struct Generator {
    shared: Arc<Shared>,
}

struct Shared {
    config: GeneratorConfig,
    tokenizer: Tokenizer,
    decoder: Box<dyn Decoder>,
}

impl Generator {
    /// Loads `model.json` and `tokenizer.json` from `dir`, and the graph from
    /// where this build runs it: in the host through `wasi:nn` by model id
    /// (feature `wasi-nn`), or `model.onnx` in tract.
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        #[cfg(feature = "wasi-nn")]
        {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
            };
            Self::with_decoder(&read("model.json")?, &read("tokenizer.json")?, |config| {
                let decoder = crate::wasi_nn::WasiNnDecoder::load(
                    &config.model_id,
                    &config.inputs.input_ids.name,
                )?;
                Ok(Box::new(decoder))
            })
        }
        #[cfg(all(feature = "tract", not(feature = "wasi-nn")))]
        Self::load_with(dir, crate::blocks::Blocks::HERE)
    }

    /// [`Generator::load`] with tract, choosing how it computes the
    /// block-quantised products (see [`crate::blocks`]); for tests and
    /// benchmarks.
    #[cfg(feature = "tract")]
    #[doc(hidden)]
    pub fn load_with(dir: &std::path::Path, blocks: crate::blocks::Blocks) -> Result<Self> {
        let path = |name: &str| dir.join(name);
        let read = |name: &str| {
            std::fs::read(path(name)).with_context(|| format!("reading {}", path(name).display()))
        };
        Self::with_decoder(&read("model.json")?, &read("tokenizer.json")?, |config| {
            // Handed to tract as a reader, not read here first: one copy of
            // the file fewer at the peak.
            let mut onnx = std::fs::File::open(path("model.onnx"))
                .with_context(|| format!("reading {}", path("model.onnx").display()))?;
            let decoder = crate::decoder::TractDecoder::load(&mut onnx, config, blocks)?;
            Ok(Box::new(decoder))
        })
    }

    /// Builds the generator from file contents. Optimising the graph takes
    /// seconds: do it once per model.
    #[cfg(feature = "tract")]
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        Self::with_decoder(model_json, tokenizer_json, |config| {
            let decoder = crate::decoder::TractDecoder::load(
                &mut &*onnx,
                config,
                crate::blocks::Blocks::HERE,
            )?;
            Ok(Box::new(decoder))
        })
    }

    /// A generator whose graph runs where `decoder` puts it, given the
    /// parsed `model.json`.
    pub fn with_decoder(
        model_json: &[u8],
        tokenizer_json: &[u8],
        decoder: impl FnOnce(&GeneratorConfig) -> Result<Box<dyn Decoder>>,
    ) -> Result<Self> {
        let (config, tokenizer) = parse_json(model_json, tokenizer_json)?;
        let decoder = decoder(&config)?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                tokenizer,
                decoder,
            }),
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.shared.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    /// Token ids of a text; special tokens written in it (`<|im_start|>`)
    /// become their ids, as chat templates need.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .shared
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The prompt for a `completion` input. An instruct model gets it as one
    /// user message, as Elasticsearch's completion services send it to chat
    /// models (raw text makes such a model end at once); a base model
    /// continues the text itself.
    pub fn completion_prompt(&self, input: &str) -> String {
        match self.shared.config.chat_format {
            Some(_) => self.chat_prompt(&[("user", input)]),
            None => input.to_string(),
        }
    }

    /// The prompt for chat `messages` (`(role, content)` pairs), ending with
    /// the assistant's turn. A default system message comes first when the
    /// model has one and the first message is not a system message. A model
    /// without a chat template gets the contents one per line.
    pub fn chat_prompt(&self, messages: &[(&str, &str)]) -> String {
        let Some(format) = &self.shared.config.chat_format else {
            let lines: Vec<&str> = messages.iter().map(|(_, content)| *content).collect();
            return lines.join("\n");
        };
        let mut prompt = String::new();
        if let Some(system) = &format.default_system_prompt {
            if messages.first().is_none_or(|(role, _)| *role != "system") {
                prompt += &fill(&format.message, "system", system);
            }
        }
        for (role, content) in messages {
            prompt += &fill(&format.message, role, content);
        }
        prompt + &format.generation_prompt
    }

    /// Starts generating after a text prompt.
    pub fn start(&self, prompt: &str, options: GenerationOptions) -> Result<Generation> {
        self.start_tokens(self.encode(prompt)?, options)
    }

    /// Starts generating after prompt token ids. Nothing runs until the
    /// first [`Generation::next_chunk`].
    ///
    /// Errors on invalid options and on a prompt that leaves no room in the
    /// model's `max_sequence_length`; a `max_tokens` that does not fit is
    /// lowered to fit instead (the generation then ends with
    /// [`FinishReason::Length`]).
    pub fn start_tokens(&self, prompt: Vec<u32>, options: GenerationOptions) -> Result<Generation> {
        let config = &self.shared.config;
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        if prompt.len() >= config.max_sequence_length {
            bail!(
                "the prompt has {} tokens; model [{}] takes {} tokens at most, generated ones included",
                prompt.len(),
                config.model_id,
                config.max_sequence_length
            );
        }
        if !(options.temperature >= 0.0 && options.temperature.is_finite()) {
            bail!(
                "temperature must be a number >= 0, got {}",
                options.temperature
            );
        }
        if !(0.0..=1.0).contains(&options.top_p) {
            bail!("top_p must be between 0 and 1, got {}", options.top_p);
        }
        let max_tokens = options
            .max_tokens
            .min(config.max_sequence_length - prompt.len());
        let sequence = self.shared.decoder.start()?;
        Ok(Generation {
            shared: self.shared.clone(),
            sampler: Sampler {
                temperature: options.temperature,
                top_p: options.top_p,
                rng: SplitMix64(options.seed.unwrap_or(DEFAULT_SEED)),
            },
            max_tokens,
            prompt_tokens: prompt.len(),
            feed: prompt,
            sequence,
            ids: Vec::new(),
            decoded: 0,
            stops: StopScan::new(options.stop),
            done: false,
            finish: None,
        })
    }

    /// Last-position logits of `ids` run from an empty cache: the reference
    /// the KV-cache path is tested against.
    #[doc(hidden)]
    pub fn logits_without_cache(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut generation = self.start_tokens(ids.to_vec(), GenerationOptions::default())?;
        generation.run(ids, ids.len())
    }
}

fn parse_json(model_json: &[u8], tokenizer_json: &[u8]) -> Result<(GeneratorConfig, Tokenizer)> {
    let config = GeneratorConfig::from_json(model_json)?;
    let mut tokenizer =
        Tokenizer::from_bytes(tokenizer_json).map_err(|e| anyhow!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow!("tokenizer truncation: {e}"))?;
    Ok((config, tokenizer))
}

/// `{role}` and `{content}` of a message template filled in one pass, so
/// braces inside the content are left alone.
fn fill(template: &str, role: &str, content: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out += &rest[..at];
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{role}") {
            out += role;
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{content}") {
            out += content;
            rest = after;
        } else {
            out.push('{');
            rest = &rest[1..];
        }
    }
    out + rest
}

/// One generation in progress: each [`next_chunk`](Self::next_chunk) runs
/// the model until it has new text to return. Owns everything it needs, so
/// it can outlive the borrow of its [`Generator`].
pub struct Generation {
    shared: Arc<Shared>,
    sampler: Sampler,
    max_tokens: usize,
    prompt_tokens: usize,
    /// What the next model run reads: the prompt, then the last sampled token.
    feed: Vec<u32>,
    /// The decoder's sequence: the KV cache of everything run so far.
    sequence: Box<dyn DecoderRun>,
    /// Generated token ids, end-of-sequence excluded.
    ids: Vec<u32>,
    /// `ids[..decoded]` are already text; the rest ends inside a character.
    decoded: usize,
    stops: StopScan,
    /// Finished or failed: no more model runs.
    done: bool,
    finish: Option<FinishReason>,
}

impl Generation {
    /// The next piece of text (whole UTF-8 characters, never empty), or
    /// `None` once generation has finished. After an error the generation
    /// is over: later calls return `None` and [`finish_reason`](Self::finish_reason)
    /// stays `None`.
    pub fn next_chunk(&mut self) -> Result<Option<String>> {
        while !self.done {
            let chunk = self.step().inspect_err(|_| self.done = true)?;
            if !chunk.is_empty() {
                return Ok(Some(chunk));
            }
        }
        Ok(None)
    }

    /// All the remaining text.
    pub fn read_to_end(&mut self) -> Result<String> {
        let mut text = String::new();
        while let Some(chunk) = self.next_chunk()? {
            text += &chunk;
        }
        Ok(text)
    }

    /// Why generation ended; `None` while it is running (or after an error).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.ids.len(),
        }
    }

    /// The token ids generated so far (end-of-sequence tokens excluded).
    pub fn generated_ids(&self) -> &[u32] {
        &self.ids
    }

    /// Generates one token; returns the text it makes safe to emit.
    fn step(&mut self) -> Result<String> {
        if self.ids.len() >= self.max_tokens {
            return self.finish(FinishReason::Length);
        }
        let feed = std::mem::take(&mut self.feed);
        let logits = self.run(&feed, PREFILL_CHUNK)?;
        let id = self.sampler.pick(&logits);
        if self.shared.config.eos_token_ids.contains(&id) {
            return self.finish(FinishReason::Stop);
        }
        self.ids.push(id);
        self.feed.push(id);

        let text = self.decode(false)?;
        let (mut chunk, stopped) = self.stops.push(&text);
        if stopped {
            self.done = true;
            self.finish = Some(FinishReason::Stop);
        } else if self.ids.len() == self.max_tokens {
            // Saves a model run whose token would be thrown away.
            chunk += &self.finish(FinishReason::Length)?;
        }
        Ok(chunk)
    }

    /// Ends generation, releasing the text held back so far: bytes of an
    /// unfinished character (as U+FFFD) and a possible stop sequence start
    /// that will not be completed now.
    fn finish(&mut self, reason: FinishReason) -> Result<String> {
        self.done = true;
        self.finish = Some(reason);
        let rest = self.decode(true)?;
        let (chunk, stopped) = self.stops.push(&rest);
        Ok(if stopped {
            chunk
        } else {
            chunk + &self.stops.take()
        })
    }

    /// Text of the ids not yet decoded, once they end on a character
    /// boundary (byte-level BPE tokens can split a character); always when
    /// `flush`. Decoding only the new ids is exact because the earlier ones
    /// ended on a boundary.
    fn decode(&mut self, flush: bool) -> Result<String> {
        let text = self
            .shared
            .tokenizer
            .decode(&self.ids[self.decoded..], true)
            .map_err(|e| anyhow!("decoding: {e}"))?;
        if !flush && text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        self.decoded = self.ids.len();
        Ok(text)
    }

    /// Runs `ids` after the cache, `chunk` tokens at a time; returns the
    /// last position's logits and keeps the new cache.
    fn run(&mut self, ids: &[u32], chunk: usize) -> Result<Vec<f32>> {
        let mut logits = None;
        for chunk in ids.chunks(chunk) {
            logits = Some(self.sequence.run(chunk)?);
        }
        let logits = logits.context("no tokens to run")?;
        if logits.len() != self.shared.config.vocab_size {
            bail!(
                "the decoder returned {} logits for a vocabulary of {}",
                logits.len(),
                self.shared.config.vocab_size
            );
        }
        Ok(logits)
    }
}

impl Iterator for Generation {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// Holds back the end of the text while it could be the start of a stop
/// sequence, so that a stop sequence split across tokens is never emitted.
struct StopScan {
    stop: Vec<String>,
    /// Text not emitted yet.
    held: String,
}

impl StopScan {
    fn new(mut stop: Vec<String>) -> Self {
        stop.retain(|s| !s.is_empty());
        Self {
            stop,
            held: String::new(),
        }
    }

    /// Adds text; returns what can be emitted, and whether a stop sequence
    /// was found (the text returned then ends right before it).
    fn push(&mut self, text: &str) -> (String, bool) {
        self.held += text;
        let first = self.stop.iter().filter_map(|s| self.held.find(s)).min();
        if let Some(at) = first {
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self
            .stop
            .iter()
            .map(|s| {
                // The longest proper prefix of s that ends the held text.
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let emit = self.held.len() - keep;
        (self.held.drain(..emit).collect(), false)
    }

    /// Whatever is still held back.
    fn take(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Picks the next token from logits.
struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: SplitMix64,
}

impl Sampler {
    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits[argmax(logits) as usize];
        let mut weights: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(id, &l)| (id as u32, (((l - max) / self.temperature) as f64).exp()))
            .collect();
        if self.top_p < 1.0 {
            // Most likely first; ties by id keep the order deterministic.
            weights.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let target = self.top_p as f64 * weights.iter().map(|w| w.1).sum::<f64>();
            let mut sum = 0.0;
            // The nucleus: the fewest tokens reaching top_p, at least one.
            let keep = weights
                .iter()
                .position(|w| {
                    sum += w.1;
                    sum >= target
                })
                .map_or(weights.len(), |i| i + 1);
            weights.truncate(keep);
        }
        let total: f64 = weights.iter().map(|w| w.1).sum();
        let mut r = self.rng.next_f64() * total;
        for &(id, weight) in &weights {
            r -= weight;
            if r < 0.0 {
                return id;
            }
        }
        weights.last().map_or(0, |w| w.0) // rounding left r at 0
    }
}

/// The first highest logit (NaN never wins).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// SplitMix64 (Steele, Lea & Flood, 2014): a tiny PRNG seeded with any
/// u64, statistically good enough to sample tokens, and needing no OS
/// entropy, so it builds for every wasm target.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stop: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopScan::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for piece in pieces {
            let (chunk, stopped) = s.push(piece);
            out.push(chunk);
            if stopped {
                return (out, true);
            }
        }
        out.push(s.take());
        (out, false)
    }

    #[test]
    fn stop_sequence_split_across_pieces_is_never_emitted() {
        let (out, stopped) = scan(&["Paris"], &["The capital is P", "ar", "is."]);
        assert!(stopped);
        assert_eq!(out, ["The capital is ", "", ""]);
        assert_eq!(out.concat(), "The capital is ");
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_turns_out_different() {
        let (out, stopped) = scan(&["Paris"], &["Pa", "rty", " on"]);
        assert!(!stopped);
        assert_eq!(out, ["", "Party", " on", ""]);
        // Held back at the end, released by take().
        let (out, stopped) = scan(&["\n\n", "END"], &["a\n", "E"]);
        assert!(!stopped);
        assert_eq!(out, ["a", "\n", "E"]);
    }

    #[test]
    fn the_earliest_stop_sequence_wins() {
        let (out, stopped) = scan(&["c", "ab"], &["xxabc"]);
        assert!(stopped);
        assert_eq!(out.concat(), "xx");
        let (out, _) = scan(&["é!", "x"], &["caf", "é", "!"]);
        assert_eq!(out.concat(), "caf");
    }

    #[test]
    fn greedy_takes_the_first_highest_logit() {
        let mut s = Sampler {
            temperature: 0.0,
            top_p: 1.0,
            rng: SplitMix64(1),
        };
        assert_eq!(s.pick(&[0.5, 2.0, f32::NAN, 2.0, -1.0]), 1);
    }

    #[test]
    fn sampling_follows_the_softmax_and_top_p_cuts_the_tail() {
        let logits = [2.0f32.ln(), 1.0f32.ln(), 1.0f32.ln(), (0.1f32).ln()]; // 2:1:1:0.1
        let counts = |top_p: f32, seed: u64| {
            let mut s = Sampler {
                temperature: 1.0,
                top_p,
                rng: SplitMix64(seed),
            };
            let mut counts = [0usize; 4];
            for _ in 0..20_000 {
                counts[s.pick(&logits) as usize] += 1;
            }
            counts
        };
        let all = counts(1.0, 7);
        let p0 = all[0] as f64 / 20_000.0;
        assert!((p0 - 2.0 / 4.1).abs() < 0.02, "{all:?}");
        assert!(all[3] > 0);
        // 2/4.1 + 1/4.1 = 0.73 < 0.8 <= 0.98: the first three tokens stay.
        let nucleus = counts(0.8, 7);
        assert_eq!(nucleus[3], 0, "{nucleus:?}");
        assert!(nucleus[1] > 0 && nucleus[2] > 0);
        // top_p 0 keeps only the most likely token.
        assert_eq!(counts(0.0, 7), [20_000, 0, 0, 0]);
        assert_eq!(counts(1.0, 7), all, "same seed, same draws");
    }

    #[test]
    fn message_templates_fill_placeholders_once() {
        let t = "<|im_start|>{role}\n{content}<|im_end|>\n";
        assert_eq!(
            fill(t, "user", "say {role} {x}"),
            "<|im_start|>user\nsay {role} {x}<|im_end|>\n"
        );
    }
}
