// pocketbert in the browser: tokenize with tokenizers.js, run the int8 student with
// onnxruntime-web (WebAssembly, one thread), show every label's probability.
// Everything is loaded from this folder (no CDN): see pocketbert.apps.web.build for the layout.
import * as ort from "./vendor/ort.wasm.min.mjs";
import { Tokenizer } from "./vendor/tokenizers.min.mjs";

// One thread: no SharedArrayBuffer, so the page needs no cross-origin isolation headers.
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;

const $ = (id) => document.getElementById(id);

// The rule of pocketbert.data.dataset.blank_reason, which `pocketbert predict` and `pocketbert
// serve` apply: a text is kept when it has a letter, digit, punctuation mark or symbol (Unicode
// general categories L, N, P, S) other than U+FFFD. BERT's normaliser deletes control, format
// (zero-width), private-use and unassigned characters and U+FFFD, an uncased model also strips
// combining marks, and whitespace only separates words: a text of nothing else would be
// classified from [CLS] [SEP] alone.
const KEPT = /[\p{L}\p{N}\p{P}\p{S}]/u;
// Python's str.isspace() characters, so that "empty" means what it means to str.strip()
const SPACE = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;
const LINE_SPACE = new Set([" ", "\t", "\n", "\r", "\x0b", "\x0c"]);

