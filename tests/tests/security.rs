//! Security end to end: users made with `inference-host users add`, basic
//! auth, roles and privileges, API keys, TLS, and no secret in any log line.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use e2e_tests::{error_type, host_bin, json, Client, Server, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const ADMIN: (&str, &str) = ("admin", "admin-Pa55-3f9c1");
const ALICE: (&str, &str) = ("alice", "alice-Pa55-77b2e");
const BOB: (&str, &str) = ("bob", "bob-Pa55-a0d41");
const KEYMAN: (&str, &str) = ("keyman", "keyman-Pa55-5e6f0");

const E5: &str = ".multilingual-e5-small-elasticsearch";

/// Adds a user through the CLI, the password on standard input.
fn add_user(data_dir: &Path, name: &str, password: &str, roles: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(host_bin());
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["users", "add", name]);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let mut child = cmd.stdin(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    writeln!(child.stdin.take().unwrap(), "{password}")?;
    anyhow::ensure!(child.wait()?.success(), "users add {name} failed");
    Ok(())
}

fn setup_users(dir: &Path) -> anyhow::Result<()> {
    // A custom role first: it may manage API keys and run inference, no more.
    std::fs::write(
        dir.join("users.toml"),
        "[roles.key_manager]\ncluster = [\"manage_api_key\", \"monitor_inference\"]\n",
    )?;
    add_user(dir, ADMIN.0, ADMIN.1, &["superuser"])?;
    add_user(dir, ALICE.0, ALICE.1, &["inference_admin"])?;
    add_user(dir, BOB.0, BOB.1, &["inference_user"])?;
    add_user(dir, KEYMAN.0, KEYMAN.1, &["key_manager"])?;
    Ok(())
}

fn secure_server(extra: &[&str]) -> Server {
    let mut args = vec!["--security", "--log-level", "debug"];
    args.extend_from_slice(extra);
    Server::start_with(&args, setup_users).expect("server starts")
}

/// A request with credentials: `("basic", (user, password))` or an API key.
enum Auth<'a> {
    None,
    Basic((&'a str, &'a str)),
    Key(&'a str),
}

fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    auth: &Auth,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = server
        .client
        .request(method, format!("{}{path}", server.url));
    req = match auth {
        Auth::None => req,
        Auth::Basic((u, p)) => req.basic_auth(u, Some(p)),
        Auth::Key(k) => req.header("authorization", format!("ApiKey {k}")),
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    let response = req.send().expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, headers, value)
}

fn minilm() -> Value {
    json!({"service": "elasticsearch", "service_settings": {
        "model_id": "all-minilm-l6-v2",
        "adaptive_allocations": {"enabled": true, "min_number_of_allocations": 0, "max_number_of_allocations": 1}}})
}

/// The browser demo (`--demo-dir`) and its model files are behind the same
/// setting as the API.
#[test]
fn the_demo_page_needs_credentials_too() {
    let demo = e2e_tests::demo_dir();
    let server = secure_server(&["--demo-dir", demo.to_str().expect("a UTF-8 path")]);
    let page = |auth: Option<(&str, &str)>| {
        let mut req = server.client.get(format!("{}/_demo/", server.url));
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        req.send().expect("request")
    };
    let refused = page(None);
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let served = page(Some(BOB));
    assert_eq!(served.status().as_u16(), 200);
    assert!(served.text().unwrap().contains("<html"));
}

