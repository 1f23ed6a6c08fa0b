//! The browser demo in a real browser: Debian's chromium, headless, driven
//! through chromedriver, loads `/_demo/` from a spawned host, embeds sentences
//! with the ML core compiled to WebAssembly, and must give the server's
//! numbers. Needs `cargo xtask browser` (the bundle) and
//! `apt-get install chromium chromium-driver`; `.ci/run` sees to both.
//!
//! `cargo xtask bench-browser` runs the ignored benchmark at the end.

use e2e_tests::{demo_dir, error_type, model_cache, target_dir, Server, Value};
use fantoccini::{Client, ClientBuilder, Locator};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The preconfigured endpoint the page is compared with, and its model: the
/// page's default.
const ENDPOINT: &str = ".multilingual-e5-small-elasticsearch";
const MODEL: &str = "multilingual-e5-small";
/// The models the page offers.
const OFFERED: [&str; 2] = ["multilingual-e5-small", "all-minilm-l6-v2"];
/// The largest difference between browser and server embeddings allowed.
const TOLERANCE: f64 = 1e-5;

const SENTENCES: [&str; 5] = [
    "The cat sits on the mat.",
    "A kitten is sleeping on the rug.",
    "Stocks fell sharply after the central bank raised rates.",
    "The orchestra tuned their instruments before the concert.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
];

fn program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: `apt-get install -y chromium chromium-driver` (or set {var})",
        path.display()
    );
    path
}

/// A chromedriver on a free loopback port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium session with a fresh profile, no network beyond what
/// the page asks of the host.
async fn browser(driver: &Chromedriver, profile: &Path) -> Client {
    let chromium = program("CHROMIUM", "/usr/bin/chromium");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1200",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver");
    client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(Duration::from_secs(600)),
            Some(Duration::from_secs(120)),
            None,
        ))
        .await
        .expect("timeouts");
    client
}

/// Opens the demo and waits until the page has loaded the model; returns the
/// kernel report of the WebAssembly build.
async fn open_demo(client: &Client, server: &Server) -> Value {
    client
        .goto(&format!("{}/_demo/", server.url))
        .await
        .expect("loading the page");
    let loaded = client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const wait = () => {
                if (!(window.demo && window.demo.ready)) return setTimeout(wait, 50);
                window.demo.ready
                    .then(() => window.demo.kernels())
                    .then((k) => done({ kernels: k }), (e) => done({ error: String(e && e.message || e) }));
            };
            wait();"#,
            vec![],
        )
        .await
        .expect("waiting for the page to load the model");
    assert!(loaded["error"].is_null(), "the page failed: {loaded}");
    loaded["kernels"].clone()
}

fn server_with_demo() -> Server {
    let dir = demo_dir();
    assert!(
        dir.join("pkg/inference_browser_bg.wasm").exists(),
        "no browser bundle in {}: run `cargo xtask browser`",
        dir.display()
    );
    Server::start(&["--demo-dir", dir.to_str().expect("a UTF-8 path")]).expect("server")
}

fn server_embeddings(server: &Server, inputs: &[String]) -> Vec<Vec<f64>> {
    let response = server.post(
        &format!("/_inference/text_embedding/{ENDPOINT}"),
        &serde_json::json!({ "input": inputs }),
    );
    assert_eq!(response.status(), 200);
    let body: Value = response.json().expect("JSON");
    body["text_embedding"]
        .as_array()
        .expect("text_embedding")
        .iter()
        .map(|e| vectors(&e["embedding"]))
        .collect()
}

