//! API keys as Elasticsearch has them: a random id and secret, handed out once
//! as `base64(id:api_key)`; only a salted SHA-256 of the secret is stored (in
//! the redb store). The secret is 128 random bits, so a fast hash is as safe
//! as a slow one here, and authenticating stays cheap on every request.

use super::Permission;
use crate::store::RedbStore;
use anyhow::{Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the store keeps for a key. Never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub realm: String,
    /// Hex SHA-256 of `salt || secret`.
    pub hash: String,
    pub salt: String,
    pub creation: u64,
    pub expiration: Option<u64>,
    pub invalidated: bool,
    pub invalidation: Option<u64>,
    pub role_descriptors: Vec<(String, Vec<String>)>,
    /// The creator's permission when the key was made: the key never does
    /// more than that.
    pub limited_by: Permission,
    pub metadata: Value,
}

impl ApiKeyRecord {
    /// The key's permission: its creator's, narrowed by its role descriptors.
    pub fn permission(&self) -> Permission {
        let mut groups = self.limited_by.clone();
        if !self.role_descriptors.is_empty() {
            let mut own: Vec<String> = self
                .role_descriptors
                .iter()
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            own.sort();
            own.dedup();
            groups.0.push(own);
        }
        groups
    }

    pub fn is_active(&self, now_ms: u64) -> bool {
        !self.invalidated && self.expiration.is_none_or(|e| now_ms < e)
    }

    /// The GET answer for this key: everything but the hash and salt.
    pub fn info_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": "rest",
            "creation": self.creation,
            "invalidated": self.invalidated,
            "username": self.owner,
            "realm": self.realm,
            "realm_type": self.realm,
            "metadata": self.metadata,
            "role_descriptors": es_wire::security::role_descriptors_json(&self.role_descriptors),
        });
        if let Some(e) = self.expiration {
            v["expiration"] = json!(e);
        }
        if let Some(i) = self.invalidation {
            v["invalidation"] = json!(i);
        }
        v
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_token(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key: (its record, the secret, the encoded credential).
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub secret: String,
    pub encoded: String,
}

pub struct ApiKeys {
    store: RedbStore,
}

impl ApiKeys {
    pub fn new(store: RedbStore) -> Self {
        Self { store }
    }

    pub fn create(
        &self,
        request: es_wire::security::CreateApiKey,
        owner: &str,
        realm: &str,
        limited_by: Permission,
    ) -> Result<NewKey> {
        // 15 bytes → 20 characters, 16 → 22, as Elasticsearch's ids and keys.
        let id = random_token(15)?;
        let secret = random_token(16)?;
        let salt = random_token(16)?;
        let creation = now_ms();
        let record = ApiKeyRecord {
            id: id.clone(),
            name: request.name,
            owner: owner.to_string(),
            realm: realm.to_string(),
            hash: digest(&salt, &secret),
            salt,
            creation,
            expiration: request
                .expiration
                .map(|d| creation.saturating_add(d.as_millis() as u64)),
            invalidated: false,
            invalidation: None,
            role_descriptors: request.role_descriptors,
            limited_by,
            metadata: request.metadata,
        };
        self.put(&record)?;
        let encoded = STANDARD.encode(format!("{id}:{secret}"));
        Ok(NewKey {
            record,
            secret,
            encoded,
        })
    }

    fn put(&self, record: &ApiKeyRecord) -> Result<()> {
        self.store
            .put_api_key(&record.id, &serde_json::to_vec(record)?)
    }

    fn decode(bytes: &[u8]) -> Result<ApiKeyRecord> {
        serde_json::from_slice(bytes).context("a stored API key is not valid JSON")
    }

    /// The active key `encoded` (base64 of `id:secret`) stands for; None for
    /// anything else (malformed, unknown, wrong secret, expired, invalidated).
    pub fn authenticate(&self, encoded: &str) -> Result<Option<ApiKeyRecord>> {
        let Some((id, secret)) = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
        else {
            return Ok(None);
        };
        let Some(bytes) = self.store.get_api_key(&id)? else {
            return Ok(None);
        };
        let record = Self::decode(&bytes)?;
        let matches = digest(&record.salt, &secret) == record.hash;
        Ok((matches && record.is_active(now_ms())).then_some(record))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<ApiKeyRecord>> {
        let mut all = self
            .store
            .api_keys()?
            .iter()
            .map(|b| Self::decode(b))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| (a.creation, &a.id).cmp(&(b.creation, &b.id)));
        Ok(all)
    }

    /// Marks a key invalidated; false when it was already.
    pub fn invalidate(&self, mut record: ApiKeyRecord) -> Result<bool> {
        if record.invalidated {
            return Ok(false);
        }
        record.invalidated = true;
        record.invalidation = Some(now_ms());
        self.put(&record)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys() -> (ApiKeys, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "api-keys-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = RedbStore::open(&dir.join("endpoints.redb")).unwrap();
        (ApiKeys::new(store), dir)
    }

    fn request(expiration: Option<Duration>) -> es_wire::security::CreateApiKey {
        es_wire::security::CreateApiKey {
            name: "k".into(),
            expiration,
            role_descriptors: vec![("r".into(), vec!["monitor_inference".into()])],
            metadata: json!({}),
        }
    }

    #[test]
    fn keys_authenticate_until_invalidated_and_only_hashes_are_stored() {
        let (keys, dir) = keys();
        let limited = Permission(vec![vec!["all".into()]]);
        let key = keys
            .create(request(None), "admin", "file", limited)
            .unwrap();
        assert_eq!(key.record.id.len(), 20);
        assert_eq!(key.secret.len(), 22);
        let raw: Vec<u8> = keys.store.api_keys().unwrap().concat();
        assert!(
            !String::from_utf8_lossy(&raw).contains(&key.secret),
            "the secret must not be stored"
        );
        let found = keys.authenticate(&key.encoded).unwrap().unwrap();
        assert_eq!(found.id, key.record.id);
        assert_eq!(found.permission().0.len(), 2);
        assert!(found
            .permission()
            .allows(es_wire::security::action::INFERENCE_POST));
        assert!(!found
            .permission()
            .allows(es_wire::security::action::INFERENCE_PUT));

        let wrong = STANDARD.encode(format!("{}:{}", key.record.id, "x".repeat(22)));
        assert!(keys.authenticate(&wrong).unwrap().is_none());
        assert!(keys.authenticate("not base64!").unwrap().is_none());

        assert!(keys.invalidate(found.clone()).unwrap());
        assert!(keys.authenticate(&key.encoded).unwrap().is_none());
        let listed = keys.list().unwrap();
        assert!(listed[0].invalidated);
        assert!(!keys.invalidate(listed[0].clone()).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expired_keys_are_refused() {
        let (keys, dir) = keys();
        let key = keys
            .create(
                request(Some(Duration::from_millis(1))),
                "admin",
                "file",
                Permission(vec![vec!["all".into()]]),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(keys.authenticate(&key.encoded).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
