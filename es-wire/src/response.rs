//! Response bodies: inference results, streaming events, cluster info and the
//! services document.

use serde::Serialize;
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::catalog::Catalog;
use crate::error::EsError;
use crate::types::{ElementType, TaskType};

/// Header every response carries; the official clients refuse a 2xx without it.
pub const PRODUCT_HEADER: (&str, &str) = ("X-Elastic-Product", "Elasticsearch");

/// The Elasticsearch version this server presents itself as.
pub const ES_VERSION: &str = "9.1.0";

/// Int8 quantisation for `element_type: byte`: `round(x * 127)` clamped to
/// `[-127, 127]` (NaN gives 0). Meant for unit-length vectors (all our
/// embedding models L2-normalise), whose components lie in `[-1, 1]`; cosine
/// and dot-product rankings are preserved up to rounding.
pub fn quantize_int8(v: &[f32]) -> Vec<i8> {
    v.iter()
        .map(|x| {
            if x.is_nan() {
                0
            } else {
                (x * 127.0).round().clamp(-127.0, 127.0) as i8
            }
        })
        .collect()
}

/// Bit vectors for `element_type: bit`, as Elasticsearch's `bit` dense vectors
/// hold them: one bit per dimension, 1 when the component is `> 0`, packed
/// eight per byte with the first dimension in the most significant bit, each
/// byte as a signed int8. `dims / 8` values; when the dimension count is not a
/// multiple of 8 the last byte is padded with 0 bits (Elasticsearch requires
/// multiples of 8 for `bit` fields; all our models qualify).
pub fn pack_bits(v: &[f32]) -> Vec<i8> {
    v.chunks(8)
        .map(|chunk| {
            // Shifted left from bit 0: built for wasm32 with simd128, the
            // router got `0x80 >> i` sign-extended (bits 7..=i all set).
            let byte = chunk
                .iter()
                .enumerate()
                .filter(|(_, x)| **x > 0.0)
                .fold(0u8, |acc, (i, _)| acc | (1 << (7 - i)));
            byte as i8
        })
        .collect()
}

/// The field a dense embedding result is answered under.
fn dense_field(task: TaskType, element_type: ElementType) -> &'static str {
    match (task, element_type) {
        (TaskType::Embedding, ElementType::Float) => "embeddings",
        (TaskType::Embedding, ElementType::Byte) => "embeddings_bytes",
        (TaskType::Embedding, ElementType::Bit) => "embeddings_bits",
        (_, ElementType::Float) => "text_embedding",
        (_, ElementType::Byte) => "text_embedding_bytes",
        (_, ElementType::Bit) => "text_embedding_bits",
    }
}

/// Dense embeddings, one entry per input in input order:
/// `{"text_embedding": [{"embedding": [...]}]}`, or `text_embedding_bytes` /
/// `text_embedding_bits` after [`quantize_int8`] / [`pack_bits`]; for the
/// `embedding` task the fields are `embeddings`, `embeddings_bytes`,
/// `embeddings_bits`.
pub fn text_embedding_response(
    task: TaskType,
    vectors: &[Vec<f32>],
    element_type: ElementType,
) -> DenseEmbeddings {
    let embeddings = vectors
        .iter()
        .map(|v| DenseEmbedding {
            embedding: match element_type {
                ElementType::Float => DenseValues::Float(v.clone()),
                ElementType::Byte => DenseValues::Int8(quantize_int8(v)),
                ElementType::Bit => DenseValues::Int8(pack_bits(v)),
            },
        })
        .collect();
    DenseEmbeddings {
        field: dense_field(task, element_type),
        embeddings,
    }
}

/// The body of a dense embedding answer: one field (see
/// [`text_embedding_response`]) holding an entry per input.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseEmbeddings {
    pub field: &'static str,
    pub embeddings: Vec<DenseEmbedding>,
}

impl Serialize for DenseEmbeddings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.field, &self.embeddings)?;
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DenseEmbedding {
    pub embedding: DenseValues,
}

/// Floats print with the shortest decimal that reads back to the same `f32`
/// (as Elasticsearch's Jackson writes them: `0.1`, not `0.10000000149011612`);
/// non-finite ones as `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DenseValues {
    Float(Vec<f32>),
    Int8(Vec<i8>),
}

/// One sparse embedding: the vocabulary tokens with a weight, and whether
/// the input was cut to the model's length.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseEmbedding {
    pub tokens: Vec<(String, f32)>,
    pub truncated: bool,
}