fn vectors(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array of numbers")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn browser_embeddings_equal_the_servers() {
    let server = server_with_demo();
    let sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Chromedriver::start();
    let screenshot = target_dir().join("browser-demo.png");

    let (kernels, page_embeddings, cells, ranked, comparison) = runtime().block_on(async {
        let client = browser(&driver, profile.path()).await;
        let kernels = open_demo(&client, &server).await;
        let mut offered = Vec::new();
        for option in client
            .find_all(Locator::Css("#model option"))
            .await
            .unwrap()
        {
            offered.push(option.attr("value").await.unwrap().unwrap_or_default());
        }
        assert_eq!(offered, OFFERED, "the page offers both text models");

        // As a person would: type the sentences and a query, press the button.
        let textarea = client.find(Locator::Id("sentences")).await.unwrap();
        textarea.clear().await.unwrap();
        textarea.send_keys(&sentences.join("\n")).await.unwrap();
        let query = client.find(Locator::Id("query")).await.unwrap();
        query.clear().await.unwrap();
        query.send_keys("a small cat asleep").await.unwrap();
        client
            .find(Locator::Id("embed"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let rows = format!("#heatmap[data-rows='{}']", sentences.len());
        client
            .wait()
            .at_most(Duration::from_secs(300))
            .for_element(Locator::Css(&rows))
            .await
            .expect("the heatmap");
        let cells = client
            .find_all(Locator::Css("#heatmap .cell"))
            .await
            .unwrap()
            .len();
        let mut ranked = Vec::new();
        for item in client
            .find_all(Locator::Css("#ranking li .text"))
            .await
            .unwrap()
        {
            ranked.push(item.text().await.unwrap());
        }
        let page_embeddings = client
            .execute("return window.demo.last.embeddings;", vec![])
            .await
            .unwrap();

        // The page's own comparison with the server's API.
        client
            .find(Locator::Id("compare"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let result = client
            .wait()
            .at_most(Duration::from_secs(120))
            .for_element(Locator::Css("#compare-result.good, #compare-result.bad"))
            .await
            .expect("the comparison");
        let comparison = (
            result.attr("class").await.unwrap().unwrap_or_default(),
            result.text().await.unwrap(),
        );

        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&screenshot, png).expect("saving the screenshot");
        client.close().await.expect("closing the browser");
        (kernels, page_embeddings, cells, ranked, comparison)
    });
    println!("screenshot: {}", screenshot.display());

    // The wasm SIMD kernels, not the generic fallback.
    let tiers = kernels["tiers"].to_string();
    assert!(
        tiers.contains("wasm-simd128"),
        "the page runs without tract's wasm SIMD kernels: {kernels}"
    );

    // The heatmap has a cell for every pair, and the ranking every sentence,
    // the two cat sentences first.
    assert_eq!(cells, sentences.len() * sentences.len());
    assert_eq!(ranked.len(), sentences.len());
    let cats = &ranked[..2];
    assert!(
        cats.contains(&sentences[0]) && cats.contains(&sentences[1]),
        "{ranked:?}"
    );

    // Browser and server give the same numbers.
    let expected = server_embeddings(&server, &sentences);
    let page: Vec<Vec<f64>> = page_embeddings
        .as_array()
        .expect("embeddings")
        .iter()
        .map(vectors)
        .collect();
    assert_eq!(page.len(), expected.len());
    let mut worst = 0f64;
    for (ours, theirs) in page.iter().zip(&expected) {
        assert_eq!(ours.len(), 384);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b).abs());
        }
    }
    println!("largest difference, browser against server: {worst:e}");
    assert!(worst <= TOLERANCE, "largest difference {worst}");

    // And the page's compare control says so too.
    let (class, text) = comparison;
    assert_eq!(class, "good", "{text}");
    assert!(text.starts_with("Largest difference"), "{text}");
}

