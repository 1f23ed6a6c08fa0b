//! Which task types a model serves and the preconfigured endpoints: the pure
//! part of the model catalog, shared by the native host and the Spin router
//! (each scans its own model files).

use crate::endpoint::{AdaptiveAllocations, Catalog, Endpoint, ServiceSettings};
use crate::types::TaskType;

/// The task types a model whose `model.json` says `task` can serve: a
/// text-embedding model also reranks (as a bi-encoder), a completion model
/// also chats.
pub fn model_task_types(task: TaskType) -> Vec<TaskType> {
    match task {
        TaskType::TextEmbedding => vec![TaskType::TextEmbedding, TaskType::Rerank],
        TaskType::Completion => vec![TaskType::Completion, TaskType::ChatCompletion],
        other => vec![other],
    }
}

/// The endpoints that exist from the first start: (inference id, task type,
/// model id). Named as Elasticsearch names its own defaults, each on the
/// model this project ships for the task.
pub const PRECONFIGURED: [(&str, TaskType, &str); 5] = [
    (
        ".multilingual-e5-small-elasticsearch",
        TaskType::TextEmbedding,
        "all-minilm-l6-v2",
    ),
    (
        ".elser-2-elasticsearch",
        TaskType::SparseEmbedding,
        "splade-tiny",
    ),
    (
        ".rerank-v1-elasticsearch",
        TaskType::Rerank,
        "all-minilm-l6-v2",
    ),
    (
        ".smollm2-135m-instruct-completion",
        TaskType::Completion,
        "smollm2-135m-instruct",
    ),
    (
        ".smollm2-135m-instruct-chat_completion",
        TaskType::ChatCompletion,
        "smollm2-135m-instruct",
    ),
];

/// The preconfigured endpoints whose model is in `catalog` for that task,
/// with adaptive allocations up to `max_allocations`.
pub fn preconfigured_endpoints(catalog: &Catalog, max_allocations: u32) -> Vec<Endpoint> {
    PRECONFIGURED
        .iter()
        .filter(|(_, task, model)| {
            catalog
                .get(model)
                .is_some_and(|m| m.task_types.contains(task))
        })
        .map(|(id, task_type, model)| Endpoint {
            inference_id: id.to_string(),
            task_type: *task_type,
            service: crate::SERVICE.to_string(),
            service_settings: ServiceSettings {
                num_allocations: None,
                num_threads: 1,
                model_id: model.to_string(),
                adaptive_allocations: Some(AdaptiveAllocations {
                    enabled: true,
                    // The language model (1.3 GB an instance) loads on first use.
                    min_number_of_allocations: Some(u32::from(!matches!(
                        task_type,
                        TaskType::Completion | TaskType::ChatCompletion
                    ))),
                    max_number_of_allocations: Some(max_allocations),
                }),
                element_type: None,
                similarity: None,
                long_document_strategy: None,
                max_chunks_per_doc: None,
            },
            task_settings: Default::default(),
            chunking_settings: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ModelInfo;

    #[test]
    fn only_endpoints_whose_model_serves_the_task_exist() {
        let catalog = Catalog::new(vec![ModelInfo {
            model_id: "all-minilm-l6-v2".into(),
            task_types: model_task_types(TaskType::TextEmbedding),
        }]);
        let ids: Vec<String> = preconfigured_endpoints(&catalog, 2)
            .into_iter()
            .map(|e| e.inference_id)
            .collect();
        assert_eq!(
            ids,
            [
                ".multilingual-e5-small-elasticsearch",
                ".rerank-v1-elasticsearch"
            ]
        );
        assert!(preconfigured_endpoints(&Catalog::new(vec![]), 2).is_empty());
    }
}
