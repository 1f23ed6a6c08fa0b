//! Elasticsearch security on the wire: cluster privileges and the actions
//! they grant, built-in roles, the `security_exception` answers (401 with
//! `WWW-Authenticate`, 403 naming the action and the privileges), the
//! `/_security` routes and the API key request and response bodies.

use crate::error::EsError;
use crate::types::{parse_duration, TaskType};
use crate::Route;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The `WWW-Authenticate` values Elasticsearch sends with a 401, in its order.
pub const WWW_AUTHENTICATE: [&str; 2] = ["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"];

/// The cluster privileges this server knows, from the widest.
pub const CLUSTER_PRIVILEGES: [&str; 7] = [
    "all",
    "manage",
    "monitor",
    "manage_inference",
    "monitor_inference",
    "manage_security",
    "manage_api_key",
];

/// Action names, as Elasticsearch's transport actions are called.
pub mod action {
    pub const INFERENCE_POST: &str = "cluster:monitor/xpack/inference/post";
    pub const INFERENCE_UNIFIED: &str = "cluster:monitor/xpack/inference/unified";
    pub const INFERENCE_GET: &str = "cluster:monitor/xpack/inference/get";
    pub const INFERENCE_SERVICES_GET: &str = "cluster:monitor/xpack/inference/services/get";
    pub const INFERENCE_PUT: &str = "cluster:admin/xpack/inference/put";
    pub const INFERENCE_UPDATE: &str = "cluster:admin/xpack/inference/update";
    pub const INFERENCE_DELETE: &str = "cluster:admin/xpack/inference/delete";
    pub const MAIN: &str = "cluster:monitor/main";
    pub const API_KEY_CREATE: &str = "cluster:admin/xpack/security/api_key/create";
    pub const API_KEY_GET: &str = "cluster:admin/xpack/security/api_key/get";
    pub const API_KEY_INVALIDATE: &str = "cluster:admin/xpack/security/api_key/invalidate";
    pub const AUTHENTICATE: &str = "cluster:admin/xpack/security/user/authenticate";
}

/// The privileges that grant `action`, narrowest first, as Elasticsearch
/// lists them in a 403. Empty for actions every authenticated user may run.
pub fn granting_privileges(action: &str) -> &'static [&'static str] {
    if action == action::AUTHENTICATE {
        &[]
    } else if action.starts_with("cluster:monitor/xpack/inference") {
        &[
            "monitor_inference",
            "manage_inference",
            "monitor",
            "manage",
            "all",
        ]
    } else if action.starts_with("cluster:admin/xpack/inference") {
        &["manage_inference", "manage", "all"]
    } else if action.starts_with("cluster:admin/xpack/security/api_key") {
        &["manage_api_key", "manage_security", "all"]
    } else if action == action::MAIN {
        &["monitor", "manage", "all"]
    } else {
        &["all"]
    }
}

/// Whether the cluster privilege `privilege` grants `action`.
pub fn grants(privilege: &str, action: &str) -> bool {
    let needed = granting_privileges(action);
    needed.is_empty() || needed.contains(&privilege)
}

/// Whether any of `privileges` grants `action`.
pub fn any_grants<S: AsRef<str>>(privileges: &[S], action: &str) -> bool {
    let needed = granting_privileges(action);
    needed.is_empty() || privileges.iter().any(|p| needed.contains(&p.as_ref()))
}

/// Cluster privileges of the built-in roles; None for an unknown role.
pub fn builtin_role(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "superuser" => Some(&["all"]),
        "inference_admin" => Some(&["manage_inference", "monitor_inference"]),
        "inference_user" => Some(&["monitor_inference"]),
        _ => None,
    }
}

/// The names of the built-in roles.
pub const BUILTIN_ROLES: [&str; 3] = ["superuser", "inference_admin", "inference_user"];

/// The action a request to `route` runs, for authorisation.
pub fn route_action(route: &Route) -> &'static str {
    match route {
        Route::ClusterInfo | Route::Ping => action::MAIN,
        // OPTIONS answers only the allowed methods; any user may ask.
        Route::Options { .. } => action::AUTHENTICATE,
        Route::GetEndpoints { .. } => action::INFERENCE_GET,
        Route::GetServices { .. } => action::INFERENCE_SERVICES_GET,
        Route::Put { .. } => action::INFERENCE_PUT,
        Route::Update { .. } => action::INFERENCE_UPDATE,
        Route::Delete { .. } => action::INFERENCE_DELETE,
        Route::Infer { .. } => action::INFERENCE_POST,
        Route::Stream {
            task_type: Some(TaskType::ChatCompletion),
            ..
        } => action::INFERENCE_UNIFIED,
        Route::Stream { .. } => action::INFERENCE_POST,
    }
}

