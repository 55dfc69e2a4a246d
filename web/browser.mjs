// Drive the page in headless Chromium (playwright-core, the system's Chromium; no browser
// download). Reads one JSON request on stdin, writes one JSON result on stdout:
//   {"url": "http://127.0.0.1:PORT/", "executable": "/usr/bin/chromium",
//    "type": [texts typed into the page and classified with its button],
//    "encode": [texts tokenized by the page's tokenizer],
//    "predict": [texts classified by the page's predict function, without the form],
//    "refuse": [texts typed into the page after "type", expected to be refused],
//    "blank": [texts given to the page's blankReason],
//    "answers": [[probabilities, {temperature, score, threshold}], ...] for the page's rule,
//    "latency": {"texts": [...], "warmup": 10, "rounds": 1},
//    "screenshot": "path.png"}
// Result: {"requests": [every URL the page asked for], "blocked": [URLs not on 127.0.0.1],
//          "errors": [page errors and console errors], "typed": [{label, probabilities, ...}],
//          "encoded": [[ids], ...], "predicted": [{label, probabilities, ms, ids}, ...],
//          "refused": [{message, messageVisible, resultVisible, label, predictError}, ...],
//          "blank": [reason or null, ...], "answers": [true/false, ...], "latency_ms": [...]}
// Run by pocketbert.apps.browser (tests, `python -m pocketbert.apps.browser measure`).
import { chromium } from "playwright-core";

// Flags that keep Debian's Chromium from reaching the network on its own (DESIGN.md).
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-default-apps", "--disable-extensions"];

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function main() {
  const request = await readStdin();
  const result = { requests: [], blocked: [], errors: [] };
  const browser = await chromium.launch({ executablePath: request.executable, args: FLAGS });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
    // Only the local server: anything else (a CDN, a font, telemetry) is aborted and reported.
    await context.route("**/*", (route) => {
      const url = route.request().url();
      result.requests.push(url);
      const host = new URL(url).hostname;
      if (host === "127.0.0.1") return route.continue();
      result.blocked.push(url);
      return route.abort("blockedbyclient");
    });
    const page = await context.newPage();
    page.on("pageerror", (error) => result.errors.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") result.errors.push(`console: ${message.text()}`);
    });
    await page.goto(request.url);
    await page.waitForSelector("body[data-ready]", { timeout: 60000 });
    result.ready = await page.getAttribute("body", "data-ready");
    result.status = await page.textContent("#status");
    if (result.ready !== "true") return result;

    // timed first, so that a screenshot after typing shows a warm prediction time
    if (request.latency) {
      result.latency_ms = await page.evaluate(async ({ texts, warmup, rounds }) => {
        for (const t of texts.slice(0, warmup)) await window.pocketbert.predict(t);
        const times = [];
        for (let r = 0; r < rounds; r++) {
          for (const t of texts) times.push((await window.pocketbert.predict(t)).ms);
        }
        return times;
      }, { warmup: 10, rounds: 1, ...request.latency });
    }
    result.typed = [];
    for (const text of request.type ?? []) {
      await page.fill("#text", text);
      const before = await page.textContent("#timing");
      await page.click("#classify");
      await page.waitForFunction((old) => {
        const timing = document.getElementById("timing").textContent;
        return timing !== old && !document.getElementById("classify").disabled;
      }, before);
      result.typed.push(await page.evaluate(() => ({
        label: document.getElementById("label").textContent,
        confidence: document.getElementById("confidence").textContent,
        probabilities: Object.fromEntries([...document.querySelectorAll("#probabilities tr")]
          .map((tr) => [tr.dataset.label, tr.querySelector(".p").textContent])),
        timing: document.getElementById("timing").textContent,
        deferral: document.getElementById("deferral").textContent,
      })));
    }
    if (request.screenshot) await page.screenshot({ path: request.screenshot, fullPage: true });
    // after "type" and the screenshot, so that a refused text must also hide the label
    // shown before it
    result.refused = [];
    for (const text of request.refuse ?? []) {
      await page.fill("#text", text);
      const before = await page.textContent("#timing");
      // hide the previous text's message, so that a message seen below is this click's
      await page.evaluate(() => {
        const refused = document.getElementById("refused");
        if (refused !== null) { refused.hidden = true; refused.textContent = ""; }
      });
      await page.click("#classify");
      // refused (the message shows) or classified (a new timing): whichever the page does
      await page.waitForFunction((old) => {
        const refused = document.getElementById("refused");
        const shown = refused !== null && !refused.hidden;
        const timing = document.getElementById("timing").textContent;
        return (shown || timing !== old) && !document.getElementById("classify").disabled;
      }, before);
      result.refused.push(await page.evaluate(async (typed) => {
        const visible = (el) => el !== null && !el.hidden && el.offsetParent !== null;
        let predictError = null;  // the page's predict function must refuse it too
        try { await window.pocketbert.predict(typed); } catch (error) { predictError = error.message; }
        return {
          message: document.getElementById("refused")?.textContent ?? null,
          messageVisible: visible(document.getElementById("refused")),
          resultVisible: visible(document.getElementById("result")),
          label: document.getElementById("label").textContent,
          predictError,
        };
      }, text));
    }
    result.blank = await page.evaluate((texts) => texts.map((t) => window.pocketbert.blankReason(t)),
      request.blank ?? []);
    result.answers = await page.evaluate((cases) => cases.map(
      ([probabilities, deferral]) => window.pocketbert.answers(probabilities, deferral)),
      request.answers ?? []);
    result.encoded = await page.evaluate((texts) => texts.map((t) => window.pocketbert.encode(t)),
      request.encode ?? []);
    result.predicted = await page.evaluate(async (texts) => {
      const out = [];
      for (const t of texts) out.push(await window.pocketbert.predict(t));
      return out;
    }, request.predict ?? []);
    return result;
  } finally {
    await browser.close();
  }
}

main().then(
  (result) => process.stdout.write(JSON.stringify(result)),
  (error) => { process.stderr.write(`${error.stack ?? error}\n`); process.exit(1); },
);
