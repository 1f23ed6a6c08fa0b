//! Endpoint definitions in Spin's key-value store: one key per endpoint
//! (`endpoint/<id>`, the endpoint as JSON).

use es_wire::{Endpoint, EsError};
use spin_sdk::key_value::Store;

/// Key prefix of endpoint definitions in the store.
const KEY_PREFIX: &str = "endpoint/";

/// Spin's key-value store (the `default` store unless the manifest's
/// `key_value_stores` names another).
pub struct SpinKv(Store);

impl SpinKv {
    pub async fn open(label: &str) -> Result<Self, EsError> {
        Store::open(label)
            .await
            .map(Self)
            .map_err(|e| EsError::internal(format!("opening the key-value store [{label}]: {e:?}")))
    }
}

fn kv_error(e: spin_sdk::key_value::Error) -> EsError {
    EsError::internal(format!("key-value store: {e:?}"))
}

impl es_wire::EndpointStore for SpinKv {
    async fn get(&self, id: &str) -> Result<Option<Endpoint>, EsError> {
        let Some(bytes) = self
            .0
            .get(format!("{KEY_PREFIX}{id}"))
            .await
            .map_err(kv_error)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EsError::internal(format!("the stored endpoint [{id}] is not valid: {e}")))
    }

    async fn list(&self) -> Result<Vec<Endpoint>, EsError> {
        let keys = self.0.get_keys().await.collect().await.map_err(kv_error)?;
        let mut all = Vec::new();
        for id in keys.iter().filter_map(|k| k.strip_prefix(KEY_PREFIX)) {
            all.extend(self.get(id).await?);
        }
        Ok(all)
    }

    /// Key-value stores have no create-if-absent: a race between two PUTs of
    /// one id is decided by the last write.
    async fn create(&self, endpoint: &Endpoint) -> Result<bool, EsError> {
        if self.get(&endpoint.inference_id).await?.is_some() {
            return Ok(false);
        }
        self.replace(endpoint).await?;
        Ok(true)
    }

    async fn replace(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        let bytes = serde_json::to_vec(endpoint).map_err(|e| EsError::internal(e.to_string()))?;
        self.0
            .set(format!("{KEY_PREFIX}{}", endpoint.inference_id), bytes)
            .await
            .map_err(kv_error)
    }

    async fn delete(&self, id: &str) -> Result<(), EsError> {
        self.0
            .delete(format!("{KEY_PREFIX}{id}"))
            .await
            .map_err(kv_error)
    }
}
