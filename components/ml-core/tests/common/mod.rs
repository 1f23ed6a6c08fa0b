//! Shared by the test binaries: where the converted models are.

use std::path::PathBuf;

/// The converted model `id` in the model cache; fails with what to run when
/// it is missing.
pub fn model_dir(id: &str) -> PathBuf {
    let dir = es_wire::model_cache().join(id);
    assert!(
        dir.join("model.json").exists(),
        "model {id} is not in {}: run `python3 models/fetch.py`",
        dir.display()
    );
    dir
}

#[allow(dead_code)] // not every test binary uses it
pub fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|s| s.to_string()).collect()
}