/// 401 for a request without credentials, worded as Elasticsearch words it.
/// `uri` is the path as requested.
pub fn missing_credentials(uri: &str) -> EsError {
    EsError::unauthenticated(format!(
        "missing authentication credentials for REST request [{uri}]"
    ))
}

/// 401 for a user name or password that does not match. The password never
/// appears; the user name does, as in Elasticsearch.
pub fn bad_user_credentials(username: &str, uri: &str) -> EsError {
    EsError::unauthenticated(format!(
        "unable to authenticate user [{username}] for REST request [{uri}]"
    ))
}

/// 401 for an API key that is unknown, wrong, expired or invalidated. The key
/// never appears.
pub fn bad_api_key(uri: &str) -> EsError {
    EsError::unauthenticated(format!(
        "unable to authenticate with provided credentials and anonymous access is not allowed for this request [{uri}]"
    ))
}

/// 403 naming the action, the user, their roles and what would grant it.
pub fn unauthorized(action: &str, principal: &str, roles: &[String]) -> EsError {
    let grants = granting_privileges(action);
    let mut reason = format!(
        "action [{action}] is unauthorized for {principal} with effective roles [{}]",
        roles.join(",")
    );
    if !grants.is_empty() {
        reason.push_str(&format!(
            ", this action is granted by the cluster privileges [{}]",
            grants.join(",")
        ));
    }
    EsError::forbidden(reason)
}

/// The body of a 401: the envelope with the `WWW-Authenticate` values in
/// `header`, where Elasticsearch puts them.
pub fn unauthenticated_body(err: &EsError) -> Value {
    let mut body = err.to_json();
    let header = json!({"WWW-Authenticate": WWW_AUTHENTICATE});
    body["error"]["header"] = header.clone();
    body["error"]["root_cause"][0]["header"] = header;
    body
}

/// The `/_security` APIs this server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityRoute {
    /// `POST` or `PUT /_security/api_key`.
    CreateApiKey,
    /// `GET /_security/api_key` with `id`, `name`, `owner` filters.
    GetApiKeys {
        id: Option<String>,
        name: Option<String>,
    },
    /// `DELETE /_security/api_key` (body: `ids`, `id`, `name`, `owner`).
    InvalidateApiKeys,
    /// `GET /_security/_authenticate`.
    Authenticate,
}

impl SecurityRoute {
    pub fn action(&self) -> &'static str {
        match self {
            Self::CreateApiKey => action::API_KEY_CREATE,
            Self::GetApiKeys { .. } => action::API_KEY_GET,
            Self::InvalidateApiKeys => action::API_KEY_INVALIDATE,
            Self::Authenticate => action::AUTHENTICATE,
        }
    }
}

/// Routes a `/_security/...` request; None for any other path.
pub fn security_route(
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<Result<SecurityRoute, EsError>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() != Some(&"_security") {
        return None;
    }
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let allowed: &[&str] = match segs.as_slice() {
        ["_security", "api_key"] => &["GET", "POST", "PUT", "DELETE"],
        ["_security", "_authenticate"] => &["GET"],
        _ => return Some(Err(EsError::no_handler(method, &uri))),
    };
    if !allowed.contains(&method) {
        return Some(Err(EsError::method_not_allowed(method, &uri, allowed)));
    }
    let mut id = None;
    let mut name = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = match crate::route::percent_decode(value, true) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        match key {
            "id" if method == "GET" => id = Some(value),
            "name" if method == "GET" => name = Some(value),
            "owner" | "with_limited_by" | "active_only" | "refresh" if method != "POST" => {}
            k if crate::UNIVERSAL_PARAMS.contains(&k) => {}
            k => {
                return Some(Err(EsError::illegal_argument(format!(
                    "request [{path}] contains unrecognized parameter: [{k}]"
                ))))
            }
        }
    }
    Some(Ok(match (method, segs.as_slice()) {
        ("GET", [_, "_authenticate"]) => SecurityRoute::Authenticate,
        ("GET", _) => SecurityRoute::GetApiKeys { id, name },
        ("DELETE", _) => SecurityRoute::InvalidateApiKeys,
        _ => SecurityRoute::CreateApiKey,
    }))
}

/// A `POST /_security/api_key` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateApiKey {
    pub name: String,
    /// None: the key never expires.
    pub expiration: Option<Duration>,
    /// Role name → its cluster privileges. Empty: the key has its creator's
    /// privileges.
    pub role_descriptors: Vec<(String, Vec<String>)>,
    pub metadata: Value,
}

