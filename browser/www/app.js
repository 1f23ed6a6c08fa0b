// The demo page: loads the ML core (WebAssembly) and a model, embeds the
// sentences typed here, draws their similarity and the ranking for a query,
// and compares the numbers with the server's /_inference API.
//
// Query parameters: `model` (default multilingual-e5-small), `models` (where the
// model directories are, default `models/` beside the page), `server` (the
// server to compare with, default this page's origin).

import init, { TextEmbedder, kernels } from "./pkg/inference_browser.js";

const params = new URLSearchParams(location.search);
const MODEL = params.get("model") || "multilingual-e5-small";
// The endpoint to compare with, for the models a preconfigured one serves.
const PRECONFIGURED = { "multilingual-e5-small": ".multilingual-e5-small-elasticsearch" };
const MODELS_BASE = new URL(params.get("models") || "models/", location.href);
const WASM_URL = new URL("pkg/inference_browser_bg.wasm", import.meta.url);
const MODEL_FILES = ["model.json", "tokenizer.json", "model.onnx"];
// The largest difference from the server that still counts as the same numbers.
const TOLERANCE = 1e-5;

const $ = (id) => document.getElementById(id);
let embedder = null;

// ---- loading ---------------------------------------------------------------

function status(label, detail = "", fraction = null) {
  $("load-label").textContent = label;
  $("load-detail").textContent = detail;
  const bar = $("load-progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

const mb = (n) => (n / 1e6).toFixed(1);

// Lets the browser paint before a long synchronous call into WebAssembly.
const paint = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));

/** Fetches every URL, reporting the bytes received over the bytes expected. */
async function fetchAll(urls, onProgress) {
  const received = urls.map(() => 0);
  const expected = urls.map(() => 0);
  const report = () =>
    onProgress(
      received.reduce((a, b) => a + b, 0),
      expected.reduce((a, b) => a + b, 0),
    );
  return Promise.all(
    urls.map(async (url, i) => {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${url.pathname ?? url}: HTTP ${response.status}`);
      expected[i] = Number(response.headers.get("content-length")) || 0;
      const reader = response.body.getReader();
      const chunks = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        received[i] += value.length;
        report();
      }
      const bytes = new Uint8Array(received[i]);
      let offset = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, offset);
        offset += chunk.length;
      }
      return bytes;
    }),
  );
}

async function load() {
  const started = performance.now();
  const urls = [WASM_URL, ...MODEL_FILES.map((f) => new URL(`${MODEL}/${f}`, MODELS_BASE))];
  status("Fetching the model", "", 0);
  const [wasm, modelJson, tokenizerJson, onnx] = await fetchAll(urls, (got, total) => {
    status(
      "Fetching the model",
      total ? `${mb(got)} of ${mb(total)} MB` : `${mb(got)} MB`,
      total ? got / total : null,
    );
  });
  const fetchedMs = performance.now() - started;

  status("Compiling WebAssembly", `${mb(wasm.length)} MB`, null);
  await paint();
  const module = await WebAssembly.compile(wasm);
  await init({ module_or_path: module });

  status("Compiling the model", `${MODEL}: ${mb(onnx.length)} MB of ONNX`, null);
  await paint();
  embedder = new TextEmbedder(modelJson, tokenizerJson, onnx);

  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  status("Ready", `fetched in ${(fetchedMs / 1000).toFixed(1)} s, ready in ${seconds} s`, 1);
  $("loading").classList.add("done");
  $("embed").disabled = false;
  $("model-info").textContent = `Model ${embedder.modelId} · ${embedder.dimensions} dimensions`;
  const k = kernels();
  $("kernel-info").textContent = `tract kernels: ${k.tiers.join(", ") || "generic"}`;
}

// ---- embedding and drawing -------------------------------------------------

/** Embeds `sentences`; returns plain arrays (they cross to WebDriver as JSON). */
function embed(sentences, inputType) {
  return embedder.embed(sentences, inputType).map((v) => Array.from(v));
}

function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function cosine(a, b) {
  return dot(a, b) / (Math.sqrt(dot(a, a) * dot(b, b)) || 1);
}

function sentencesFromInput() {
  return $("sentences")
    .value.split("\n")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** White to blue for 0..1; negative similarities in light red. */
function heat(value) {
  const v = Math.max(-1, Math.min(1, value));
  if (v < 0) return `rgba(192, 57, 43, ${(-v * 0.6).toFixed(3)})`;
  return `rgba(47, 111, 223, ${(0.06 + v * 0.94).toFixed(3)})`;
}

function drawHeatmap(sentences, embeddings) {
  const map = $("heatmap");
  const n = sentences.length;
  map.replaceChildren();
  map.style.gridTemplateColumns = `minmax(80px, 16em) repeat(${n}, minmax(0, 52px))`;
  map.append(Object.assign(document.createElement("div"), { className: "label col-label" }));
  for (let j = 0; j < n; j++) {
    map.append(
      Object.assign(document.createElement("div"), {
        className: "label col-label",
        textContent: String(j + 1),
        title: sentences[j],
      }),
    );
  }
  for (let i = 0; i < n; i++) {
    map.append(
      Object.assign(document.createElement("div"), {
        className: "label",
        textContent: `${i + 1}. ${sentences[i]}`,
        title: sentences[i],
      }),
    );
    for (let j = 0; j < n; j++) {
      const c = cosine(embeddings[i], embeddings[j]);
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.style.background = heat(c);
      cell.style.color = c > 0.55 ? "#fff" : "inherit";
      cell.title = `${i + 1} vs ${j + 1}: ${c.toFixed(4)}`;
      if (n <= 12) cell.textContent = c.toFixed(2);
      map.append(cell);
    }
  }
  map.dataset.rows = String(n);
}

function drawRanking(sentences, embeddings, queryEmbedding) {
  const list = $("ranking");
  const ranked = sentences
    .map((text, i) => ({ text, score: cosine(queryEmbedding, embeddings[i]) }))
    .sort((a, b) => b.score - a.score);
  list.replaceChildren(
    ...ranked.map(({ text, score }) => {
      const item = document.createElement("li");
      const width = Math.max(0, score) * 100;
      item.innerHTML = `<span class="text"></span>
        <span class="bar"><span class="fill" style="width:${(width * 0.85).toFixed(1)}%"></span>
        <span class="score">${score.toFixed(4)}</span></span>`;
      item.querySelector(".text").textContent = text;
      return item;
    }),
  );
}

async function embedAndDraw() {
  const sentences = sentencesFromInput();
  const query = $("query").value.trim();
  if (sentences.length === 0) {
    $("embed-status").textContent = "Type at least one sentence.";
    return;
  }
  $("embed").disabled = true;
  $("embed-status").textContent = `Embedding ${sentences.length} sentences…`;
  await paint();
  try {
    const started = performance.now();
    const embeddings = embed(sentences);
    const ms = performance.now() - started;
    const queryEmbedding = query ? embed([query], "search")[0] : null;
    demo.last = { sentences, embeddings, ms };
    drawHeatmap(sentences, embeddings);
    if (queryEmbedding) drawRanking(sentences, embeddings, queryEmbedding);
    else $("ranking").replaceChildren();
    $("results").hidden = false;
    $("compare-card").hidden = false;
    $("compare-result").className = "muted";
    $("compare-result").textContent = "Not compared yet.";
    $("embed-status").textContent =
      `${sentences.length} sentences embedded in ${ms.toFixed(0)} ms, in this browser.`;
  } catch (e) {
    $("embed-status").textContent = `Failed: ${e.message ?? e}`;
  } finally {
    $("embed").disabled = false;
  }
}

// ---- comparing with the server ---------------------------------------------

async function serverEmbeddings(sentences) {
  const base = $("server").value.replace(/\/+$/, "");
  const endpoint = encodeURIComponent($("endpoint").value.trim());
  const response = await fetch(`${base}/_inference/text_embedding/${endpoint}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ input: sentences }),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = body?.error?.reason ?? `HTTP ${response.status}`;
    throw new Error(reason);
  }
  return body.text_embedding.map((e) => e.embedding);
}