// null when the tokenizer keeps a character of `text`, else "empty" (whitespace or nothing)
// or what the text holds instead, e.g. "only U+200B" (at most three characters named).
export function blankReason(text) {
  for (const c of text) if (c !== "\ufffd" && KEPT.test(c)) return null;
  if (SPACE.test(text)) return "empty";
  const codes = [...new Set(text)].filter((c) => !LINE_SPACE.has(c))
    .map((c) => `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
  const more = codes.length > 3 ? ` and ${codes.length - 3} more` : "";
  return `only ${codes.slice(0, 3).join(", ")}${more}`;
}

// The message shown instead of a label for a text blankReason refuses.
function refusal(reason) {
  return reason === "empty" ? "Nothing to classify: type a sentence."
    : `Nothing to classify: the text is empty after normalisation (it holds ${reason}); type a sentence.`;
}

async function fetchJson(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function load() {
  const [settings, tokenizerJson, tokenizerConfig] = await Promise.all([
    fetchJson("model/web.json"), fetchJson("model/tokenizer.json"),
    fetchJson("model/tokenizer_config.json")]);
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const session = await ort.InferenceSession.create("model/model.int8.onnx",
    { executionProviders: ["wasm"] });
  return { settings, tokenizer, session };
}

// Token ids as the pipeline makes them: [CLS] ... [SEP], truncated to max_length by dropping
// tokens before the final [SEP] (transformers' truncation=True for one sequence).
function encode(model, text) {
  const ids = model.tokenizer.encode(text).ids;
  const max = model.settings.max_length;
  return ids.length > max ? [...ids.slice(0, max - 1), ids[ids.length - 1]] : ids;
}

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((x) => x / sum);
}

// The deferral rule of pocketbert.core.contract (calibrated, confidence, answers), the same
// arithmetic: the student answers on the device when the confidence of its calibrated
// probabilities reaches the threshold chosen by the calibrate stage, else it would ask the server.
export function calibrated(probabilities, temperature) {
  const powered = probabilities.map((p) => (p > 0 ? p ** (1 / temperature) : 0));
  const total = powered.reduce((a, b) => a + b, 0);
  return powered.map((p) => p / total);
}

export function confidence(probabilities, score) {
  if (score === "max_probability") return Math.max(...probabilities);
  if (score === "margin") {
    const top = [...probabilities].sort((a, b) => b - a);
    return top[0] - (top.length > 1 ? top[1] : 0);
  }
  if (score === "entropy") {
    return probabilities.reduce((sum, p) => (p > 0 ? sum + p * Math.log(p) : sum), 0);
  }
  throw new Error(`unknown confidence score ${score}`);
}

// deferral: {temperature, score, threshold}; a null threshold means always ask
export function answers(probabilities, deferral) {
  if (deferral.threshold === null) return false;
  return confidence(calibrated(probabilities, deferral.temperature), deferral.score)
    >= deferral.threshold;
}

// One text per call, no padding (batch 1): what the app does with the int8 model, whose
// dynamic quantization scales depend on every value in the batch.
// Refuses (throws) a text blankReason rejects, as `pocketbert predict` does.
async function predict(model, text) {
  const reason = blankReason(text);
  if (reason !== null) throw new Error(refusal(reason));
  const start = performance.now();
  const ids = encode(model, text);
  const shape = [1, ids.length];
  const tensors = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), shape),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), shape),
    token_type_ids: new ort.Tensor("int64", new BigInt64Array(ids.length), shape),
  };
  const feeds = Object.fromEntries(model.session.inputNames.map((n) => [n, tensors[n]]));
  const output = await model.session.run(feeds);
  const probabilities = softmax(Array.from(output[model.session.outputNames[0]].data));
  const ms = performance.now() - start;
  const labels = model.settings.labels;
  const best = probabilities.indexOf(Math.max(...probabilities));
  const deferral = model.settings.deferral ?? null;
  return { label: labels[best], confidence: probabilities[best], probabilities, ms, ids,
    calibrated: deferral && calibrated(probabilities, deferral.temperature),
    deferred: deferral !== null && !answers(probabilities, deferral) };
}

function show(model, result) {
  $("label").textContent = result.label;
  // with deferral settings the table shows the calibrated probabilities
  const shown = result.calibrated ?? result.probabilities;
  $("confidence").textContent = `${(100 * Math.max(...shown)).toFixed(1)}%`;
  $("deferral").textContent = result.calibrated === null ? ""
    : result.deferred ? "Not sure: would ask the server."
    : "Sure enough to answer on this device.";
  $("deferral").className = result.deferred ? "deferred" : "";
  const rows = model.settings.labels.map((name, i) => {
    const p = shown[i];
    const tr = document.createElement("tr");
    tr.dataset.label = name;
    if (name === result.label) tr.className = "best";
    tr.innerHTML = `<td class="name"></td><td class="p"></td><td class="barcell"><div class="bar"></div></td>`;
    tr.querySelector(".name").textContent = name;
    tr.querySelector(".p").textContent = p.toFixed(4);
    tr.querySelector(".bar").style.width = `${(100 * p).toFixed(1)}%`;
    return tr;
  });
  $("probabilities").replaceChildren(...rows);
  $("timing").textContent = `${result.ms.toFixed(1)} ms (tokenize + model, ${result.ids.length} tokens)`;
  $("result").hidden = false;
}

async function main() {
  try {
    const model = await load();
    // for the browser tests and the measurements (pocketbert.apps.browser): the page's own functions
    window.pocketbert = { encode: (text) => encode(model, text),
      predict: (text) => predict(model, text), blankReason, answers };
    const button = $("classify");
    button.addEventListener("click", async () => {
      const reason = blankReason($("text").value);
      if (reason !== null) {  // no label for a text the model would see as [CLS] [SEP]
        $("result").hidden = true;
        $("label").textContent = "";
        $("refused").textContent = refusal(reason);
        $("refused").hidden = false;
        return;
      }
      $("refused").hidden = true;
      button.disabled = true;
      try {
        show(model, await predict(model, $("text").value));
        $("status").textContent = "";
      } catch (error) {
        $("status").textContent = `Prediction failed: ${error.message}`;
      } finally {
        button.disabled = false;
      }
    });
    button.disabled = false;
    $("status").textContent = `Ready: ${model.settings.labels.length} labels, up to ${model.settings.max_length} tokens.`;
    document.body.dataset.ready = "true";
  } catch (error) {
    $("status").textContent = `Could not load the model: ${error.message}`;
    document.body.dataset.ready = "error";
  }
}

main();