#[test]
fn demo_serves_the_page_and_only_model_files() {
    let server = server_with_demo();

    // `/_demo` redirects to the page, whose relative links need the slash.
    let page = server.get("/_demo");
    assert_eq!(page.status(), 200);
    assert!(page.url().path().ends_with("/_demo/"), "{}", page.url());
    assert!(page.text().unwrap().contains("app.js"));
    let wasm = server.get("/_demo/pkg/inference_browser_bg.wasm");
    assert_eq!(wasm.status(), 200);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    assert_eq!(&wasm.bytes().unwrap()[..4], b"\0asm");

    for file in ["model.json", "tokenizer.json", "model.onnx"] {
        let response = server.get(&format!("/_demo/models/{MODEL}/{file}"));
        assert_eq!(response.status(), 200, "{file}");
        let served = response.bytes().unwrap();
        let on_disk = std::fs::read(model_cache().join(MODEL).join(file)).unwrap();
        assert!(served == on_disk, "{file} differs from the model cache");
    }

    // Nothing else: other files, unknown models, the language model, escapes.
    for path in [
        format!("/_demo/models/{MODEL}/SHA256SUMS"),
        format!("/_demo/models/{MODEL}/..%2F..%2F..%2Fetc%2Fpasswd"),
        "/_demo/models/no-such-model/model.json".to_string(),
        "/_demo/models/..%2F..%2F..%2Fetc/passwd".to_string(),
        "/_demo/models/smollm2-135m-instruct/model.onnx".to_string(),
    ] {
        let response = server.get(&path);
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().unwrap();
        assert_eq!(error_type(&body), "status_exception", "{path}");
    }
    let escape = server.get("/_demo/%2e%2e/%2e%2e/%2e%2e/etc/passwd");
    assert!(escape.status().is_client_error(), "{}", escape.status());

    // The API is still there beside it.
    assert_eq!(server.get("/_inference").status(), 200);
}

/// `cargo xtask serve` builds the demo beside the running server: until the
/// page is there, `/_demo/` says so with a 503 that reloads itself; then the
/// page is served, and a missing file is a plain 404.
#[test]
fn demo_says_it_is_being_built_until_the_page_is_there() {
    let dir = tempfile::tempdir().expect("demo dir");
    let server = Server::start(&["--demo-dir", dir.path().to_str().expect("a UTF-8 path")])
        .expect("native host starts");
    for path in ["/_demo/", "/_demo/app.js"] {
        let response = server.get(path);
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "30", "{path}");
        let page = response.text().unwrap();
        assert!(page.contains("being built"), "{page}");
        assert!(page.contains("http-equiv=refresh"), "{page}");
    }
    // The API serves meanwhile.
    assert_eq!(server.get("/_inference").status(), 200);

    std::fs::write(dir.path().join("index.html"), "<p>the demo</p>").unwrap();
    let page = server.get("/_demo/");
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().unwrap(), "<p>the demo</p>");
    assert_eq!(server.get("/_demo/app.js").status(), 404);
}

/// `cargo xtask bench-browser`: the fixed corpus embedded in the page against
/// the native core in this process. Prints figures; asserts nothing about time.
#[test]
#[ignore = "a benchmark: cargo xtask bench-browser"]
fn bench_browser_against_native() {
    const ROUNDS: usize = 3;
    let corpus = e2e_tests::corpus().expect("the benchmarks' corpus");

    let server = server_with_demo();
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Chromedriver::start();
    let (kernels, browser_ms) = runtime().block_on(async {
        let client = browser(&driver, profile.path()).await;
        let kernels = open_demo(&client, &server).await;
        // One warm-up pass, then the best of ROUNDS.
        let ms = client
            .execute_async(
                "const [corpus, rounds, done] = arguments;
                 window.demo.time(corpus, 1)
                   .then(() => window.demo.time(corpus, rounds))
                   .then(done, (e) => done(-1));",
                vec![corpus.clone().into(), ROUNDS.into()],
            )
            .await
            .expect("timing in the page")
            .as_f64()
            .expect("milliseconds");
        client.close().await.expect("closing the browser");
        (kernels, ms)
    });
    assert!(browser_ms > 0.0, "the page failed to embed the corpus");

    let native = ml_core::TextEmbedder::load(&model_cache().join(MODEL)).expect("native model");
    native.embed(&corpus, None).expect("warm-up");
    let native_ms = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            native.embed(&corpus, None).expect("native embedding");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min);

    let n = corpus.len() as f64;
    println!(
        "browser benchmark: {} sentences of benchmarks/corpus.txt, {MODEL}, one thread, best of {ROUNDS}",
        corpus.len()
    );
    println!("  kernels in the page: {}", kernels["tiers"]);
    println!(
        "  chromium (wasm32, simd128): {browser_ms:8.1} ms  ({:.2} ms a sentence)",
        browser_ms / n
    );
    println!(
        "  native ml-core:             {native_ms:8.1} ms  ({:.2} ms a sentence)",
        native_ms / n
    );
    println!(
        "  browser / native:           {:8.2}x",
        browser_ms / native_ms
    );
}
