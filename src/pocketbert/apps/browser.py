"""The web page served on 127.0.0.1 and driven in headless Chromium (playwright-core).

Serve a built folder (the web stage's models/web) and print its address (`make web`):

    python -m pocketbert.apps.browser preview models/web [--port 8000]

Latency (p50 per prediction) in headless Chromium over the test sentences, the browser
tokenizer against the bundle's parity vectors, a screenshot after a prediction, and the page's
probabilities against the same model run natively with the page's graph optimizations, within
a bound set by the int8 model's own error against fp32 (``int8_tolerance``):

    python -m pocketbert.apps.browser measure models/web --texts data/split/test.csv \
        --parity models/app/tokenizer_parity.json --screenshot docs/web.png \
        --reference models/export/student/model.int8.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbert.apps.web import PAGE_DIR, WebError
from pocketbert.core import contract
from pocketbert.core.artifacts import read_json
from pocketbert.core.errors import reported

if TYPE_CHECKING:
    import numpy as np

CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by `make setup` (as root, with apt)


# --- serving -----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    # browsers refuse a module script or streamed WebAssembly served with the wrong type
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)


def server(folder: Path, port: int = 0, verbose: bool = False) -> http.server.ThreadingHTTPServer:
    """A static file server for ``folder`` on 127.0.0.1 (``port`` 0: any free port).

    Raises WebError when ``folder`` has no index.html."""
    if not (folder / "index.html").is_file():
        raise WebError(f"{folder / 'index.html'}: not found; build the page first "
                       "(`dvc repro web`)")
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise WebError(f"127.0.0.1:{port}: cannot listen ({exc.strerror}); pass another "
                       "--port") from None
    httpd.verbose = verbose  # type: ignore[attr-defined]
    return httpd


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """Serve ``folder`` from a background thread; yields its address http://127.0.0.1:PORT/."""
    httpd = server(folder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# --- driving the page in Chromium ----------------------------------------------------------------


def chromium() -> str:
    """The Chromium executable: $POCKETBERT_CHROMIUM, else Debian's /usr/bin/chromium.

    Raises WebError when there is none."""
    path = os.environ.get("POCKETBERT_CHROMIUM") or shutil.which("chromium") or CHROMIUM
    if not Path(path).is_file():
        raise WebError(f"{path}: no Chromium; `make setup` installs Debian's chromium when run "
                       "as root with apt, or set POCKETBERT_CHROMIUM to a Chromium binary")
    return path


def drive(folder: Path, request: dict[str, Any], page_dir: Path = PAGE_DIR,
          timeout_s: float = 300) -> dict[str, Any]:
    """Serve ``folder`` and run web/browser.mjs (playwright-core, headless Chromium) on it.

    ``request`` holds what to do (see browser.mjs: ``type``, ``encode``, ``predict``, ``latency``,
    ``screenshot``); the result lists every request the page made, those blocked (not
    127.0.0.1), page errors, and the answers. Raises WebError when node or the driver fails.
    """
    node = shutil.which("node")
    if node is None:
        raise WebError("node: not found; install Node.js (20 or newer) to drive the page")
    if not (page_dir / "node_modules" / "playwright-core").is_dir():
        raise WebError(f"{page_dir / 'node_modules' / 'playwright-core'}: not found; run "
                       f"`make setup` (or `npm ci` in {page_dir})")
    with serving(folder) as url:
        payload = json.dumps({**request, "url": url, "executable": chromium()})
        done = subprocess.run([node, str(page_dir / "browser.mjs")], input=payload, text=True,
                              capture_output=True, cwd=page_dir, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise WebError(f"{page_dir / 'browser.mjs'} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


FLOAT_SLACK = 1e-5
"""Probability difference float32 alone can make between two runtimes: kernels that sum in
another order differ by a few units of 2^-24 relative per operation, a few hundred operations
deep, so logits of magnitude below 10 differ by well under 2e-5, and a probability moves by
at most half of the largest logit change (the softmax Jacobian's rows sum, in absolute value,
to 2p(1-p) <= 1/2)."""


def int8_tolerance(int8: np.ndarray, fp32: np.ndarray) -> float:
    """The largest probability difference allowed between two runtimes that run the same
    dynamic int8 model: the model's own largest probability error against fp32 on the same
    texts (``int8``, ``fp32``: [texts, labels], both run natively), plus FLOAT_SLACK.

    Why: both runtimes multiply the same u8 x s8 integers exactly and compute the same per-call
    scales (from the tensor's min and max, which are exact); only their float kernels
    (LayerNorm, GELU, softmax) round differently, by a few float32 ulps. That changes an int8
    activation only where DynamicQuantizeLinear rounds a value lying within those ulps of a
    rounding boundary: there the two runtimes pick neighbouring integers, one scale step s
    apart. A value is at most 255 steps from the zero point, so c ulps of it are at most
    c * 255 * 2^-23 s, and the share of activations that flip is at most twice that: 2.4e-4
    for c = 4. Against fp32, int8 rounds every activation, each by up to s/2 (variance
    s^2/12). To first order a logit changes by the sum of each activation's change times its
    gradient, so the expected squared runtime-to-runtime change is at most 2.4e-4 * 12 = 3e-3
    times the squared int8-vs-fp32 change: about 0.05 of it in size, a margin of about 20."""
    import numpy as np

    return float(np.abs(int8 - fp32).max()) + FLOAT_SLACK


def agreement(page: np.ndarray, native: np.ndarray, tolerance: float) -> dict[str, Any]:
    """How far the page's int8 probabilities [texts, labels] are from ``native`` (the same
    int8 model run natively, one text per call, with the page's graph optimizations), against
    ``tolerance`` (int8_tolerance).

    A label can change only where the two top probabilities are within twice the tolerance of
    each other, so a text's label is decided where the native top-2 margin exceeds that.
    Returns the largest difference, the texts beyond the tolerance (``over``: indices), the
    texts whose label is decided (``decided``) and those of them that got another label on
    the page (``mismatched``)."""
    import numpy as np

    diff = np.abs(page - native).max(axis=1)  # [texts]
    top2 = np.sort(native, axis=1)[:, -2:]
    decided = np.flatnonzero(top2[:, 1] - top2[:, 0] > 2 * tolerance)
    mismatched = decided[page[decided].argmax(1) != native[decided].argmax(1)]
    return {"tolerance": tolerance, "max_abs_diff": float(diff.max()),
            "over": np.flatnonzero(diff > tolerance).tolist(), "decided": decided.tolist(),
            "mismatched": mismatched.tolist()}


def native_probabilities(model: Path, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Probabilities [texts, labels] of an .onnx model run natively, one text per call as the
    page runs it, with the page's graph optimizations (web.PAGE_DISABLED_OPTIMIZERS).

    Raises onnx_runner.PredictError when the model or its tokenizer cannot be loaded."""
    import numpy as np

    from pocketbert.apps.web import PAGE_DISABLED_OPTIMIZERS
    from pocketbert.core import evaluation
    from pocketbert.runtime import onnx_runner

    clf = onnx_runner.load_classifier(model, max_length,
                                    disabled_optimizers=PAGE_DISABLED_OPTIMIZERS)
    return np.stack([evaluation.softmax(clf.logits([t]))[0] for t in texts])


def read_texts(path: Path) -> list[str]:
    """The ``text`` column of a CSV (a split file), or the non-blank lines of a text file."""
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix == ".csv":
            reader = csv.DictReader(fh)
            if "text" not in (reader.fieldnames or []):
                raise WebError(f"{path}: no 'text' column")
            return [row["text"] for row in reader]
        return [line.strip() for line in fh if line.strip()]


def measure(folder: Path, texts: list[str], parity: list[dict] | None = None,
            screenshot: Path | None = None, reference: Path | None = None, warmup: int = 10,
            rounds: int = 3) -> dict[str, Any]:
    """Check and time a built page in headless Chromium; the figures docs/guide/browser.md reports.

    Latency: ms per prediction (tokenize + model, batch 1) from the page's own
    ``performance.now()`` (which Chromium rounds to 0.1 ms on a page without cross-origin
    isolation), over ``rounds`` passes of ``texts`` after ``warmup`` untimed ones.
    ``parity``: tokenizer_parity.json cases, each compared with the page's token ids.
    ``screenshot``: the page after classifying ``texts[0]`` with its form, as a PNG.
    ``reference``: the int8 .onnx model the page ships, run natively one text per call with
    the page's graph optimizations; the page's labels and probabilities are compared with it
    within the int8 model's own error against the fp32 model.onnx beside it
    (``int8_tolerance``, ``agreement``).
    Raises WebError when the page does not load or reports an error, or when ``reference``
    has no model.onnx beside it.
    """
    from pocketbert.data import dataset

    for number, text in enumerate(texts, start=1):
        if dataset.blank_reason(text) is not None:  # the page refuses it, as predict does
            raise WebError(f"text {number} is empty after normalisation: it holds "
                           f"{dataset.blank_reason(text)}; leave it out")
    fp32 = None
    if reference is not None:
        fp32 = reference.with_name(contract.ONNX_FP32_FILE)
        if not fp32.is_file():
            raise WebError(f"{fp32}: not found; the page's probabilities are compared with "
                           f"{reference.name} within its own error against the fp32 model "
                           "beside it")
    request: dict[str, Any] = {
        "latency": {"texts": texts, "warmup": warmup, "rounds": rounds},
        "encode": [case["text"] for case in parity or []],
        "predict": texts if reference is not None else []}
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        request.update(type=texts[:1], screenshot=str(screenshot.absolute()))
    result = drive(folder, request)
    if result.get("ready") != "true" or result["errors"]:
        raise WebError(f"{folder}: the page did not run: {result.get('status')} "
                       f"{result['errors']}")
    import numpy as np

    from pocketbert.benchmarks.benchmarking import latency_summary

    report: dict[str, Any] = {
        "predictions": len(result["latency_ms"]),
        **latency_summary(np.asarray(result["latency_ms"])),
        "requests": len(result["requests"]), "blocked_requests": result["blocked"]}
    if reference is not None and fp32 is not None:
        max_length = read_json(folder / "model" / "web.json")["max_length"]
        native = native_probabilities(reference, texts, max_length)
        page = np.asarray([p["probabilities"] for p in result["predicted"]])  # [texts, labels]
        tolerance = int8_tolerance(native, native_probabilities(fp32, texts, max_length))
        check = agreement(page, native, tolerance)
        report.update({
            "reference.texts": len(texts),
            "reference.label_agreement": float((page.argmax(1) == native.argmax(1)).mean()),
            "reference.max_abs_probability_diff": check["max_abs_diff"],
            "reference.tolerance": check["tolerance"],
            "reference.texts_over_tolerance": len(check["over"]),
            "reference.decided_texts": len(check["decided"]),
            "reference.decided_label_mismatches": len(check["mismatched"])})
    if parity is not None:
        report["parity_cases"] = len(parity)
        report["parity_mismatches"] = [
            {"text": case["text"], "pipeline": case["input_ids"], "browser": ids}
            for case, ids in zip(parity, result["encoded"], strict=True)
            if ids != case["input_ids"]]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pocketbert.apps.browser",
                                     description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser("preview", help="serve a built page on 127.0.0.1 to look at")
    preview.add_argument("folder", type=Path, nargs="?", default=Path("models/web"))
    preview.add_argument("--port", type=int, default=8000, help="0: any free port")
    check = commands.add_parser("measure", help="latency, tokenizer parity and a screenshot "
                                "of a built page in headless Chromium")
    check.add_argument("folder", type=Path, nargs="?", default=Path("models/web"))
    check.add_argument("--texts", type=Path, default=Path("data/split/test.csv"),
                       help="CSV with a text column, or one text per line")
    check.add_argument("--parity", type=Path, help="tokenizer_parity.json (bundle stage)")
    check.add_argument("--screenshot", type=Path, help="PNG of the page after a prediction")
    check.add_argument("--reference", type=Path,
                       help="the .onnx model run natively to compare probabilities with")
    check.add_argument("--rounds", type=int, default=3, help="timed passes over the texts")
    args = parser.parse_args(argv)
    with reported():
        if args.command == "measure":
            for path in (args.texts, args.parity, args.reference):
                if path is not None and not path.is_file():
                    raise WebError(f"{path}: not found")
            parity = read_json(args.parity)["cases"] if args.parity else None
            report = measure(args.folder, read_texts(args.texts), parity, args.screenshot,
                             args.reference, rounds=args.rounds)
            print(json.dumps(report, indent=2, ensure_ascii=False))
            return 0
        httpd = server(args.folder, args.port, verbose=True)
    print(f"Serving {args.folder} at http://127.0.0.1:{httpd.server_address[1]}/ "
          "(Ctrl+C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()
    httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
