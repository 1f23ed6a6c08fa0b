//! Endpoint definitions, persisted in an embedded redb database in the data
//! directory. Every write is one ACID transaction, durable once acknowledged.

use anyhow::{Context, Result};
use es_wire::{Endpoint, EsError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// inference_id → the endpoint as JSON (es-wire's serde form).
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
/// API key id → the key's record as JSON (see `security::api_keys`); only a
/// hash of each key's secret is kept.
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

/// Endpoints and API keys in one redb database. Cloning shares the one open
/// database (redb allows one per file and process).
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)
            .with_context(|| format!("opening the endpoint store {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(ENDPOINTS)?;
        txn.open_table(API_KEYS)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Writes an API key record (new or updated) in one durable transaction.
    pub fn put_api_key(&self, id: &str, record: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(API_KEYS)?.insert(id, record)?;
        txn.commit()?;
        Ok(())
    }

    pub fn get_api_key(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(API_KEYS)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    pub fn api_keys(&self) -> Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(API_KEYS)?;
        table
            .iter()?
            .map(|entry| Ok(entry?.1.value().to_vec()))
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<Option<Endpoint>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        table.get(id)?.map(|v| decode(v.value())).transpose()
    }

    pub fn list(&self) -> Result<Vec<Endpoint>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        table
            .iter()?
            .map(|entry| decode(entry?.1.value()))
            .collect()
    }

    /// Stores a new endpoint; false (and nothing written) when the id exists.
    pub fn create(&self, endpoint: &Endpoint) -> Result<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENDPOINTS)?;
            if table.get(endpoint.inference_id.as_str())?.is_some() {
                return Ok(false);
            }
            table.insert(
                endpoint.inference_id.as_str(),
                serde_json::to_vec(endpoint)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Replaces an existing endpoint.
    pub fn replace(&self, endpoint: &Endpoint) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(ENDPOINTS)?.insert(
            endpoint.inference_id.as_str(),
            serde_json::to_vec(endpoint)?.as_slice(),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// Removes an endpoint; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(ENDPOINTS)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(existed)
    }
}

/// The request core's view. redb's transactions are short and local, so
/// they run inline rather than on a blocking thread.
impl es_wire::EndpointStore for RedbStore {
    async fn get(&self, id: &str) -> Result<Option<Endpoint>, EsError> {
        RedbStore::get(self, id).map_err(internal)
    }
    async fn list(&self) -> Result<Vec<Endpoint>, EsError> {
        RedbStore::list(self).map_err(internal)
    }
    async fn create(&self, endpoint: &Endpoint) -> Result<bool, EsError> {
        RedbStore::create(self, endpoint).map_err(internal)
    }
    async fn replace(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        RedbStore::replace(self, endpoint).map_err(internal)
    }
    async fn delete(&self, id: &str) -> Result<(), EsError> {
        RedbStore::delete(self, id).map(drop).map_err(internal)
    }
}

fn internal(e: anyhow::Error) -> EsError {
    tracing::error!(error = %format!("{e:#}"), "endpoint store failed");
    EsError::internal(format!("{e:#}"))
}

fn decode(bytes: &[u8]) -> Result<Endpoint> {
    serde_json::from_slice(bytes).context("a stored endpoint is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str) -> Endpoint {
        serde_json::from_value(serde_json::json!({
            "inference_id": id, "task_type": "text_embedding", "service": "elasticsearch",
            "service_settings": {"model_id": "m", "num_allocations": 1, "num_threads": 1}
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("endpoints.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            assert!(store.create(&endpoint("a")).unwrap());
            assert!(
                !store.create(&endpoint("a")).unwrap(),
                "duplicate create must refuse"
            );
            assert!(store.create(&endpoint("b")).unwrap());
            assert!(store.delete("b").unwrap());
            assert!(!store.delete("b").unwrap());
        }
        let store = RedbStore::open(&path).unwrap();
        let ids: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.inference_id)
            .collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(store.get("a").unwrap(), Some(endpoint("a")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
