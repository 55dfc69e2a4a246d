"""The student as a static web page: the folder the web stage writes.

The page (web/index.html, web/app.js) tokenizes with tokenizers.js (@huggingface/tokenizers)
and runs the int8 ONNX student with onnxruntime-web (WebAssembly, one thread). ``build`` copies
the page, those two libraries from web/node_modules (installed by `make setup`: npm ci) and the
model files into one folder that works offline, from any static file server:

    index.html, app.js
    vendor/      tokenizers.min.mjs, ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm}
    model/       model.int8.onnx (given deferral settings, they are in its metadata too:
                 contract.DEFERRAL_METADATA), tokenizer.json, tokenizer_config.json, labels.json,
                 max_length.json, web.json (labels, max_length and, given, the deferral settings)

Serving it and driving it in Chromium: pocketbert.apps.browser.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pocketbert.core import contract
from pocketbert.core.artifacts import write_json
from pocketbert.core.errors import ModelError, PocketbertError

PAGE_DIR = Path(__file__).resolve().parents[3] / "web"
"""The page's sources, its package.json/package-lock.json and node_modules (a source checkout)."""
PAGE_FILES = ("index.html", "app.js")
# node_modules path -> name under vendor/. ort.wasm.min.mjs is onnxruntime-web's build with only
# the WebAssembly backend; it imports the .mjs loader and fetches the .wasm from wasmPaths.
VENDOR_FILES = {
    "@huggingface/tokenizers/dist/tokenizers.min.mjs": "tokenizers.min.mjs",
    "onnxruntime-web/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
}
MODEL_FILES = (contract.ONNX_INT8_FILE, *contract.TOKENIZER_FILES, contract.LABELS_FILE,
               contract.LENGTH_FILE)
"""the export folder's files the page ships: with labels.json, model/ is an export folder that
`pocketbert predict --model` and `pocketbert serve` run as they are"""
PAGE_DISABLED_OPTIMIZERS: tuple[str, ...] = ()
"""onnxruntime graph optimizers the page's session turns off: none. app.js creates it with
onnxruntime-web's defaults (level all), so it fuses Add + LayerNormalization into
SkipLayerNormalization, which native sessions turn off (onnx_runner.DISABLED_OPTIMIZERS); a
native reference for the page passes this to onnx_runner.session to run the page's graph."""


class WebError(PocketbertError):
    """The page cannot be built or driven: a missing JavaScript package, browser or file."""


def with_metadata(source: Path, target: Path, metadata: Mapping[str, str]) -> None:
    """Write the ONNX model ``source`` to ``target`` with ``metadata`` in its
    metadata_props (entries of the same keys replaced); graph and weights unchanged.
    onnxruntime returns them as ``session.get_modelmeta().custom_metadata_map``."""
    import onnx

    model = onnx.load(str(source))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))


def build(model_dir: Path, labels: Sequence[str], max_length: int, out: Path,
          page_dir: Path = PAGE_DIR,
          deferral: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Write the page into ``out`` (an empty folder): page files, vendor libraries, model.

    ``model_dir`` is an export folder (model.int8.onnx and the tokenizer files beside it);
    ``max_length`` is tokenize.max_length, the page truncates to it as the pipeline does.
    ``deferral``: the calibrate stage's settings (temperature, score, threshold); the page then
    shows calibrated probabilities and says when it would ask the server.
    Returns the size in MB (10^6 bytes) of every file, by path relative to ``out``.
    Raises ModelError when a model file is missing, WebError when node_modules is.
    """
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise ModelError(f"{model_dir / name}: not found; the web page needs the int8 "
                             "student (export.int8: true, then `dvc repro export@student`)")
    modules = page_dir / "node_modules"
    for source in VENDOR_FILES:
        if not (modules / source).is_file():
            raise WebError(f"{modules / source}: not found; install the page's JavaScript "
                           f"packages with `make setup` (or `npm ci` in {page_dir})")
    (out / "vendor").mkdir(parents=True)
    (out / "model").mkdir()
    for name in PAGE_FILES:
        shutil.copyfile(page_dir / name, out / name)
    for source, name in VENDOR_FILES.items():
        shutil.copyfile(modules / source, out / "vendor" / name)
    settings: dict[str, Any] = {"labels": list(labels), "max_length": max_length}
    if deferral is not None:
        settings["deferral"] = {k: deferral[k] for k in ("temperature", "score", "threshold")}
    for name in MODEL_FILES:
        if name == contract.ONNX_INT8_FILE and deferral is not None:
            with_metadata(model_dir / name, out / "model" / name,
                          {contract.DEFERRAL_METADATA: json.dumps(settings["deferral"])})
        else:
            shutil.copyfile(model_dir / name, out / "model" / name)
    write_json(out / "model" / "web.json", settings)
    return {str(p.relative_to(out)): p.stat().st_size / 1e6
            for p in sorted(out.rglob("*")) if p.is_file()}