/// Parses and validates a create-API-key body: a `name` (1 to 1024
/// characters), an optional `expiration` (`1d`, `30m`...), and
/// `role_descriptors` whose `cluster` privileges must be known ones. Index
/// and application privileges are refused: this server has neither.
pub fn parse_create_api_key(body: &[u8]) -> Result<CreateApiKey, EsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EsError::body_required());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EsError::x_content_parse(format!("failed to parse api key request: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(EsError::x_content_parse(
            "api key request must be an object",
        ));
    };
    let mut name = None;
    let mut expiration = None;
    let mut role_descriptors = Vec::new();
    let mut metadata = json!({});
    for (key, value) in fields {
        match key.as_str() {
            "name" => {
                name = Some(
                    value
                        .as_str()
                        .ok_or_else(|| field_type("name", "a string"))?
                        .to_string(),
                )
            }
            "expiration" => {
                if !value.is_null() {
                    let text = value
                        .as_str()
                        .ok_or_else(|| field_type("expiration", "a time value"))?;
                    // `-1`: never expires.
                    expiration = parse_duration(text, "expiration")?;
                }
            }
            "role_descriptors" => role_descriptors = parse_role_descriptors(&value)?,
            "metadata" => {
                if !value.is_object() {
                    return Err(field_type("metadata", "an object"));
                }
                metadata = value;
            }
            other => {
                return Err(EsError::x_content_parse(format!(
                    "[api_key_request] unknown field [{other}]"
                )))
            }
        }
    }
    let mut problems = Vec::new();
    match &name {
        None => problems.push("api key name is required".to_string()),
        Some(n) if n.is_empty() => problems.push("api key name is required".to_string()),
        Some(n) if n.chars().count() > 1024 => {
            problems.push("api key name may not be more than [1024] characters long".into())
        }
        Some(n) if n.starts_with('_') => {
            problems.push("api key name may not begin with an underscore".into())
        }
        _ => {}
    }
    if expiration.is_some_and(|d| d.is_zero()) {
        problems.push("expiration must be greater than zero".into());
    }
    if !problems.is_empty() {
        return Err(EsError::request_validation(problems));
    }
    Ok(CreateApiKey {
        name: name.unwrap_or_default(),
        expiration,
        role_descriptors,
        metadata,
    })
}

fn field_type(field: &str, expected: &str) -> EsError {
    EsError::x_content_parse(format!(
        "[api_key_request] failed to parse field [{field}]: expected {expected}"
    ))
}

fn parse_role_descriptors(value: &Value) -> Result<Vec<(String, Vec<String>)>, EsError> {
    let Value::Object(roles) = value else {
        return Err(field_type("role_descriptors", "an object"));
    };
    let mut out = Vec::new();
    for (role, descriptor) in roles {
        let Value::Object(fields) = descriptor else {
            return Err(EsError::parse(format!(
                "failed to parse role [{role}]. expected an object but found [{descriptor}] instead"
            )));
        };
        let mut cluster = Vec::new();
        for (key, value) in fields {
            match key.as_str() {
                "cluster" => {
                    let items = value.as_array().ok_or_else(|| {
                        EsError::parse(format!(
                            "failed to parse role [{role}]. [cluster] must be an array of privileges"
                        ))
                    })?;
                    for item in items {
                        let p = item.as_str().ok_or_else(|| {
                            EsError::parse(format!(
                                "failed to parse role [{role}]. [cluster] must be an array of privileges"
                            ))
                        })?;
                        if !CLUSTER_PRIVILEGES.contains(&p) {
                            return Err(EsError::illegal_argument(format!(
                                "unknown cluster privilege [{p}]. a privilege must be one of [{}]",
                                CLUSTER_PRIVILEGES.join(",")
                            )));
                        }
                        cluster.push(p.to_string());
                    }
                }
                // Elasticsearch accepts these; empty ones mean nothing here.
                "indices" | "applications" | "remote_indices" => {
                    if value.as_array().is_some_and(|a| !a.is_empty()) {
                        return Err(EsError::illegal_argument(format!(
                            "role [{role}]: [{key}] privileges are not supported by this server, only [cluster] privileges"
                        )));
                    }
                }
                "metadata" | "run_as" | "transient_metadata" | "description" => {}
                other => {
                    return Err(EsError::parse(format!(
                        "failed to parse role [{role}]. unexpected field [{other}]"
                    )))
                }
            }
        }
        out.push((role.clone(), cluster));
    }
    Ok(out)
}

