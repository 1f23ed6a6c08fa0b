//! Where endpoint definitions live. In the Spin app: Spin's key-value store,
//! one key per endpoint (`endpoint/<id>`, the endpoint as JSON). Behind a
//! trait so that the request logic runs natively in tests on a map.

use es_wire::Endpoint;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Key prefix of endpoint definitions in the store.
pub const KEY_PREFIX: &str = "endpoint/";

#[allow(async_fn_in_trait)]
pub trait EndpointStore {
    async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, String>;
    async fn set(&self, id: &str, value: Vec<u8>) -> Result<(), String>;
    async fn delete(&self, id: &str) -> Result<(), String>;
    /// Every stored endpoint id.
    async fn ids(&self) -> Result<Vec<String>, String>;
}

/// Typed access over any [`EndpointStore`].
pub async fn load<S: EndpointStore>(store: &S, id: &str) -> Result<Option<Endpoint>, String> {
    match store.get(id).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the stored endpoint [{id}] is not valid: {e}")),
    }
}

pub async fn save<S: EndpointStore>(store: &S, endpoint: &Endpoint) -> Result<(), String> {
    let bytes = serde_json::to_vec(endpoint).map_err(|e| e.to_string())?;
    store.set(&endpoint.inference_id, bytes).await
}

pub async fn list<S: EndpointStore>(store: &S) -> Result<Vec<Endpoint>, String> {
    let mut all = Vec::new();
    for id in store.ids().await? {
        if let Some(e) = load(store, &id).await? {
            all.push(e);
        }
    }
    Ok(all)
}

/// An in-memory store, for tests.
#[derive(Default)]
pub struct MemoryStore(RefCell<BTreeMap<String, Vec<u8>>>);

impl EndpointStore for MemoryStore {
    async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.borrow().get(id).cloned())
    }
    async fn set(&self, id: &str, value: Vec<u8>) -> Result<(), String> {
        self.0.borrow_mut().insert(id.to_string(), value);
        Ok(())
    }
    async fn delete(&self, id: &str) -> Result<(), String> {
        self.0.borrow_mut().remove(id);
        Ok(())
    }
    async fn ids(&self) -> Result<Vec<String>, String> {
        Ok(self.0.borrow().keys().cloned().collect())
    }
}

/// Spin's key-value store (the `default` store unless the manifest's
/// `key_value_stores` names another).
pub struct SpinKv(pub spin_sdk::key_value::Store);

impl SpinKv {
    pub async fn open(label: &str) -> Result<Self, String> {
        spin_sdk::key_value::Store::open(label)
            .await
            .map(Self)
            .map_err(|e| format!("opening the key-value store [{label}]: {e:?}"))
    }
}

fn kv_error(e: spin_sdk::key_value::Error) -> String {
    format!("key-value store: {e:?}")
}

impl EndpointStore for SpinKv {
    async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        self.0
            .get(format!("{KEY_PREFIX}{id}"))
            .await
            .map_err(kv_error)
    }
    async fn set(&self, id: &str, value: Vec<u8>) -> Result<(), String> {
        self.0
            .set(format!("{KEY_PREFIX}{id}"), value)
            .await
            .map_err(kv_error)
    }
    async fn delete(&self, id: &str) -> Result<(), String> {
        self.0
            .delete(format!("{KEY_PREFIX}{id}"))
            .await
            .map_err(kv_error)
    }
    async fn ids(&self) -> Result<Vec<String>, String> {
        let keys = self.0.get_keys().await.collect().await.map_err(kv_error)?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(KEY_PREFIX).map(str::to_string))
            .collect())
    }
}