#[test]
fn basic_auth_roles_and_privileges() {
    let server = secure_server(&[]);

    // GET / stays open, as the product check of clients needs it.
    let (status, _, _) = call(&server, "GET", "/", None, &Auth::None);
    assert_eq!(status, 200);

    // No credentials: 401 with Elasticsearch's challenges.
    let (status, headers, body) = call(&server, "GET", "/_inference", None, &Auth::None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_type(&body), "security_exception");
    assert_eq!(
        body["error"]["reason"],
        "missing authentication credentials for REST request [/_inference]"
    );
    let challenges: Vec<&str> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        challenges,
        ["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"]
    );
    assert_eq!(
        body["error"]["header"]["WWW-Authenticate"],
        json!(challenges)
    );
    assert_eq!(headers["x-elastic-product"], "Elasticsearch");

    // A wrong password, an unknown user, a malformed header: 401.
    for auth in [
        Auth::Basic((BOB.0, "wrong")),
        Auth::Basic(("nobody", BOB.1)),
        Auth::Key("bm90LWEta2V5"),
    ] {
        let (status, _, body) = call(&server, "GET", "/_inference", None, &auth);
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) = call(
        &server,
        "GET",
        "/_inference",
        None,
        &Auth::Basic((BOB.0, "wrong")),
    );
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["reason"],
        "unable to authenticate user [bob] for REST request [/_inference]"
    );

    // inference_user: read and infer, nothing else.
    let bob = Auth::Basic(BOB);
    let (status, _, body) = call(&server, "GET", "/_inference", None, &bob);
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &server,
        "POST",
        &format!("/_inference/text_embedding/{E5}"),
        Some(&json!({"input": ["hello"]})),
        &bob,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["text_embedding"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        384
    );
    let (status, _, body) = call(
        &server,
        "PUT",
        "/_inference/text_embedding/bobs",
        Some(&minilm()),
        &bob,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_type(&body), "security_exception");
    assert_eq!(
        body["error"]["reason"],
        "action [cluster:admin/xpack/inference/put] is unauthorized for user [bob] with effective roles [inference_user], this action is granted by the cluster privileges [manage_inference,manage,all]"
    );
    let (status, _, _) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(&json!({"name": "k"})),
        &bob,
    );
    assert_eq!(status, 403);

    // inference_admin: the whole endpoint lifecycle.
    let alice = Auth::Basic(ALICE);
    let (status, _, body) = call(
        &server,
        "PUT",
        "/_inference/text_embedding/alices",
        Some(&minilm()),
        &alice,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &server,
        "PUT",
        "/_inference/text_embedding/alices/_update",
        Some(&json!({"service_settings": {"num_allocations": 1}})),
        &alice,
    );
    assert!(status == 200 || status == 400, "{status} {body}");
    let (status, _, body) = call(
        &server,
        "DELETE",
        "/_inference/text_embedding/alices",
        None,
        &bob,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("cluster:admin/xpack/inference/delete"));
    let (status, _, body) = call(
        &server,
        "DELETE",
        "/_inference/text_embedding/alices",
        None,
        &alice,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(&json!({"name": "k"})),
        &alice,
    );
    assert_eq!(status, 403);
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("[manage_api_key,manage_security,all]"));

    // Who am I.
    let (status, _, me) = call(&server, "GET", "/_security/_authenticate", None, &bob);
    assert_eq!(status, 200);
    assert_eq!(me["username"], "bob");
    assert_eq!(me["roles"], json!(["inference_user"]));
    assert_eq!(me["authentication_type"], "realm");
    assert_eq!(me["authentication_realm"]["type"], "file");

    // Route errors still come after authentication, as envelopes.
    let (status, _, body) = call(&server, "GET", "/_nothing", None, &bob);
    assert_eq!(
        (status, error_type(&body).as_str()),
        (400, "illegal_argument_exception")
    );

    assert_no_secrets(&server, &[ADMIN.1, ALICE.1, BOB.1, KEYMAN.1]);
}

/// Every secret used, and its base64 forms, absent from the server's log.
fn assert_no_secrets(server: &Server, secrets: &[&str]) {
    let log = server.log_text();
    assert!(log.contains("security on"), "the log is captured: {log}");
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log");
        for user in [ADMIN.0, ALICE.0, BOB.0, KEYMAN.0] {
            let basic = STANDARD.encode(format!("{user}:{secret}"));
            assert!(!log.contains(&basic), "a basic credential reached the log");
        }
    }
}