/// The create-API-key answer: `{id, name, api_key, encoded, expiration?}`.
/// `encoded` is base64 of `id:api_key`, what `Authorization: ApiKey` takes.
pub fn create_api_key_response(
    id: &str,
    name: &str,
    api_key: &str,
    encoded: &str,
    expiration_ms: Option<u64>,
) -> Value {
    let mut body = json!({"id": id, "name": name, "api_key": api_key, "encoded": encoded});
    if let Some(ms) = expiration_ms {
        body["expiration"] = json!(ms);
    }
    body
}

/// Role descriptors as Elasticsearch prints them in GET answers.
pub fn role_descriptors_json(roles: &[(String, Vec<String>)]) -> Value {
    let mut out = Map::new();
    for (name, cluster) in roles {
        out.insert(
            name.clone(),
            json!({"cluster": cluster, "indices": [], "applications": [], "run_as": [],
                   "metadata": {}, "transient_metadata": {"enabled": true}}),
        );
    }
    Value::Object(out)
}

/// A `DELETE /_security/api_key` body: which keys to invalidate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvalidateApiKeys {
    pub ids: Vec<String>,
    pub name: Option<String>,
    /// Only the caller's own keys (always the case for callers that are not
    /// superusers).
    pub owner: bool,
}

pub fn parse_invalidate_api_keys(body: &[u8]) -> Result<InvalidateApiKeys, EsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EsError::body_required());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        EsError::x_content_parse(format!("failed to parse invalidate api key request: {e}"))
    })?;
    let Value::Object(fields) = value else {
        return Err(EsError::x_content_parse(
            "invalidate api key request must be an object",
        ));
    };
    let mut out = InvalidateApiKeys::default();
    let bad = |f: &str| {
        EsError::x_content_parse(format!(
            "[invalidate_api_key_request] failed to parse field [{f}]"
        ))
    };
    for (key, value) in fields {
        match key.as_str() {
            "id" => out
                .ids
                .push(value.as_str().ok_or_else(|| bad("id"))?.into()),
            "ids" => {
                for v in value.as_array().ok_or_else(|| bad("ids"))? {
                    out.ids.push(v.as_str().ok_or_else(|| bad("ids"))?.into());
                }
            }
            "name" => out.name = Some(value.as_str().ok_or_else(|| bad("name"))?.into()),
            "owner" => out.owner = value.as_bool().ok_or_else(|| bad("owner"))?,
            "username" | "realm_name" => {}
            other => {
                return Err(EsError::x_content_parse(format!(
                    "[invalidate_api_key_request] unknown field [{other}]"
                )))
            }
        }
    }
    if out.ids.is_empty() && out.name.is_none() && !out.owner {
        return Err(EsError::request_validation(vec![
            "One of [api key id(s), api key name, username, realm name] must be specified if [owner] flag is false".into(),
        ]));
    }
    Ok(out)
}

/// The invalidate answer.
pub fn invalidate_response(invalidated: &[String], previously: &[String]) -> Value {
    json!({
        "invalidated_api_keys": invalidated,
        "previously_invalidated_api_keys": previously,
        "error_count": 0,
    })
}

