//! The ML core in a web page: thin wasm-bindgen adapters over `ml_core`, the
//! same code the task components run. Models come in as bytes (the page
//! fetches `model.json`, `tokenizer.json` and `model.onnx`).

use js_sys::{Array, Float32Array, Object, Reflect};
use wasm_bindgen::prelude::*;

fn js_error(e: anyhow::Error) -> JsError {
    JsError::new(&format!("{e:#}"))
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    // Reflect::set only fails on frozen objects or proxies; ours are neither.
    let _ = Reflect::set(object, &JsValue::from_str(key), &value.into());
}

fn parse_input_type(name: Option<String>) -> Result<Option<ml_core::InputType>, JsError> {
    Ok(match name.as_deref() {
        None => None,
        Some("search") => Some(ml_core::InputType::Search),
        Some("ingest") => Some(ml_core::InputType::Ingest),
        Some("classification") => Some(ml_core::InputType::Classification),
        Some("clustering") => Some(ml_core::InputType::Clustering),
        Some(other) => {
            return Err(JsError::new(&format!(
                "unknown input_type [{other}]: search, ingest, classification or clustering"
            )))
        }
    })
}

/// Dense embeddings (`text_embedding`).
#[wasm_bindgen]
pub struct TextEmbedder {
    inner: ml_core::TextEmbedder,
}

#[wasm_bindgen]
impl TextEmbedder {
    #[wasm_bindgen(constructor)]
    pub fn new(
        model_json: &[u8],
        tokenizer_json: &[u8],
        model_onnx: &[u8],
    ) -> Result<TextEmbedder, JsError> {
        let inner = ml_core::TextEmbedder::from_bytes(model_json, tokenizer_json, model_onnx)
            .map_err(js_error)?;
        Ok(Self { inner })
    }

    #[wasm_bindgen(getter, js_name = modelId)]
    pub fn model_id(&self) -> String {
        self.inner.encoder.config.model_id.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn dimensions(&self) -> usize {
        self.inner.encoder.config.dimensions
    }

    /// One `Float32Array` per input, in input order. `input_type` is
    /// Elasticsearch's `input_type` (`search`, `ingest`, ...) or undefined.
    pub fn embed(&self, inputs: Vec<String>, input_type: Option<String>) -> Result<Array, JsError> {
        let embeddings = self
            .inner
            .embed(&inputs, parse_input_type(input_type)?)
            .map_err(js_error)?;
        Ok(embeddings
            .iter()
            .map(|e| Float32Array::from(e.values.as_slice()))
            .collect())
    }
}

/// SPLADE sparse embeddings (`sparse_embedding`).
#[wasm_bindgen]
pub struct SparseEmbedder {
    inner: ml_core::SparseEmbedder,
}

#[wasm_bindgen]
impl SparseEmbedder {
    #[wasm_bindgen(constructor)]
    pub fn new(
        model_json: &[u8],
        tokenizer_json: &[u8],
        model_onnx: &[u8],
    ) -> Result<SparseEmbedder, JsError> {
        let inner = ml_core::SparseEmbedder::from_bytes(model_json, tokenizer_json, model_onnx)
            .map_err(js_error)?;
        Ok(Self { inner })
    }

    /// One `{is_truncated, embedding: {token: weight}}` per input, as
    /// Elasticsearch's `sparse_embedding` answers, heaviest tokens first.
    pub fn embed(&self, inputs: Vec<String>) -> Result<Array, JsError> {
        let embeddings = self.inner.embed(&inputs).map_err(js_error)?;
        Ok(embeddings
            .iter()
            .map(|e| {
                let weights = Object::new();
                for (token, weight) in &e.tokens {
                    set(&weights, token, *weight);
                }
                let out = Object::new();
                set(&out, "is_truncated", e.truncated);
                set(&out, "embedding", weights);
                out
            })
            .collect())
    }
}

/// Reranking (`rerank`): a cross-encoder or, for an embedding model, the
/// cosine of query and document embeddings.
#[wasm_bindgen]
pub struct Reranker {
    inner: ml_core::Reranker,
}

#[wasm_bindgen]
impl Reranker {
    #[wasm_bindgen(constructor)]
    pub fn new(
        model_json: &[u8],
        tokenizer_json: &[u8],
        model_onnx: &[u8],
    ) -> Result<Reranker, JsError> {
        let inner = ml_core::Reranker::from_bytes(model_json, tokenizer_json, model_onnx)
            .map_err(js_error)?;
        Ok(Self { inner })
    }

    /// One relevance score per document, in input order (higher is better);
    /// long documents are truncated, as Elasticsearch does by default.
    pub fn rerank(&self, query: &str, documents: Vec<String>) -> Result<Vec<f32>, JsError> {
        self.inner
            .score(query, &documents, &ml_core::RerankOptions::default())
            .map_err(js_error)
    }
}

/// The tract kernels this build dispatches to: `{isa, matmulKernels, tiers}`.
/// Without simd128 (or without the constructors that register them) only
/// generic kernels show, and inference is several times slower.
#[wasm_bindgen]
pub fn kernels() -> Object {
    let report = ml_core::kernels::report();
    let strings = |v: Vec<String>| v.into_iter().map(JsValue::from).collect::<Array>();
    let out = Object::new();
    set(&out, "isa", report.isa);
    set(&out, "matmulKernels", strings(report.matmul_kernels));
    set(&out, "tiers", strings(report.tiers));
    out
}