/** The largest absolute difference, and where it is. */
function largestDifference(ours, theirs) {
  let worst = { difference: 0, sentence: 0, dimension: 0 };
  if (ours.length !== theirs.length) throw new Error("the server returned another number of embeddings");
  ours.forEach((vector, i) => {
    if (vector.length !== theirs[i].length) throw new Error("the server's embeddings have other dimensions");
    vector.forEach((v, d) => {
      const difference = Math.abs(v - theirs[i][d]);
      if (difference > worst.difference) worst = { difference, sentence: i, dimension: d };
    });
  });
  return worst;
}

async function compare() {
  const out = $("compare-result");
  if (!demo.last) return;
  $("compare").disabled = true;
  out.className = "muted";
  out.textContent = "Asking the server…";
  try {
    const started = performance.now();
    const theirs = await serverEmbeddings(demo.last.sentences);
    const ms = performance.now() - started;
    const worst = largestDifference(demo.last.embeddings, theirs);
    const same = worst.difference <= TOLERANCE;
    out.className = same ? "good" : "bad";
    out.textContent =
      `Largest difference: ${worst.difference.toExponential(2)} ` +
      `(sentence ${worst.sentence + 1}, dimension ${worst.dimension}) — ` +
      (same ? `the same numbers, within ${TOLERANCE}.` : `more than ${TOLERANCE}!`) +
      ` Server answered in ${ms.toFixed(0)} ms.`;
    demo.lastComparison = worst;
  } catch (e) {
    out.className = "bad";
    out.textContent = `The server did not answer: ${e.message ?? e}`;
  } finally {
    $("compare").disabled = false;
  }
}

// ---- wiring ----------------------------------------------------------------

// For scripts and tests (WebDriver): `await demo.ready`, then `demo.embed([...])`.
const demo = {
  ready: null,
  last: null,
  lastComparison: null,
  embed: async (sentences, inputType) => {
    await demo.ready;
    return embed(sentences, inputType);
  },
  /** Milliseconds to embed `sentences`, best of `rounds` runs. */
  time: async (sentences, rounds = 1) => {
    await demo.ready;
    let best = Infinity;
    for (let r = 0; r < rounds; r++) {
      const started = performance.now();
      embedder.embed(sentences);
      best = Math.min(best, performance.now() - started);
    }
    return best;
  },
  kernels: async () => {
    await demo.ready;
    return kernels();
  },
};
window.demo = demo;

$("server").value = params.get("server") || (location.protocol.startsWith("http") ? location.origin : "");
$("endpoint").value = PRECONFIGURED[MODEL] ?? "";
$("endpoint").placeholder = `an endpoint on ${MODEL}`;
$("model").value = MODEL;
// Another model is another page load: the running one holds its weights.
$("model").addEventListener("change", () => {
  params.set("model", $("model").value);
  location.search = params.toString();
});
$("embed").addEventListener("click", embedAndDraw);
$("compare").addEventListener("click", compare);

demo.ready = load().catch((e) => {
  $("loading").classList.add("failed");
  status("Could not load the model", String(e.message ?? e), 0);
  throw e;
});
