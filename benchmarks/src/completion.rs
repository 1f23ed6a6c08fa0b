//! chat_completion with SmolLM2-135M-Instruct: time to first token and
//! tokens per second, streamed through HTTP (SSE) against the same model run
//! natively in-process, greedy, one request at a time.

use crate::workload::{self, percentile_ms};
use anyhow::{ensure, Context, Result};
use clap::Parser;
use e2e_tests::{json, sse, Server, Value};
use ml_core::{GenerationOptions, Generator};
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2-135m-instruct";
const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Give me three tips for a good night's sleep.",
    "Explain what a rainbow is in two sentences.",
    "Write a short poem about the sea.",
];

#[derive(Parser)]
pub struct CompletionArgs {
    /// Generations timed on each side (the questions repeat).
    #[arg(long, default_value_t = 8)]
    pub runs: usize,
    /// Tokens generated at most per answer.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
}

/// One timed generation.
struct Sample {
    first_token: Duration,
    total: Duration,
    tokens: usize,
    text: String,
}

impl Sample {
    /// Decoding speed after the first token.
    fn tokens_per_s(&self) -> f64 {
        (self.tokens.saturating_sub(1)) as f64 / (self.total - self.first_token).as_secs_f64()
    }
}

pub fn run(args: &CompletionArgs) -> Result<()> {
    ensure!(
        args.runs > 0 && args.max_tokens > 1,
        "runs must be positive and max_tokens above 1"
    );
    println!(
        "chat_completion: model {MODEL}; {} greedy generations of at most {} tokens a side, one at a time",
        args.runs, args.max_tokens
    );
    workload::print_machine();

    eprintln!("starting the server (the first start compiles the components, about a minute)");
    let server = Server::start(&[])?;
    let created = server.put(
        "/_inference/chat_completion/bench-llm",
        &json!({"service": "elasticsearch", "service_settings": {"model_id": MODEL, "num_allocations": 1}}),
    );
    ensure!(
        created.status().is_success(),
        "creating the endpoint: {}",
        created.text()?
    );
    let url = format!(
        "{}/_inference/chat_completion/bench-llm/_stream",
        server.url
    );
    let over_http = |question: &str| -> Result<Sample> {
        let started = Instant::now();
        let response = server
            .client
            .post(&url)
            .json(&json!({
                "messages": [{"role": "user", "content": question}],
                "max_completion_tokens": args.max_tokens,
            }))
            .send()?;
        ensure!(response.status().is_success(), "HTTP {}", response.status());
        let (mut first_token, mut text, mut tokens) = (None, String::new(), None);
        for event in sse::events(response) {
            ensure!(event.event == "message", "error event: {}", event.data);
            if event.data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(&event.data)?;
            let chunk = &chunk["chat_completion"];
            if let Some(content) = chunk["choices"][0]["delta"]["content"].as_str() {
                first_token.get_or_insert_with(|| started.elapsed());
                text.push_str(content);
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n as usize);
            }
        }
        Ok(Sample {
            first_token: first_token.context("no content streamed")?,
            total: started.elapsed(),
            tokens: tokens.context("no usage chunk")?,
            text,
        })
    };
    // The first request loads the model into an instance: not timed.
    let warm = over_http(QUESTIONS[0])?;
    let http = (0..args.runs)
        .map(|i| over_http(QUESTIONS[i % QUESTIONS.len()]))
        .collect::<Result<Vec<_>>>()?;
    drop(server);

    let generator = Generator::load(&e2e_tests::model_cache().join(MODEL))?;
    let native_one = |question: &str| -> Result<Sample> {
        let started = Instant::now();
        let prompt = generator.chat_prompt(&[("user", question)]);
        let options = GenerationOptions {
            max_tokens: args.max_tokens,
            ..GenerationOptions::default()
        };
        let mut generation = generator.start(&prompt, options)?;
        let (mut first_token, mut text) = (None, String::new());
        while let Some(chunk) = generation.next_chunk()? {
            if !chunk.is_empty() {
                first_token.get_or_insert_with(|| started.elapsed());
            }
            text.push_str(&chunk);
        }
        Ok(Sample {
            first_token: first_token.context("nothing generated")?,
            total: started.elapsed(),
            tokens: generation.usage().completion_tokens,
            text,
        })
    };
    let reference = native_one(QUESTIONS[0])?;
    ensure!(
        reference.text == warm.text,
        "the server and the native core generate different text:\n{:?}\n{:?}",
        warm.text,
        reference.text
    );
    eprintln!(
        "server and native core generate the same text: {:?}",
        reference.text
    );
    let native = (0..args.runs)
        .map(|i| native_one(QUESTIONS[i % QUESTIONS.len()]))
        .collect::<Result<Vec<_>>>()?;

    println!();
    println!(
        "{:<15} {:>14} {:>14} {:>12} {:>12}",
        "backend", "TTFT p50 ms", "TTFT p99 ms", "tokens/s", "tokens"
    );
    let summary = |samples: &[Sample]| {
        let ttft: Vec<Duration> = samples.iter().map(|s| s.first_token).collect();
        let mut speeds: Vec<f64> = samples.iter().map(Sample::tokens_per_s).collect();
        speeds.sort_by(f64::total_cmp);
        let tokens: usize = samples.iter().map(|s| s.tokens).sum();
        (
            percentile_ms(&ttft, 50.0),
            percentile_ms(&ttft, 99.0),
            speeds[speeds.len() / 2],
            tokens,
        )
    };
    let rows = [
        ("server (HTTP)", summary(&http)),
        ("native core", summary(&native)),
    ];
    for (name, (p50, p99, speed, tokens)) in rows {
        println!("{name:<15} {p50:>14.1} {p99:>14.1} {speed:>12.1} {tokens:>12}");
    }
    let ((s50, _, s_speed, _), (n50, _, n_speed, _)) = (rows[0].1, rows[1].1);
    println!();
    println!(
        "server/native: time to first token {:.2} (lower is better), tokens/s {:.2} (higher is better)",
        s50 / n50,
        s_speed / n_speed
    );
    Ok(())
}