#[test]
fn api_keys_the_elasticsearch_way() {
    let mut server = secure_server(&[]);
    let admin = Auth::Basic(ADMIN);

    let (status, _, key) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(&json!({"name": "reader", "expiration": "1d",
                     "role_descriptors": {"infer-only": {"cluster": ["monitor_inference"]}}})),
        &admin,
    );
    assert_eq!(status, 200, "{key}");
    let (id, secret, encoded) = (
        key["id"].as_str().unwrap().to_string(),
        key["api_key"].as_str().unwrap().to_string(),
        key["encoded"].as_str().unwrap().to_string(),
    );
    assert_eq!(key["name"], "reader");
    assert!(secret.len() >= 22);
    assert_eq!(
        STANDARD.decode(&encoded).unwrap(),
        format!("{id}:{secret}").as_bytes()
    );
    let expiration = key["expiration"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(expiration > now + 86_000_000 && expiration < now + 87_000_000);

    // The key runs inference but cannot manage endpoints.
    let reader = Auth::Key(&encoded);
    let (status, _, body) = call(
        &server,
        "POST",
        "/_inference/sparse_embedding/.elser-2-elasticsearch",
        Some(&json!({"input": "capital of france"})),
        &reader,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        &server,
        "PUT",
        "/_inference/text_embedding/x",
        Some(&minilm()),
        &reader,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .starts_with(&format!("action [cluster:admin/xpack/inference/put] is unauthorized for API key id [{id}] of user [admin]")));
    let (status, _, me) = call(&server, "GET", "/_security/_authenticate", None, &reader);
    assert_eq!(status, 200);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["authentication_type"], "api_key");
    assert_eq!(me["api_key"], json!({"id": id, "name": "reader"}));

    // A key never holds more than its creator: keyman may not manage
    // inference, so neither may a key it asks manage_inference for.
    let (status, _, wide) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(
            &json!({"name": "wide", "role_descriptors": {"r": {"cluster": ["manage_inference", "all"]}}}),
        ),
        &Auth::Basic(KEYMAN),
    );
    assert_eq!(status, 200, "{wide}");
    let wide_key = wide["encoded"].as_str().unwrap().to_string();
    let (status, _, body) = call(
        &server,
        "PUT",
        "/_inference/text_embedding/y",
        Some(&minilm()),
        &Auth::Key(&wide_key),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = call(
        &server,
        "POST",
        &format!("/_inference/text_embedding/{E5}"),
        Some(&json!({"input": "ok"})),
        &Auth::Key(&wide_key),
    );
    assert_eq!(status, 200);

    // Listing: the caller's own keys, never a secret or a hash.
    let (status, _, listed) = call(
        &server,
        "GET",
        "/_security/api_key",
        None,
        &Auth::Basic(KEYMAN),
    );
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wide"]);
    let (status, _, listed) = call(
        &server,
        "GET",
        &format!("/_security/api_key?id={id}"),
        None,
        &admin,
    );
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&encoded) && !text.contains("hash"),
        "{text}"
    );
    assert_eq!(listed["api_keys"][0]["invalidated"], false);
    assert_eq!(
        listed["api_keys"][0]["role_descriptors"]["infer-only"]["cluster"],
        json!(["monitor_inference"])
    );

    // Keys live in the store: they survive a restart.
    server.restart().unwrap();
    let (status, _, _) = call(&server, "GET", "/_inference", None, &Auth::Key(&encoded));
    assert_eq!(status, 200);

    // Invalidated: refused from then on.
    let (status, _, body) = call(
        &server,
        "DELETE",
        "/_security/api_key",
        Some(&json!({"ids": [id]})),
        &admin,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["invalidated_api_keys"], json!([id]));
    let (status, _, body) = call(&server, "GET", "/_inference", None, &Auth::Key(&encoded));
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_type(&body), "security_exception");
    let (_, _, body) = call(
        &server,
        "DELETE",
        "/_security/api_key",
        Some(&json!({"ids": [id]})),
        &admin,
    );
    assert_eq!(body["previously_invalidated_api_keys"], json!([id]));

    // Expired: refused.
    let (status, _, short) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(&json!({"name": "short", "expiration": "1ms"})),
        &admin,
    );
    assert_eq!(status, 200);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let short_key = short["encoded"].as_str().unwrap();
    let (status, _, _) = call(&server, "GET", "/_inference", None, &Auth::Key(short_key));
    assert_eq!(status, 401);

    // A wrong secret for a real id: refused.
    let forged = STANDARD.encode(format!("{id}:AAAAAAAAAAAAAAAAAAAAAA"));
    let (status, _, _) = call(&server, "GET", "/_inference", None, &Auth::Key(&forged));
    assert_eq!(status, 401);

    // Bad create bodies are envelopes.
    let (status, _, body) = call(
        &server,
        "POST",
        "/_security/api_key",
        Some(&json!({"role_descriptors": {}})),
        &admin,
    );
    assert_eq!(
        (status, error_type(&body).as_str()),
        (400, "action_request_validation_exception")
    );

    let log = server.log_text();
    for s in [
        secret.as_str(),
        encoded.as_str(),
        wide_key.as_str(),
        short_key,
    ] {
        assert!(!log.contains(s), "an API key reached the log");
    }
    assert_no_secrets(&server, &[ADMIN.1, KEYMAN.1]);
}

/// A self-signed certificate for 127.0.0.1, written to `dir`.
fn self_signed(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem)?;
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem())?;
    Ok(pem.into_bytes())
}

#[test]
fn tls_with_security() {
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed(dir.path()).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let server = Server::start_with(
        &[
            "--security",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        setup_users,
    )
    .expect("TLS server starts");
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let response = client.get(format!("{}/", server.url)).send().unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .post(format!("{}/_inference/text_embedding/{E5}", server.url))
        .basic_auth(BOB.0, Some(BOB.1))
        .json(&json!({"input": "over TLS"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("{}/_inference", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    // Plain HTTP to the TLS port gets no answer from the API.
    let plain = server.url.replace("https://", "http://");
    let answered = e2e_tests::client()
        .get(format!("{plain}/_inference"))
        .send()
        .map(|r| r.status().as_u16());
    assert!(!matches!(answered, Ok(200) | Ok(401)), "{answered:?}");
}

#[test]
fn security_refuses_to_start_without_a_valid_users_file() {
    // No users file at all.
    let started = Server::start_with(&["--security"], |_| Ok(()));
    assert!(
        started.is_err(),
        "security on with no users file must not start"
    );
    // A plain password where a hash belongs.
    let started = Server::start_with(&["--security"], |dir| {
        std::fs::write(
            dir.join("users.toml"),
            "[users.eve]\npassword_hash = \"hunter2\"\nroles = [\"superuser\"]\n",
        )?;
        Ok(())
    });
    assert!(started.is_err());
}
