//! Authentication and authorisation as Elasticsearch does them, as an axum
//! middleware in front of the API: HTTP basic auth against the users file,
//! `Authorization: ApiKey` against the keys in the store, cluster privileges
//! per action, and the `/_security` API key and `_authenticate` APIs.
//!
//! Off unless the server is started with `--security`. Secrets (passwords,
//! API keys, the `Authorization` header) are never logged or echoed.

pub mod api_keys;
pub mod users;

use crate::api::error_response;
use api_keys::ApiKeys;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use es_wire::security::{self as wire, SecurityRoute};
use es_wire::EsError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use users::Users;

/// What a caller may do: an action is allowed when every group holds a
/// privilege granting it. A user has one group (their roles' privileges); an
/// API key has its creator's groups plus one for its own role descriptors,
/// so it never exceeds its creator.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permission(pub Vec<Vec<String>>);

impl Permission {
    pub fn allows(&self, action: &str) -> bool {
        self.0.iter().all(|g| wire::any_grants(g, action))
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Subject {
    pub username: String,
    pub roles: Vec<String>,
    pub permission: Permission,
    /// (id, name) when authenticated with an API key.
    pub api_key: Option<(String, String)>,
}

impl Subject {
    fn principal(&self) -> String {
        match &self.api_key {
            Some((id, _)) => format!("API key id [{id}] of user [{}]", self.username),
            None => format!("user [{}]", self.username),
        }
    }

    /// Holds `all` in every group: sees and manages every API key.
    fn is_superuser(&self) -> bool {
        self.permission
            .0
            .iter()
            .all(|g| g.iter().any(|p| p == "all"))
    }

    fn authenticate_json(&self) -> Value {
        let (realm, kind) = match self.api_key {
            Some(_) => ("_es_api_key", "api_key"),
            None => ("file", "realm"),
        };
        let mut v = json!({
            "username": self.username,
            "roles": self.roles,
            "full_name": null,
            "email": null,
            "metadata": {},
            "enabled": true,
            "authentication_realm": {"name": realm, "type": realm},
            "lookup_realm": {"name": realm, "type": realm},
            "authentication_type": kind,
        });
        if let Some((id, name)) = &self.api_key {
            v["api_key"] = json!({"id": id, "name": name});
        }
        v
    }
}

pub struct Security {
    pub users: Users,
    pub keys: ApiKeys,
    /// Largest `/_security` request body.
    pub max_body_bytes: usize,
}

impl Security {
    /// Authenticates from the `Authorization` header; errors are 401s.
    async fn authenticate(
        self: &Arc<Self>,
        authorization: Option<&HeaderValue>,
        uri: &str,
    ) -> Result<Subject, EsError> {
        let Some(value) = authorization else {
            return Err(wire::missing_credentials(uri));
        };
        let Some((scheme, credentials)) = value.to_str().ok().and_then(wire::parse_authorization)
        else {
            return Err(wire::missing_credentials(uri));
        };
        match scheme.as_str() {
            "basic" => {
                let decoded = STANDARD
                    .decode(credentials)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| wire::missing_credentials(uri))?;
                let Some((name, password)) = decoded.split_once(':') else {
                    return Err(wire::missing_credentials(uri));
                };
                let (name, password) = (name.to_string(), password.to_string());
                let this = self.clone();
                let user = tokio::task::spawn_blocking({
                    let name = name.clone();
                    move || this.users.authenticate(&name, &password)
                })
                .await
                .ok()
                .flatten()
                .ok_or_else(|| wire::bad_user_credentials(&name, uri))?;
                Ok(Subject {
                    username: user.name,
                    roles: user.roles,
                    permission: Permission(vec![user.privileges]),
                    api_key: None,
                })
            }
            "apikey" => {
                let record = self
                    .keys
                    .authenticate(credentials)
                    .map_err(internal)?
                    .ok_or_else(|| wire::bad_api_key(uri))?;
                let roles = if record.role_descriptors.is_empty() {
                    vec![]
                } else {
                    record
                        .role_descriptors
                        .iter()
                        .map(|(n, _)| n.clone())
                        .collect()
                };
                Ok(Subject {
                    permission: record.permission(),
                    username: record.owner,
                    roles,
                    api_key: Some((record.id, record.name)),
                })
            }
            _ => Err(wire::bad_api_key(uri)),
        }
    }

    async fn serve(
        &self,
        route: SecurityRoute,
        subject: &Subject,
        request: Request,
    ) -> Result<Value, EsError> {
        match route {
            SecurityRoute::Authenticate => Ok(subject.authenticate_json()),
            SecurityRoute::CreateApiKey => {
                let body = self.read_body(request).await?;
                let create = wire::parse_create_api_key(&body)?;
                let realm = if subject.api_key.is_some() {
                    "_es_api_key"
                } else {
                    "file"
                };
                let key = self
                    .keys
                    .create(create, &subject.username, realm, subject.permission.clone())
                    .map_err(internal)?;
                tracing::info!(id = %key.record.id, name = %key.record.name, owner = %subject.username, "API key created");
                Ok(wire::create_api_key_response(
                    &key.record.id,
                    &key.record.name,
                    &key.secret,
                    &key.encoded,
                    key.record.expiration,
                ))
            }
            SecurityRoute::GetApiKeys { id, name } => {
                let keys: Vec<Value> = self
                    .visible_keys(subject)?
                    .into_iter()
                    .filter(|k| id.as_ref().is_none_or(|i| &k.id == i))
                    .filter(|k| name.as_ref().is_none_or(|n| name_matches(n, &k.name)))
                    .map(|k| k.info_json())
                    .collect();
                if keys.is_empty() && (id.is_some() || name.is_some()) {
                    return Err(EsError::new(
                        404,
                        "resource_not_found_exception",
                        "no API keys found",
                    ));
                }
                Ok(json!({"api_keys": keys}))
            }
            SecurityRoute::InvalidateApiKeys => {
                let body = self.read_body(request).await?;
                let req = wire::parse_invalidate_api_keys(&body)?;
                let (mut done, mut before) = (Vec::new(), Vec::new());
                for key in self.visible_keys(subject)? {
                    let picked = (req.ids.is_empty() || req.ids.contains(&key.id))
                        && req.name.as_ref().is_none_or(|n| name_matches(n, &key.name))
                        && (!req.owner || key.owner == subject.username);
                    if !picked {
                        continue;
                    }
                    let id = key.id.clone();
                    if self.keys.invalidate(key).map_err(internal)? {
                        tracing::info!(%id, "API key invalidated");
                        done.push(id);
                    } else {
                        before.push(id);
                    }
                }
                Ok(wire::invalidate_response(&done, &before))
            }
        }
    }

    /// A superuser sees every key; anyone else their own.
    fn visible_keys(&self, subject: &Subject) -> Result<Vec<api_keys::ApiKeyRecord>, EsError> {
        Ok(self
            .keys
            .list()
            .map_err(internal)?
            .into_iter()
            .filter(|k| subject.is_superuser() || k.owner == subject.username)
            .collect())
    }

    async fn read_body(&self, request: Request) -> Result<bytes::Bytes, EsError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(request.into_body(), self.max_body_bytes)
            .await
            .map_err(|_| EsError::body_too_large(self.max_body_bytes + 1, self.max_body_bytes))?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            es_wire::check_content_type(content_type.as_deref())?;
        }
        Ok(body)
    }
}

