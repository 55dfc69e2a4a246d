"""web: the student as a static web page that runs in the browser, offline.

One page (web/index.html, web/app.js) with its libraries (tokenizers.js, onnxruntime-web's
WebAssembly build, from web/node_modules as locked in web/package-lock.json), the int8 student
ONNX model, its tokenizer files and labels, and the calibrate stage's deferral settings (the page
shows calibrated probabilities and says when it would ask the server). Serve the folder with
`make web`.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Sequence

from pocketbert.apps import web
from pocketbert.core import contract, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.data import dataset, tokenization

PARAMS = ()
INPUTS = ("model", "page", "calibration")
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    labels = dataset.read_labels(inputs["model"] / contract.LABELS_FILE)
    deferral = contract.read_calibration(inputs["calibration"], labels)
    with atomic_path(outputs["out"], directory=True) as tmp:
        files = web.build(inputs["model"], labels, tokenization.read_max_length(inputs["model"]),
                          tmp,
                          page_dir=inputs["page"], deferral=deferral)
    metrics: dict = {
        # what a browser downloads on the first visit (uncompressed; nothing else is fetched)
        "download_size_mb": sum(files.values()),
        "model_size_mb": files["model/model.int8.onnx"],
        # from a server that gzips responses (zlib's default level 6); `make web` does not
        "download_size_gzip_mb": sum(len(gzip.compress(p.read_bytes(), compresslevel=6))
                                     for p in outputs["out"].rglob("*") if p.is_file()) / 1e6,
        **{f"files.{name}.size_mb": size for name, size in files.items()},
    }
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
