//! Reranking: one relevance score per document for a query, from a
//! cross-encoder (a pair classifier) or a bi-encoder (cosine of embeddings).

use crate::config::{Head, ModelConfig};
use crate::embedding::{cosine, TextEmbedder};
use crate::encoder::{Encoder, Tokens};
use crate::InputType;
use anyhow::{anyhow, bail, Result};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer, TruncationDirection};

/// Elasticsearch's `long_document_strategy`: what happens to documents longer
/// than the model's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongDocumentStrategy {
    /// Score the beginning of each document only (Elasticsearch's default).
    #[default]
    Truncate,
    /// Split each document into windows, score each, keep the best score.
    Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub strategy: LongDocumentStrategy,
    /// With [`LongDocumentStrategy::Chunk`], score only the first this many
    /// chunks of each document. `None` scores them all, as Elasticsearch does
    /// when `max_chunks_per_doc` is not set.
    pub max_chunks_per_doc: Option<usize>,
}

/// How a [`Reranker`] scores a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankerKind {
    /// `sigmoid(logit)` of `[CLS] query [SEP] document [SEP]`.
    CrossEncoder,
    /// Cosine of the query and document embeddings.
    BiEncoder,
}

enum Scorer {
    Cross(Encoder),
    Bi(TextEmbedder),
}

pub struct Reranker {
    scorer: Scorer,
    /// The model's tokenizer without truncation: documents are cut into
    /// windows here, so that truncating is scoring the first window.
    splitter: Tokenizer,
}

