//! Saturation: more clients than one endpoint's instance and queue can hold.
//! Accepted requests answer 200; the rest get 429 with `Retry-After`, never
//! a 5xx; the accepted ones' p99 stays bounded by the queue; and another
//! endpoint keeps answering meanwhile. Ten seconds by default;
//! `SATURATION_SECONDS` runs it longer.

use e2e_tests::{client, json, Server, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;
/// Requests that may wait for the saturated endpoint's one instance.
const MAX_QUEUE: usize = 4;
/// A refused client's pause before it asks again.
const BACK_OFF: Duration = Duration::from_millis(200);

fn endpoint() -> Value {
    json!({"service": "elasticsearch", "service_settings": {
        "model_id": "all-minilm-l6-v2", "num_allocations": 1, "num_threads": 1}})
}

/// What one client saw: (status, seconds, had `Retry-After`).
type Seen = Vec<(u16, f64, bool)>;

#[test]
fn a_saturated_endpoint_answers_429_and_its_neighbours_keep_serving() {
    let seconds: u64 = e2e_tests::env_number("SATURATION_SECONDS", 10);
    let server = Server::start(&["--max-queue", &MAX_QUEUE.to_string()]).unwrap();
    for id in ["busy", "neighbour"] {
        let created = server.put(&format!("/_inference/text_embedding/{id}"), &endpoint());
        assert_eq!(created.status(), 200);
    }
    // Each request is a batch of long inputs: far more work than one
    // instance finishes before the next arrives.
    let inputs: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "saturation input {i} {}",
                "with quite a few words ".repeat(12)
            )
        })
        .collect();
    let body = json!({ "input": inputs }).to_string();
    let warm = server.post("/_inference/text_embedding/busy", &json!({"input": "warm"}));
    assert_eq!(warm.status(), 200);

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, body, seen, stop) = (
                format!("{}/_inference/text_embedding/busy", server.url),
                body.clone(),
                seen.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .expect("every request is answered");
                    let status = response.status().as_u16();
                    let retry = response.headers().contains_key("retry-after");
                    let envelope: Value = response.json().expect("a JSON answer");
                    if status != 200 {
                        assert!(envelope["error"]["type"].is_string(), "{envelope}");
                    }
                    let elapsed = started.elapsed().as_secs_f64();
                    seen.lock().unwrap().push((status, elapsed, retry));
                    if status == 429 {
                        // Back off as a client honouring `Retry-After`
                        // would, sooner than its second, to keep the
                        // queue full (without it, 429s are all the 2 cores
                        // would do).
                        std::thread::sleep(BACK_OFF);
                    }
                }
            })
        })
        .collect();

    // Meanwhile the other endpoint, one request at a time.
    let neighbour = std::thread::spawn({
        let url = format!("{}/_inference/text_embedding/neighbour", server.url);
        let stop = stop.clone();
        move || {
            let client = client();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(&url)
                    .json(&json!({"input": "the neighbour asks"}))
                    .send()
                    .expect("the neighbour is answered");
                statuses.push(response.status().as_u16());
                std::thread::sleep(Duration::from_millis(100));
            }
            statuses
        }
    });

    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client failed");
    }
    let neighbour = neighbour.join().expect("the neighbour failed");
    let seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();

    let count = |status: u16| seen.iter().filter(|(s, _, _)| *s == status).count();
    let mut accepted: Vec<f64> = seen
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, t, _)| *t)
        .collect();
    accepted.sort_by(f64::total_cmp);
    let p = |q: f64| accepted[((accepted.len() - 1) as f64 * q).round() as usize];
    println!(
        "saturation: {CLIENTS} clients for {seconds} s on one instance and a queue of {MAX_QUEUE}: \
         {} requests, {} accepted (p50 {:.3} s, p99 {:.3} s, max {:.3} s), {} refused with 429; \
         the neighbour answered {} of {} requests 200",
        seen.len(),
        accepted.len(),
        p(0.5),
        p(0.99),
        accepted.last().unwrap(),
        count(429),
        neighbour.iter().filter(|s| **s == 200).count(),
        neighbour.len()
    );

    assert!(!accepted.is_empty(), "nothing was accepted");
    assert!(
        count(429) > 0,
        "the queue never filled: {} requests",
        seen.len()
    );
    let others: Vec<_> = seen
        .iter()
        .filter(|(s, _, _)| *s != 200 && *s != 429)
        .collect();
    assert!(others.is_empty(), "neither 200 nor 429: {others:?}");
    assert!(
        seen.iter()
            .filter(|(s, _, _)| *s == 429)
            .all(|(_, _, retry)| *retry),
        "a 429 without Retry-After"
    );
    // An accepted request waited behind at most the queue and one running
    // call: far inside the default 30 s timeout (which would be a 408).
    assert!(p(0.99) < 30.0, "p99 of accepted requests {} s", p(0.99));
    assert!(
        !neighbour.is_empty() && neighbour.iter().all(|s| *s == 200),
        "{neighbour:?}"
    );
}
