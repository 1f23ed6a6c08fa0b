//! completion and chat_completion on SmolLM2 in its component: answers,
//! Server-Sent Events, limits, and a client that goes away.

use e2e_tests::cases::{events, COMPLETION, FRANCE};
use e2e_tests::{error_type, json, Server, Value};
use std::io::{BufRead, BufReader};
use std::time::Duration;

const CHAT: &str = "/_inference/chat_completion/.smollm2-135m-instruct-chat_completion/_stream";

#[test]
fn chat_completion_streams_openai_chunks_and_stops_when_the_client_leaves() {
    let s = Server::start(&[]).unwrap();
    let question = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]});
    let streamed = events(s.post(CHAT, &question));
    assert_eq!(streamed.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = streamed[..streamed.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["chat_completion"].clone())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "smollm2-135m-instruct"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.contains("Paris"), "{content:?}");
    let usage = &chunks.last().unwrap()["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 10 && completion > 3, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);

    // max_completion_tokens and stop are obeyed.
    let limited = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_completion_tokens": 2});
    let chunks = events(s.post(CHAT, &limited));
    let usage_chunk: Value = serde_json::from_str(&chunks[chunks.len() - 2].1).unwrap();
    assert_eq!(
        usage_chunk["chat_completion"]["usage"]["completion_tokens"],
        2
    );
    let finish: Vec<Value> = chunks
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .collect();
    assert!(finish
        .iter()
        .any(|c| c["chat_completion"]["choices"][0]["finish_reason"] == "length"));
    let stopped = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "stop": ["Paris"]});
    let text: String = events(s.post(CHAT, &stopped))
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["chat_completion"]["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!text.contains("Paris") && !text.is_empty(), "{text:?}");

    // Without _stream, chat_completion answers as Elasticsearch does: 400.
    let plain = s.post(&CHAT.replace("/_stream", ""), &question);
    assert_eq!(plain.status().as_u16(), 400);
    error_type(&plain.json().unwrap());

    // A client that leaves mid-stream frees the instance: with one allocation,
    // the next request is served well within its timeout.
    let one = json!({"service": "elasticsearch", "service_settings": {"model_id": "smollm2-135m-instruct", "num_allocations": 1}});
    assert_eq!(
        s.put("/_inference/completion/one-llm", &one)
            .status()
            .as_u16(),
        200
    );
    let long = json!({"input": "Write a very long story about a dragon.", "task_settings": {"max_tokens": 2000}});
    let mut reader = BufReader::new(s.post("/_inference/completion/one-llm/_stream", &long));
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "event: message");
    drop(reader);
    std::thread::sleep(Duration::from_millis(200));
    let next = s.post(
        "/_inference/completion/one-llm?timeout=30s",
        &json!({"input": FRANCE, "task_settings": {"max_tokens": 8}}),
    );
    assert_eq!(next.status().as_u16(), 200, "the instance was freed");
}

#[test]
fn a_timeout_after_the_first_chunk_ends_the_stream_with_an_error_event() {
    let s = Server::start(&[]).unwrap();
    // Counting goes on far past any of the deadlines below.
    let counting =
        json!({"input": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "task_settings": {"max_tokens": 2000}});
    let warm = s.post(
        &format!("{COMPLETION}?timeout=120s"),
        &json!({"input": "Hi", "task_settings": {"max_tokens": 1}}),
    );
    assert_eq!(warm.status().as_u16(), 200);
    // A deadline before the first chunk is a plain 408; find one that falls
    // after it, however busy the machine is.
    for ms in [250, 500, 1000, 2000, 4000, 8000, 16000] {
        let response = s.post(&format!("{COMPLETION}/_stream?timeout={ms}ms"), &counting);
        if response.status().as_u16() == 408 {
            assert_eq!(error_type(&response.json().unwrap()), "status_exception");
            continue;
        }
        let streamed = events(response);
        let (last_event, last_data) = streamed.last().unwrap();
        assert_eq!(last_event, "error", "the stream ends with an error event");
        let envelope: Value = serde_json::from_str(last_data).unwrap();
        assert_eq!(envelope["status"], 408, "{envelope}");
        error_type(&envelope);
        assert!(streamed.len() > 1, "chunks came before the error");
        assert!(streamed.iter().all(|(_, data)| data != "[DONE]"));
        // The instance is usable again.
        let next = s.post(
            &format!("{COMPLETION}?timeout=120s"),
            &json!({"input": FRANCE, "task_settings": {"max_tokens": 8}}),
        );
        assert_eq!(next.status().as_u16(), 200);
        return;
    }
    panic!("no deadline up to 16 s fell after the first chunk");
}