/// Elasticsearch's key-name filters take `*` wildcards.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, _)) if pattern.ends_with('*') && pattern.matches('*').count() == 1 => {
            name.starts_with(prefix)
        }
        _ => pattern == "*",
    }
}

fn internal(e: anyhow::Error) -> EsError {
    tracing::error!(error = %format!("{e:#}"), "security store error");
    EsError::internal("the security store failed")
}

fn with_product(mut response: Response) -> Response {
    response.headers_mut().insert(
        es_wire::PRODUCT_HEADER.0,
        HeaderValue::from_static(es_wire::PRODUCT_HEADER.1),
    );
    response
}

/// A 401 with Elasticsearch's `WWW-Authenticate` challenges.
fn unauthenticated(err: &EsError) -> Response {
    let body = serde_json::to_vec(&wire::unauthenticated_body(err)).expect("JSON serialises");
    let mut builder = Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, "application/json")
        .header(es_wire::PRODUCT_HEADER.0, es_wire::PRODUCT_HEADER.1);
    for challenge in wire::WWW_AUTHENTICATE {
        builder = builder.header(header::WWW_AUTHENTICATE, challenge);
    }
    builder.body(Body::from(body)).expect("valid response")
}

/// The middleware: `GET /` and `HEAD /` pass; everything else needs
/// credentials, then the privilege for its action.
pub async fn middleware(
    State(security): State<Arc<Security>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let pretty = es_wire::wants_pretty(query.as_deref());
    let uri = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let is_root = path.split('/').all(str::is_empty);
    if is_root && (method == Method::GET || method == Method::HEAD) {
        return next.run(request).await;
    }
    let subject = match security
        .authenticate(request.headers().get(header::AUTHORIZATION), &path)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%method, path = %uri, status = 401, "authentication failed");
            return unauthenticated(&e);
        }
    };
    let deny = |action: &str| {
        let e = wire::unauthorized(action, &subject.principal(), &subject.roles);
        tracing::info!(%method, path = %uri, status = 403, user = %subject.username, %action, "access denied");
        with_product(error_response(&e, pretty))
    };
    if let Some(route) = wire::security_route(method.as_str(), &path, query.as_deref()) {
        let route = match route {
            Ok(r) => r,
            Err(e) => return with_product(error_response(&e, pretty)),
        };
        if !subject.permission.allows(route.action()) {
            return deny(route.action());
        }
        let response = match security.serve(route, &subject, request).await {
            Ok(body) => {
                let mut r = Response::new(Body::from(
                    if pretty {
                        serde_json::to_vec_pretty(&body)
                    } else {
                        serde_json::to_vec(&body)
                    }
                    .expect("JSON serialises"),
                ));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => error_response(&e, pretty),
        };
        tracing::info!(%method, %path, status = response.status().as_u16(), user = %subject.username, "request");
        return with_product(response);
    }
    // Unknown routes fall through to the API's own error answer.
    if let Ok(route) = es_wire::route(method.as_str(), &path, query.as_deref()) {
        let action = wire::route_action(&route);
        if !subject.permission.allows(action) {
            return deny(action);
        }
    }
    next.run(request).await
}

/// The API router with security in front.
pub fn protect(router: axum::Router, security: Arc<Security>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(security, middleware))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_is_the_intersection_of_its_groups() {
        let admin_key = Permission(vec![
            vec!["manage_inference".into(), "monitor_inference".into()],
            vec!["monitor_inference".into()],
        ]);
        assert!(admin_key.allows(wire::action::INFERENCE_POST));
        assert!(!admin_key.allows(wire::action::INFERENCE_PUT));
        // A key asking for more than its creator has gets no more.
        let user_key = Permission(vec![
            vec!["monitor_inference".into()],
            vec!["manage_inference".into()],
        ]);
        assert!(!user_key.allows(wire::action::INFERENCE_PUT));
        assert!(user_key.allows(wire::action::INFERENCE_POST));
        assert!(user_key.allows(wire::action::AUTHENTICATE));
    }

    #[test]
    fn key_name_wildcards() {
        assert!(name_matches("*", "x"));
        assert!(name_matches("ab*", "abc"));
        assert!(!name_matches("ab*", "xab"));
        assert!(name_matches("abc", "abc"));
    }
}