impl Reranker {
    /// Loads `model.json`, `tokenizer.json` and `model.onnx` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::new(Encoder::load(dir)?)
    }

    /// Builds the reranker from file contents (the browser has bytes, not paths).
    #[cfg(feature = "tract")]
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        Self::new(Encoder::from_bytes(model_json, tokenizer_json, onnx)?)
    }

    /// A classification head (model.json `"head": "classification"`) makes a
    /// cross-encoder; a dense embedding model makes a bi-encoder.
    pub fn new(encoder: Encoder) -> Result<Self> {
        let mut splitter = encoder.tokenizer.clone();
        splitter
            .with_truncation(None)
            .map_err(|e| anyhow!("tokenizer truncation: {e}"))?;
        let config = &encoder.config;
        let scorer = if config.head == Some(Head::Classification) {
            if config.num_labels != Some(1) {
                bail!(
                    "cross-encoder [{}] must have one logit, model.json says num_labels {:?}",
                    config.model_id,
                    config.num_labels
                );
            }
            Scorer::Cross(encoder)
        } else {
            Scorer::Bi(TextEmbedder::new(encoder)?)
        };
        Ok(Self { scorer, splitter })
    }

    pub fn kind(&self) -> RerankerKind {
        match self.scorer {
            Scorer::Cross(_) => RerankerKind::CrossEncoder,
            Scorer::Bi(_) => RerankerKind::BiEncoder,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match &self.scorer {
            Scorer::Cross(encoder) => &encoder.config,
            Scorer::Bi(embedder) => &embedder.encoder.config,
        }
    }

    /// One relevance score per document, in input order (higher is better).
    pub fn score(&self, query: &str, documents: &[String], options: &Options) -> Result<Vec<f32>> {
        let limit = match (options.strategy, options.max_chunks_per_doc) {
            (LongDocumentStrategy::Truncate, _) => 1,
            (LongDocumentStrategy::Chunk, Some(0)) => {
                bail!("max_chunks_per_doc must be at least 1")
            }
            (LongDocumentStrategy::Chunk, Some(n)) => n,
            (LongDocumentStrategy::Chunk, None) => usize::MAX,
        };
        let (owners, scores) = match &self.scorer {
            Scorer::Cross(encoder) => self.cross_scores(encoder, query, documents, limit)?,
            Scorer::Bi(embedder) => self.bi_scores(embedder, query, documents, limit)?,
        };
        let mut best = vec![f32::NEG_INFINITY; documents.len()];
        for (doc, score) in owners.into_iter().zip(scores) {
            best[doc] = best[doc].max(score);
        }
        Ok(best)
    }

    /// Every chunk of every document paired with the query, run in one
    /// length-grouped pass. Returns each chunk's document and score.
    fn cross_scores(
        &self,
        encoder: &Encoder,
        query: &str,
        documents: &[String],
        limit: usize,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let max_len = encoder.config.max_sequence_length;
        let mut query = self.encode(query)?;
        // A query takes half the window at most, so that documents keep room.
        query.truncate(max_len / 2, 0, TruncationDirection::Right);
        query.take_overflowing();
        let budget = max_len.saturating_sub(self.added_tokens(true) + query.len());
        let mut owners = Vec::new();
        let mut tokens = Vec::new();
        for (doc, text) in documents.iter().enumerate() {
            let (windows, truncated) = self.windows(text, budget, limit)?;
            for mut window in windows {
                // The second sequence's type, as encoding the pair would set it.
                window.set_type_ids(vec![1; window.len()]);
                let encoding = self
                    .splitter
                    .post_process(query.clone(), Some(window), true)
                    .map_err(|e| anyhow!("tokenizing: {e}"))?;
                owners.push(doc);
                tokens.push(Tokens {
                    encoding,
                    truncated,
                });
            }
        }
        let mut scores = vec![0f32; tokens.len()];
        encoder.run(&tokens, |batch| {
            let logits = &batch.output;
            logits.expect_shape(&[Some(batch.rows.len()), Some(1)], "[batch, 1] logits")?;
            for (row, &chunk) in batch.rows.iter().enumerate() {
                scores[chunk] = sigmoid(logits.values[row]);
            }
            Ok(())
        })?;
        Ok((owners, scores))
    }

    /// The query (input type search) and every chunk of every document (input
    /// type ingest) embedded in one pass. Returns each chunk's document and
    /// its cosine with the query.
    fn bi_scores(
        &self,
        embedder: &TextEmbedder,
        query: &str,
        documents: &[String],
        limit: usize,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let config = &embedder.encoder.config;
        let mut tokens = vec![embedder.tokenize(query, Some(InputType::Search))?];
        // Every chunk gets the passage prefix.
        let prefix = self.encode(&config.passage_prefix)?;
        let budget = config
            .max_sequence_length
            .saturating_sub(self.added_tokens(false) + prefix.len());
        let mut owners = Vec::new();
        for (doc, text) in documents.iter().enumerate() {
            let (windows, truncated) = self.windows(text, budget, limit)?;
            for window in windows {
                let encoding = self
                    .splitter
                    .post_process(Encoding::merge([prefix.clone(), window], false), None, true)
                    .map_err(|e| anyhow!("tokenizing: {e}"))?;
                owners.push(doc);
                tokens.push(Tokens {
                    encoding,
                    truncated,
                });
            }
        }
        let embeddings = embedder.embed_tokens(&tokens)?;
        let (query, chunks) = embeddings.split_first().expect("the query is first");
        let scores = chunks
            .iter()
            .map(|chunk| cosine(&query.values, &chunk.values))
            .collect();
        Ok((owners, scores))
    }

    /// `text` without special tokens.
    fn encode(&self, text: &str) -> Result<Encoding> {
        self.splitter
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))
    }

    /// The first `limit` consecutive windows of `budget` tokens of `text` (one,
    /// maybe empty, at least), and whether any of the text was left out.
    fn windows(&self, text: &str, budget: usize, limit: usize) -> Result<(Vec<Encoding>, bool)> {
        if budget == 0 {
            bail!("the query leaves no room for the document");
        }
        let mut first = self.encode(text)?;
        first.truncate(budget, 0, TruncationDirection::Right);
        let rest = first.take_overflowing();
        let truncated = rest.len() >= limit;
        let windows = std::iter::once(first).chain(rest).take(limit).collect();
        Ok((windows, truncated))
    }

    /// Special tokens the post-processor adds to one text or a pair.
    fn added_tokens(&self, pair: bool) -> usize {
        use tokenizers::PostProcessor;
        self.splitter
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
