//! Crash safety: the server is killed with SIGKILL while many clients are
//! creating endpoints; after a restart every acknowledged endpoint is there,
//! intact, and the store holds nothing half-written.

use e2e_tests::{client, json, Server, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn definition(i: usize) -> Value {
    // Scale to zero: creating hundreds of endpoints must not load hundreds
    // of instances.
    json!({"service": "elasticsearch", "service_settings": {
        "model_id": "all-minilm-l6-v2",
        "adaptive_allocations": {"enabled": true, "min_number_of_allocations": 0,
                                 "max_number_of_allocations": 1 + i % 3}}})
}

#[test]
fn sigkill_during_concurrent_puts_loses_no_acknowledged_endpoint() {
    let mut server = Server::start(&[]).expect("server starts");
    let acknowledged: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let url = server.url.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = client();
                let mut attempted = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("crash-{w}-{n}");
                    attempted.push(id.clone());
                    let sent = client
                        .put(format!("{url}/_inference/text_embedding/{id}"))
                        .json(&definition(n))
                        .timeout(Duration::from_secs(30))
                        .send();
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            let info: Value = r.json().expect("JSON answer");
                            acknowledged.lock().unwrap().insert(id, info);
                        }
                        Ok(r) => panic!("PUT {id}: {}", r.status()),
                        // The server died under us: this one was not acknowledged.
                        Err(_) => break,
                    }
                }
                attempted
            })
        })
        .collect();

    // Let the writes run, then kill the server in the middle of them.
    while acknowledged.lock().unwrap().len() < 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop(); // SIGKILL
    stop.store(true, Ordering::SeqCst);
    let attempted: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    println!(
        "crash: {} PUTs acknowledged, {} attempted before SIGKILL",
        acknowledged.len(),
        attempted.len()
    );

    server.restart().expect("restarts on the same store");
    for (id, info) in &acknowledged {
        let r = server.get(&format!("/_inference/text_embedding/{id}"));
        assert_eq!(r.status(), 200, "acknowledged endpoint {id} lost");
        let body: Value = r.json().unwrap();
        assert_eq!(&body["endpoints"][0], info, "endpoint {id} changed");
    }
    // The store is consistent: listing works and holds only attempted ids,
    // each complete.
    let all: Value = server
        .get("/_inference/text_embedding/_all")
        .json()
        .unwrap();
    let stored: Vec<&Value> = all["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["inference_id"].as_str().unwrap().starts_with("crash-"))
        .collect();
    assert!(stored.len() >= acknowledged.len());
    for e in &stored {
        let id = e["inference_id"].as_str().unwrap();
        assert!(attempted.iter().any(|a| a == id), "{id} was never sent");
        assert_eq!(e["service_settings"]["model_id"], "all-minilm-l6-v2");
    }
    // And it takes writes and inference again.
    let r = server.put("/_inference/text_embedding/after-crash", &definition(0));
    assert_eq!(r.status(), 200);
    let r = server.post(
        "/_inference/text_embedding/after-crash",
        &json!({"input": "still here"}),
    );
    assert_eq!(r.status(), 200);
}
