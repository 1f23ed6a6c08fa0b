//! The file realm: users with argon2 password hashes and roles, read from a
//! TOML file, and the roles they may hold (the built-in ones and any the file
//! defines).
//!
//! ```toml
//! [users.alice]
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! roles = ["superuser"]
//!
//! [roles.key_manager]          # optional custom roles
//! cluster = ["manage_api_key", "monitor_inference"]
//! ```

use anyhow::{bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// A PHC string (`$argon2id$...`); never a password.
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    #[serde(default)]
    pub cluster: Vec<String>,
}

impl UsersFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the users file {}", path.display()))?;
        // toml's own message quotes the offending line, which may hold a
        // secret: report only where it is.
        let file: Self = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            anyhow::anyhow!(
                "parsing the users file {}: {} (line {line})",
                path.display(),
                e.message()
            )
        })?;
        file.validate()
            .with_context(|| format!("in the users file {}", path.display()))?;
        Ok(file)
    }

    /// Like [`Self::read`], but an absent file is an empty one.
    pub fn read_or_default(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::read(path)
        } else {
            Ok(Self::default())
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Write then rename, so that a crash never leaves half a file.
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?)?;
        restrict_permissions(&tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        for (name, role) in &self.roles {
            if es_wire::security::builtin_role(name).is_some() {
                bail!("role [{name}] is built in and cannot be redefined");
            }
            for p in &role.cluster {
                if !es_wire::security::CLUSTER_PRIVILEGES.contains(&p.as_str()) {
                    bail!(
                        "role [{name}]: unknown cluster privilege [{p}]; one of [{}]",
                        es_wire::security::CLUSTER_PRIVILEGES.join(",")
                    );
                }
            }
        }
        for (name, user) in &self.users {
            validate_username(name)?;
            // Only the hash's shape is checked; it is never printed.
            if PasswordHash::new(&user.password_hash).is_err() {
                bail!("user [{name}]: password_hash is not a password hash (use `inference-host users add`)");
            }
            for role in &user.roles {
                if self.role_privileges(role).is_none() {
                    bail!("user [{name}]: unknown role [{role}]");
                }
            }
        }
        Ok(())
    }

    /// The cluster privileges of a built-in or file-defined role.
    pub fn role_privileges(&self, role: &str) -> Option<Vec<String>> {
        if let Some(p) = es_wire::security::builtin_role(role) {
            return Some(p.iter().map(|s| s.to_string()).collect());
        }
        self.roles.get(role).map(|r| r.cluster.clone())
    }
}

fn validate_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 507
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !name.contains(':');
    if !ok {
        bail!("invalid user name [{name}]: printable ASCII without ':', 1 to 507 characters");
    }
    Ok(())
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) -> Result<()> {
    Ok(())
}

/// An argon2id hash (PHC string, random salt) of `password`.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

/// The users a server authenticates, with a cache of recent successful
/// checks: argon2 is deliberately slow (tens of milliseconds), so, like
/// Elasticsearch's realm cache, a password that matched once is remembered as
/// a salted SHA-256 for the process's life.
pub struct Users {
    file: UsersFile,
    cache_salt: [u8; 16],
    cache: Mutex<HashMap<String, [u8; 32]>>,
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    pub privileges: Vec<String>,
}

impl Users {
    pub fn new(file: UsersFile) -> Result<Self> {
        let mut cache_salt = [0u8; 16];
        getrandom::fill(&mut cache_salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Self {
            file,
            cache_salt,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.file.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.users.is_empty()
    }

    pub fn role_privileges(&self, role: &str) -> Option<Vec<String>> {
        self.file.role_privileges(role)
    }

    fn cache_key(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The user when `password` is theirs. Blocking (argon2): call from a
    /// blocking thread.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let entry = self.file.users.get(name)?;
        let key = self.cache_key(password);
        let cached = self.cache.lock().unwrap().get(name) == Some(&key);
        if !cached {
            let hash = PasswordHash::new(&entry.password_hash).ok()?;
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .ok()?;
            self.cache.lock().unwrap().insert(name.to_string(), key);
        }
        let mut privileges: Vec<String> = entry
            .roles
            .iter()
            .flat_map(|r| self.role_privileges(r).unwrap_or_default())
            .collect();
        privileges.sort();
        privileges.dedup();
        Some(User {
            name: name.to_string(),
            roles: entry.roles.clone(),
            privileges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(name: &str, password: &str, roles: &[&str]) -> UsersFile {
        let mut file = UsersFile::default();
        file.users.insert(
            name.into(),
            UserEntry {
                password_hash: hash_password(password).unwrap(),
                roles: roles.iter().map(|s| s.to_string()).collect(),
            },
        );
        file
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let file = file_with("bob", "s3cret-pass", &["inference_user"]);
        let hash = &file.users["bob"].password_hash;
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("s3cret-pass"));
        let users = Users::new(file).unwrap();
        let bob = users.authenticate("bob", "s3cret-pass").unwrap();
        assert_eq!(bob.privileges, ["monitor_inference"]);
        // Cached now; a wrong password must still fail.
        assert!(users.authenticate("bob", "s3cret-pass").is_some());
        assert!(users.authenticate("bob", "wrong").is_none());
        assert!(users.authenticate("alice", "s3cret-pass").is_none());
    }

    #[test]
    fn file_round_trips_and_refuses_plain_passwords_and_unknown_roles() {
        let dir = tempdir();
        let path = dir.join("users.toml");
        let mut file = file_with("admin", "pw", &["superuser", "key_manager"]);
        file.roles.insert(
            "key_manager".into(),
            RoleEntry {
                cluster: vec!["manage_api_key".into()],
            },
        );
        file.write(&path).unwrap();
        let read = UsersFile::read(&path).unwrap();
        assert_eq!(
            read.role_privileges("key_manager").unwrap(),
            ["manage_api_key"]
        );

        std::fs::write(
            &path,
            "[users.eve]\npassword_hash = \"plaintext\"\nroles = []\n",
        )
        .unwrap();
        let err = format!("{:#}", UsersFile::read(&path).unwrap_err());
        assert!(err.contains("not a password hash"), "{err}");
        assert!(
            !err.contains("plaintext"),
            "the value must not be echoed: {err}"
        );

        let mut bad = file_with("x", "pw", &["no_such_role"]);
        assert!(bad.write(&path).is_err());
        bad.users.clear();
        bad.roles.insert(
            "r".into(),
            RoleEntry {
                cluster: vec!["root".into()],
            },
        );
        assert!(bad.write(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "users-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