/// Splits an `Authorization` header into a scheme and its credentials
/// (`("basic", "dXNlcjpwYXNz")`); the scheme is lower-cased.
pub fn parse_authorization(header: &str) -> Option<(String, &str)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    Some((scheme.to_ascii_lowercase(), rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_grant_the_inference_actions_as_elasticsearch() {
        assert!(grants("monitor_inference", action::INFERENCE_POST));
        assert!(grants("monitor_inference", action::INFERENCE_GET));
        assert!(!grants("monitor_inference", action::INFERENCE_PUT));
        assert!(grants("manage_inference", action::INFERENCE_PUT));
        assert!(grants("manage_inference", action::INFERENCE_POST));
        assert!(grants("all", action::API_KEY_CREATE));
        assert!(!grants("manage_inference", action::API_KEY_CREATE));
        assert!(grants("manage_security", action::API_KEY_CREATE));
        assert!(grants("monitor_inference", action::AUTHENTICATE));
        assert!(any_grants(
            builtin_role("inference_admin").unwrap(),
            action::INFERENCE_DELETE
        ));
        assert!(!any_grants(
            builtin_role("inference_user").unwrap(),
            action::INFERENCE_DELETE
        ));
        assert!(builtin_role("nobody").is_none());
    }

    #[test]
    fn routes_map_to_actions() {
        let r = crate::route("POST", "/_inference/text_embedding/x", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_POST);
        let r = crate::route("PUT", "/_inference/text_embedding/x", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_PUT);
        let r = crate::route("PUT", "/_inference/text_embedding/x/_update", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_UPDATE);
        let r = crate::route("DELETE", "/_inference/x", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_DELETE);
        let r = crate::route("GET", "/_inference", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_GET);
        let r = crate::route("POST", "/_inference/chat_completion/x/_stream", None).unwrap();
        assert_eq!(route_action(&r), action::INFERENCE_UNIFIED);
    }

    #[test]
    fn forbidden_reason_names_action_user_roles_and_privileges() {
        let e = unauthorized(
            action::INFERENCE_PUT,
            "user [bob]",
            &["inference_user".into()],
        );
        assert_eq!((e.status, e.error_type), (403, "security_exception"));
        assert_eq!(
            e.reason,
            "action [cluster:admin/xpack/inference/put] is unauthorized for user [bob] with effective roles [inference_user], this action is granted by the cluster privileges [manage_inference,manage,all]"
        );
    }

    #[test]
    fn unauthenticated_body_carries_the_challenge() {
        let body = unauthenticated_body(&missing_credentials("/_inference"));
        assert_eq!(body["status"], 401);
        assert_eq!(body["error"]["type"], "security_exception");
        assert_eq!(
            body["error"]["root_cause"][0]["reason"],
            "missing authentication credentials for REST request [/_inference]"
        );
        assert_eq!(
            body["error"]["header"]["WWW-Authenticate"],
            json!(["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"])
        );
        assert_eq!(
            body["error"]["root_cause"][0]["header"],
            body["error"]["header"]
        );
    }

    #[test]
    fn security_routes() {
        assert_eq!(security_route("GET", "/_inference", None), None);
        assert_eq!(
            security_route("POST", "/_security/api_key", None),
            Some(Ok(SecurityRoute::CreateApiKey))
        );
        assert_eq!(
            security_route("GET", "/_security/api_key", Some("id=a%20b&owner=true")),
            Some(Ok(SecurityRoute::GetApiKeys {
                id: Some("a b".into()),
                name: None
            }))
        );
        assert_eq!(
            security_route("GET", "/_security/_authenticate", None),
            Some(Ok(SecurityRoute::Authenticate))
        );
        let e = security_route("PATCH", "/_security/api_key", None)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, 405);
        let e = security_route("GET", "/_security/user", None)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = security_route("GET", "/_security/api_key", Some("bogus=1"))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn create_api_key_bodies() {
        let req = parse_create_api_key(
            br#"{"name": "k", "expiration": "1d",
                 "role_descriptors": {"r": {"cluster": ["monitor_inference"], "indices": []}}}"#,
        )
        .unwrap();
        assert_eq!(req.name, "k");
        assert_eq!(req.expiration, Some(Duration::from_secs(86_400)));
        assert_eq!(
            req.role_descriptors,
            vec![("r".to_string(), vec!["monitor_inference".to_string()])]
        );
        let e = parse_create_api_key(br#"{"expiration": "1d"}"#).unwrap_err();
        assert_eq!(e.error_type, "action_request_validation_exception");
        let e = parse_create_api_key(
            br#"{"name": "k", "role_descriptors": {"r": {"cluster": ["root"]}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_create_api_key(br#"{"name": "k", "bogus": 1}"#).unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
        assert_eq!(
            parse_create_api_key(b"").unwrap_err().error_type,
            "parse_exception"
        );
        assert_eq!(parse_create_api_key(b"[").unwrap_err().status, 400);
    }

    #[test]
    fn invalidate_bodies() {
        let req = parse_invalidate_api_keys(br#"{"ids": ["a", "b"]}"#).unwrap();
        assert_eq!(req.ids, ["a", "b"]);
        let req = parse_invalidate_api_keys(br#"{"name": "n", "owner": true}"#).unwrap();
        assert_eq!((req.name.as_deref(), req.owner), (Some("n"), true));
        assert_eq!(parse_invalidate_api_keys(b"{}").unwrap_err().status, 400);
    }

    #[test]
    fn authorization_header() {
        assert_eq!(
            parse_authorization("Basic dXNlcjpwYXNz"),
            Some(("basic".into(), "dXNlcjpwYXNz"))
        );
        assert_eq!(
            parse_authorization("ApiKey abc"),
            Some(("apikey".into(), "abc"))
        );
        assert_eq!(parse_authorization("garbage"), None);
    }

    #[test]
    fn create_response_shape() {
        let body = create_api_key_response("i", "n", "s", "aTpz", Some(5));
        assert_eq!(
            body,
            json!({"id": "i", "name": "n", "api_key": "s", "encoded": "aTpz", "expiration": 5})
        );
        let body = create_api_key_response("i", "n", "s", "aTpz", None);
        assert!(body.get("expiration").is_none());
    }
}
