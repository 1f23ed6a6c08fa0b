//! The server side of the benchmarks: one endpoint with an allocation per
//! concurrent client, and JSON requests that must succeed.

use anyhow::{ensure, Result};
use e2e_tests::{json, Client, Kind, Server, Value};
use std::time::Duration;

/// Where the native host runs an encoder's graph: each is measured.
pub const COMPUTES: [&str; 3] = ["onnxruntime", "tract", "sandbox"];

/// Starts a native host and creates `task`/`id` on `model` with
/// `allocations`, its graph running where `compute` says.
pub fn start(
    task: &str,
    id: &str,
    model: &str,
    allocations: usize,
    compute: &str,
) -> Result<Server> {
    start_kind(Kind::Native, task, id, model, allocations, Some(compute))
}

/// [`start`] on a server of `kind`: the native host or the Spin app (which
/// has no host compute: `compute` is `None`).
pub fn start_kind(
    kind: Kind,
    task: &str,
    id: &str,
    model: &str,
    allocations: usize,
    compute: Option<&str>,
) -> Result<Server> {
    eprintln!(
        "starting the {kind:?} server (the first start compiles the components, about a minute)"
    );
    let server = Server::start_kind(kind, &[])?;
    let mut settings = json!({
        "model_id": model,
        "num_allocations": allocations,
        "num_threads": 1
    });
    if let Some(compute) = compute {
        settings["compute"] = json!(compute);
    }
    let created = server.put(
        &format!("/_inference/{task}/{id}"),
        &json!({ "service": "elasticsearch", "service_settings": settings }),
    );
    ensure!(
        created.status().is_success(),
        "creating the endpoint: {}",
        created.text()?
    );
    // The endpoint loads its instances in the background; a request that
    // finds none idle waits for them, so let them finish before timing.
    std::thread::sleep(Duration::from_secs(3));
    Ok(server)
}

/// POSTs `body` to `url` and returns the answer, failing on an error status.
pub fn post(client: &Client, url: &str, body: &Value) -> Result<Value> {
    let response = client.post(url).json(body).send()?;
    let status = response.status();
    let body: Value = response.json()?;
    ensure!(status.is_success(), "HTTP {status}: {body}");
    Ok(body)
}