/// Sparse embeddings: `{"sparse_embedding": [{"is_truncated": false,
/// "embedding": {"token": 1.23}}]}`, one entry per input.
pub fn sparse_embedding_response(items: &[SparseEmbedding]) -> SparseEmbeddings {
    SparseEmbeddings {
        sparse_embedding: items
            .iter()
            .map(|item| SparseEntry {
                embedding: item.tokens.iter().cloned().collect(),
                is_truncated: item.truncated,
            })
            .collect(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseEmbeddings {
    pub sparse_embedding: Vec<SparseEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseEntry {
    /// Token → weight, by token.
    pub embedding: BTreeMap<String, f32>,
    pub is_truncated: bool,
}

/// Rerank results: `{"rerank": [{"index", "relevance_score", "text"?}]}`,
/// sorted by score descending (ties keep input order, NaN last), `index`
/// being the position in the input, at most `top_n` entries (clamped to the
/// number of documents), `text` only when `return_documents`.
pub fn rerank_response(
    scores: &[f32],
    documents: &[String],
    top_n: Option<u32>,
    return_documents: bool,
) -> RerankResults {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: &usize| {
        if scores[*i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[*i]
        }
    };
    order.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| scores[*a].is_nan().cmp(&scores[*b].is_nan()))
    });
    let keep = top_n.map_or(order.len(), |n| (n as usize).min(order.len()));
    RerankResults {
        rerank: order[..keep]
            .iter()
            .map(|&i| Ranked {
                index: i,
                relevance_score: scores[i],
                text: documents.get(i).filter(|_| return_documents).cloned(),
            })
            .collect(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankResults {
    pub rerank: Vec<Ranked>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Completion results: `{"completion": [{"result": "..."}]}`.
pub fn completion_response(results: &[String]) -> Completions<CompletionResult> {
    Completions {
        completion: results
            .iter()
            .map(|r| CompletionResult { result: r.clone() })
            .collect(),
    }
}

/// One streamed completion piece: `{"completion": [{"delta": "Hel"}]}`.
pub fn completion_delta(delta: &str) -> Completions<CompletionDelta> {
    Completions {
        completion: vec![CompletionDelta {
            delta: delta.to_string(),
        }],
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completions<T> {
    pub completion: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionResult {
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionDelta {
    pub delta: String,
}

/// Token counts sent with the last chat-completion chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// One streamed chat-completion chunk:
/// `{"chat_completion": {"id", "object": "chat.completion.chunk", "model",
/// "choices": [{"index": 0, "delta": {"role"?, "content"?}, "finish_reason"}],
/// "usage"?}}`. Send `role: Some("assistant")` on the first chunk, the
/// `finish_reason` (`"stop"`, `"length"`) on the last content chunk, and
/// `usage` on the final chunk (with `delta` and `finish_reason` `None` it
/// carries no choice, as OpenAI's usage chunk).
pub fn chat_completion_chunk<'a>(
    id: &'a str,
    model: &'a str,
    role: Option<&'a str>,
    content: Option<&'a str>,
    finish_reason: Option<&'a str>,
    usage: Option<Usage>,
) -> ChatCompletionChunk<'a> {
    let delta = ChatDelta { content, role };
    let choices =
        if role.is_none() && content.is_none() && finish_reason.is_none() && usage.is_some() {
            vec![]
        } else {
            vec![ChatChoice {
                delta,
                finish_reason,
                index: 0,
            }]
        };
    ChatCompletionChunk {
        chat_completion: ChatChunk {
            choices,
            id,
            model,
            object: "chat.completion.chunk",
            usage,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk<'a> {
    pub chat_completion: ChatChunk<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk<'a> {
    pub choices: Vec<ChatChoice<'a>>,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice<'a> {
    pub delta: ChatDelta<'a>,
    /// `null` until the last content chunk.
    pub finish_reason: Option<&'a str>,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
}

/// A Server-Sent Event: `event: message\ndata: <data>\n\n` (each line of
/// `data` gets its own `data:` prefix, as SSE requires).
pub fn sse_event(data: &str) -> String {
    sse("message", data)
}

/// The event that ends a stream: `event: message\ndata: [DONE]\n\n`.
pub fn sse_done() -> String {
    sse_event("[DONE]")
}

/// An error after the stream began: `event: error\ndata: <envelope>\n\n`.
pub fn sse_error(err: &EsError) -> String {
    sse("error", &err.to_json().to_string())
}

fn sse(event: &str, data: &str) -> String {
    let mut out = format!("event: {event}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// `GET /`: Elasticsearch's cluster-info document. `cluster_uuid` is derived
/// from the cluster name (stable across restarts, 22 URL-safe base64
/// characters like Elasticsearch's); the build fields say this is not an
/// Elasticsearch build. Lucene and compatibility versions are those of
/// Elasticsearch 9.1.
pub fn cluster_info(node_name: &str, cluster_name: &str, version: &str) -> Value {
    json!({
        "name": node_name,
        "cluster_name": cluster_name,
        "cluster_uuid": cluster_uuid(cluster_name),
        "version": {
            "number": version,
            "build_flavor": "default",
            "build_type": "wasm",
            "build_hash": "unknown",
            "build_date": "1970-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "10.2.2",
            "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0"
        },
        "tagline": "You Know, for Search"
    })
}

/// 16 bytes from two FNV-1a hashes of the name, base64url without padding.
fn cluster_uuid(name: &str) -> String {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `GET /_inference/_services[/{task_type}]`: a JSON array with one entry per
/// service, in Elasticsearch's shape: `{"service", "name", "task_types",
/// "configurations": {setting: {"default_value"?, "description", "label",
/// "required", "sensitive", "updatable", "type", "supported_task_types"}}}`.
/// The `elasticsearch` service lists the task types its installed models
/// serve; with `task_type`, services that cannot serve it are left out.
pub fn services_response(catalog: &Catalog, task_type: Option<TaskType>) -> Value {
    let tasks = catalog.task_types();
    if task_type.is_some_and(|t| !tasks.contains(&t)) {
        return json!([]);
    }
    let installed: Vec<&str> = catalog.models.iter().map(|m| m.model_id.as_str()).collect();
    let setting = |default: Option<u32>,
                   description: String,
                   label: &str,
                   required: bool,
                   updatable: bool,
                   ty: &str| {
        let mut s = json!({
            "description": description, "label": label, "required": required,
            "sensitive": false, "updatable": updatable, "type": ty, "supported_task_types": tasks,
        });
        if let Some(d) = default {
            s["default_value"] = json!(d);
        }
        s
    };
    json!([{
        "service": crate::endpoint::SERVICE,
        "name": "Elasticsearch",
        "task_types": tasks,
        "configurations": {
            "model_id": setting(None,
                format!("The name of the model to use for the inference task. Installed: [{}].", installed.join(", ")),
                "Model ID", true, false, "str"),
            "num_allocations": setting(Some(1),
                "The number of warm instances of the model serving this endpoint.".into(),
                "Number Allocations", true, true, "int"),
            "num_threads": setting(Some(1),
                "Sets the number of threads used by each model allocation during inference.".into(),
                "Number Threads", true, true, "int"),
        }
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body as a client reads it (through its text: `to_value` would
    /// widen each f32 to its exact f64).
    fn v(body: impl Serialize) -> Value {
        serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap()
    }
    use crate::catalog::ModelInfo;

    #[test]
    fn floats_print_short() {
        let body = text_embedding_response(
            TaskType::TextEmbedding,
            &[vec![0.1, -0.25, 1.0, f32::NAN]],
            ElementType::Float,
        );
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"text_embedding":[{"embedding":[0.1,-0.25,1.0,null]}]}"#
        );
    }

    #[test]
    fn dense_response_fields() {
        let vs = vec![vec![0.5f32; 8], vec![-0.5f32; 8]];
        let v = v(text_embedding_response(
            TaskType::TextEmbedding,
            &vs,
            ElementType::Byte,
        ));
        assert_eq!(v["text_embedding_bytes"][0]["embedding"][0], 64);
        assert_eq!(v["text_embedding_bytes"][1]["embedding"][7], -64);
        let v = super::tests::v(text_embedding_response(
            TaskType::TextEmbedding,
            &vs,
            ElementType::Bit,
        ));
        assert_eq!(
            v,
            json!({"text_embedding_bits": [{"embedding": [-1]}, {"embedding": [0]}]})
        );
        for (et, field) in [
            (ElementType::Float, "embeddings"),
            (ElementType::Byte, "embeddings_bytes"),
            (ElementType::Bit, "embeddings_bits"),
        ] {
            assert!(
                super::tests::v(text_embedding_response(TaskType::Embedding, &vs, et))
                    .get(field)
                    .is_some()
            );
        }
    }

    #[test]
    fn int8_quantisation() {
        assert_eq!(
            quantize_int8(&[1.0, -1.0, 0.0, 0.5, 2.0, -3.0, f32::NAN, 0.004, 0.0045]),
            vec![127, -127, 0, 64, 127, -127, 0, 1, 1]
        );
    }

    #[test]
    fn bit_packing() {
        // Most significant bit first; 1 only for x > 0.
        let v = [1.0, -1.0, 0.0, 0.5, -0.0, 0.1, -2.0, 3.0];
        assert_eq!(pack_bits(&v), vec![0b1001_0101u8 as i8]);
        assert_eq!(pack_bits(&[1.0; 8]), vec![-1]);
        assert_eq!(
            pack_bits(&[0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
            vec![-128, 0b0100_0000]
        );
        assert_eq!(pack_bits(&[1.0; 384]).len(), 48);
    }

    #[test]
    fn sparse() {
        let v = v(sparse_embedding_response(&[SparseEmbedding {
            tokens: vec![("paris".into(), 1.5), ("city".into(), 0.25)],
            truncated: true,
        }]));
        assert_eq!(
            v,
            json!({"sparse_embedding": [{"is_truncated": true, "embedding": {"paris": 1.5, "city": 0.25}}]})
        );
    }

    #[test]
    fn rerank_order_ties_top_n_and_text() {
        let docs: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let v = v(rerank_response(
            &[0.5, 0.9, 0.5, f32::NAN],
            &docs,
            None,
            true,
        ));
        let idx: Vec<u64> = v["rerank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, vec![1, 0, 2, 3]);
        assert_eq!(
            v["rerank"][0],
            json!({"index": 1, "relevance_score": 0.9, "text": "b"})
        );
        let v = super::tests::v(rerank_response(
            &[0.1, 0.2, 0.3],
            &docs[..3],
            Some(2),
            false,
        ));
        assert_eq!(
            v,
            json!({"rerank": [{"index": 2, "relevance_score": 0.3}, {"index": 1, "relevance_score": 0.2}]})
        );
        assert_eq!(
            super::tests::v(rerank_response(&[0.1], &docs[..1], Some(10), false))["rerank"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn completion_bodies() {
        assert_eq!(
            v(completion_response(&["hi".into()])),
            json!({"completion": [{"result": "hi"}]})
        );
        assert_eq!(
            serde_json::to_string(&completion_delta("Hel")).unwrap(),
            r#"{"completion":[{"delta":"Hel"}]}"#
        );
        let c = v(chat_completion_chunk(
            "id1",
            "smollm2",
            Some("assistant"),
            Some("Hi"),
            None,
            None,
        ));
        assert_eq!(
            c,
            json!({"chat_completion": {"id": "id1", "object": "chat.completion.chunk", "model": "smollm2",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]}})
        );
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
        };
        let c = v(chat_completion_chunk(
            "id1",
            "m",
            None,
            None,
            None,
            Some(usage),
        ));
        assert_eq!(c["chat_completion"]["choices"], json!([]));
        assert_eq!(c["chat_completion"]["usage"]["total_tokens"], 5);
        let c = v(chat_completion_chunk(
            "id1",
            "m",
            None,
            None,
            Some("stop"),
            Some(usage),
        ));
        assert_eq!(c["chat_completion"]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn sse_framing() {
        assert_eq!(
            sse_event(r#"{"a":1}"#),
            "event: message\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(sse_event("a\nb"), "event: message\ndata: a\ndata: b\n\n");
        assert_eq!(sse_done(), "event: message\ndata: [DONE]\n\n");
        let e = EsError::internal("boom");
        assert_eq!(
            sse_error(&e),
            format!("event: error\ndata: {}\n\n", e.to_json())
        );
    }

    #[test]
    fn cluster_info_document() {
        let v = cluster_info("node-1", "wasm-inference", ES_VERSION);
        assert_eq!(v["version"]["number"], "9.1.0");
        assert_eq!(v["tagline"], "You Know, for Search");
        assert_eq!(v["name"], "node-1");
        let uuid = v["cluster_uuid"].as_str().unwrap();
        assert_eq!(uuid.len(), 22);
        assert_eq!(
            uuid,
            cluster_info("x", "wasm-inference", "9.1.0")["cluster_uuid"]
        );
        assert_ne!(uuid, cluster_info("x", "other", "9.1.0")["cluster_uuid"]);
        assert_eq!(PRODUCT_HEADER, ("X-Elastic-Product", "Elasticsearch"));
    }

    #[test]
    fn services_document() {
        let catalog = Catalog::new(vec![
            ModelInfo {
                model_id: "splade".into(),
                task_types: vec![TaskType::SparseEmbedding],
            },
            ModelInfo {
                model_id: "minilm".into(),
                task_types: vec![TaskType::Rerank, TaskType::TextEmbedding],
            },
        ]);
        let v = services_response(&catalog, None);
        let s = &v[0];
        assert_eq!(s["service"], "elasticsearch");
        assert_eq!(
            s["task_types"],
            json!(["text_embedding", "sparse_embedding", "rerank"])
        );
        let model_id = &s["configurations"]["model_id"];
        assert_eq!(
            (model_id["required"].as_bool(), model_id["type"].as_str()),
            (Some(true), Some("str"))
        );
        assert_eq!(s["configurations"]["num_allocations"]["default_value"], 1);
        assert_eq!(
            services_response(&catalog, Some(TaskType::Completion)),
            json!([])
        );
        assert_eq!(
            services_response(&catalog, Some(TaskType::Rerank))
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
