//! chat_completion with SmolLM2-135M-Instruct: time to first token and
//! tokens per second, streamed through HTTP (SSE) from the server in each
//! compute mode (the graph and its KV cache in the host on ONNX Runtime or
//! tract, or in the sandbox), against the same model run natively
//! in-process, greedy, one request at a time; and, as an anchor, llama.cpp on
//! the GGUF the model is converted from (`llama_bench.py`).

use crate::workload::{self, percentile_ms};
use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use e2e_tests::{json, sse, Server, Value};
use ml_core::{GenerationOptions, Generator};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2-135m-instruct";
/// llama.cpp's threads: one, as the native core and the server's instance
/// run (the like-for-like row), and two, what llama.cpp makes of the cores
/// of a small machine.
const LLAMA_THREADS: [usize; 2] = [1, 2];
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
    /// The python of a venv with llama-cpp-python, which runs llama.cpp on
    /// the same GGUF as an anchor; default $LLAMA_PYTHON (`cargo xtask bench`
    /// builds the venv and sets it). Without either, no anchor.
    #[arg(long)]
    pub llama_python: Option<PathBuf>,
    /// Where the server runs the graph, each measured in turn.
    #[arg(long, value_delimiter = ',', default_values_t = crate::server::COMPUTES.map(String::from))]
    pub computes: Vec<String>,
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
    // By hand: the workspace builds clap without its `env` feature.
    let llama_python = args.llama_python.clone().or_else(|| {
        std::env::var_os("LLAMA_PYTHON")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    println!(
        "chat_completion: model {MODEL}; {} greedy generations of at most {} tokens a side, one at a time",
        args.runs, args.max_tokens
    );
    workload::print_machine();
    if llama_python.is_none() {
        eprintln!(
            "no llama.cpp anchor: pass --llama-python or set LLAMA_PYTHON to the python of a venv \
             with llama-cpp-python (`cargo xtask bench completion` builds one and sets it)"
        );
    }

    eprintln!("starting the server (the first start compiles the components, about a minute)");
    let server = Server::start(&[])?;
    // Each mode on one thread; ONNX Runtime also on both cores
    // (`num_threads: 2`), as llama.cpp's second row.
    let modes = args.computes.iter().flat_map(|compute| {
        let threads: &[usize] = if compute == "onnxruntime" {
            &[1, 2]
        } else {
            &[1]
        };
        threads.iter().map(move |&t| (compute.clone(), t))
    });
    let mut served = Vec::new();
    for (compute, threads) in modes {
        let id = format!("bench-llm-{compute}-{threads}");
        let created = server.put(
            &format!("/_inference/chat_completion/{id}"),
            &json!({"service": "elasticsearch", "service_settings": {
                "model_id": MODEL, "num_allocations": 1, "num_threads": threads,
                "compute": compute}}),
        );
        ensure!(
            created.status().is_success(),
            "creating the {compute} endpoint: {}",
            created.text()?
        );
        let url = format!("{}/_inference/chat_completion/{id}/_stream", server.url);
        // The first request loads the model into an instance: not timed.
        let warm = over_http(&server, &url, QUESTIONS[0], args.max_tokens)?;
        let samples = (0..args.runs)
            .map(|i| {
                over_http(
                    &server,
                    &url,
                    QUESTIONS[i % QUESTIONS.len()],
                    args.max_tokens,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let name = match threads {
            1 => compute,
            t => format!("{compute} {t}t"),
        };
        served.push((name, warm, samples));
    }
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
    for (compute, warm, _) in &served {
        ensure!(
            reference.text == warm.text,
            "the server ({compute}) and the native core generate different text:\n{:?}\n{:?}",
            warm.text,
            reference.text
        );
    }
    eprintln!(
        "the server in every mode and the native core generate the same text: {:?}",
        reference.text
    );
    let native = (0..args.runs)
        .map(|i| native_one(QUESTIONS[i % QUESTIONS.len()]))
        .collect::<Result<Vec<_>>>()?;

    let mut llama = Vec::new();
    if let Some(python) = &llama_python {
        // Token ids, not text: llama.cpp reads exactly the prompt the native
        // core does, rendered by the project's chat template.
        let prompts = QUESTIONS
            .iter()
            .map(|&q| generator.encode(&generator.chat_prompt(&[("user", q)])))
            .collect::<Result<Vec<_>>>()?;
        for threads in LLAMA_THREADS {
            let (llama_warm, samples) = run_llama(
                python,
                &prompts,
                &generator.config().eos_token_ids,
                args,
                threads,
            )?;
            if llama_warm.text == reference.text {
                eprintln!("llama.cpp ({threads}t) generates the same text as the native core");
            } else {
                // Not an error: its Q4_1 matmuls quantise the activations to
                // 8 bits, where the native core keeps them f32, so a near tie
                // between two tokens can go either way (the first question's
                // first token: "The" leads "L" by 0.08 in f32, and trails it
                // by 0.09 in llama.cpp).
                eprintln!(
                    "llama.cpp ({threads}t) generates other text than the native core: {:?}",
                    llama_warm.text
                );
            }
            llama.push((threads, samples));
        }
    }

    println!();
    println!(
        "{:<22} {:>14} {:>14} {:>12} {:>12}",
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
    // (name in the table, name in the ratios, summary)
    let mut rows = Vec::new();
    for (compute, _, samples) in &served {
        rows.push((
            format!("server {compute}"),
            format!("server {compute}"),
            summary(samples),
        ));
    }
    let native_row = rows.len();
    rows.push((
        "native core".to_string(),
        "native".to_string(),
        summary(&native),
    ));
    for (threads, samples) in &llama {
        let name = format!("llama.cpp {threads}t");
        rows.push((name.clone(), name, summary(samples)));
    }
    for (name, _, (p50, p99, speed, tokens)) in &rows {
        println!("{name:<22} {p50:>14.1} {p99:>14.1} {speed:>12.1} {tokens:>12}");
    }
    // Each server mode against the native core, then the servers and the
    // native core against each llama.cpp row.
    let mut pairs: Vec<(usize, usize)> = (0..native_row).map(|s| (s, native_row)).collect();
    for anchor in native_row + 1..rows.len() {
        pairs.extend((0..=native_row).map(|s| (s, anchor)));
    }
    println!();
    for (a, b) in pairs {
        let ((a50, _, a_speed, _), (b50, _, b_speed, _)) = (rows[a].2, rows[b].2);
        println!(
            "{}/{}: time to first token {:.2} (lower is better), tokens/s {:.2} (higher is better)",
            rows[a].1,
            rows[b].1,
            a50 / b50,
            a_speed / b_speed
        );
    }
    Ok(())
}

/// One streamed chat answer from `url`, timed.
fn over_http(server: &Server, url: &str, question: &str, max_tokens: usize) -> Result<Sample> {
    let started = Instant::now();
    let response = server
        .client
        .post(url)
        .json(&json!({
            "messages": [{"role": "user", "content": question}],
            "max_completion_tokens": max_tokens,
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
}

/// `llama_bench.py` with `threads` threads on the prompts' token ids, greedy,
/// `args.runs` generations as the other sides run them: the untimed warm-up's
/// sample (on the first prompt) and the timed ones.
fn run_llama(
    python: &Path,
    prompts: &[Vec<u32>],
    eos_token_ids: &[u32],
    args: &CompletionArgs,
    threads: usize,
) -> Result<(Sample, Vec<Sample>)> {
    let cache = e2e_tests::model_cache();
    let cache = cache
        .to_str()
        .context("the model cache's path is not UTF-8")?;
    let request = json!({
        "model_cache": cache,
        "model": MODEL,
        "prompts": prompts,
        "eos_token_ids": eos_token_ids,
        "max_tokens": args.max_tokens,
        "threads": threads,
        "runs": args.runs,
    });
    eprintln!(
        "llama.cpp: {} generations at {threads} thread(s)",
        args.runs
    );
    let mut child = Command::new(python)
        .arg(crate::workload::source_file("llama_bench.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (--llama-python or LLAMA_PYTHON): it must be the python of a venv \
                 with llama-cpp-python, as `cargo xtask bench completion` builds",
                python.display()
            )
        })?;
    // A few kilobytes: the pipe holds them before the script reads them.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "llama_bench.py exited with {} (its error is above; run without \
             --llama-python and LLAMA_PYTHON to skip llama.cpp)",
            output.status
        );
    }
    let result: Value = serde_json::from_slice(&output.stdout).context("llama_bench.py output")?;
    eprintln!("llama.cpp environment: {}", result["env"]);
    let sample = |s: &Value| -> Result<Sample> {
        let seconds = |key: &str| -> Result<Duration> {
            let secs = s[key]
                .as_f64()
                .with_context(|| format!("llama_bench.py: no {key} in {s} (nothing generated?)"))?;
            Ok(Duration::from_secs_f64(secs))
        };
        Ok(Sample {
            first_token: seconds("first_token_s")?,
            total: seconds("total_s")?,
            tokens: s["tokens"].as_u64().context("llama_bench.py: no tokens")? as usize,
            text: s["text"]
                .as_str()
                .context("llama_bench.py: no text")?
                .to_string(),
        })
    };
    let warm = sample(&result["warmup"])?;
    let samples = result["runs"]
        .as_array()
        .context("llama_bench.py: no runs")?
        .iter()
        .map(sample)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        samples.len() == args.runs,
        "llama_bench.py timed {} generations, not {}",
        samples.len(),
        args.runs
    );
    Ok((warm, samples))
}
