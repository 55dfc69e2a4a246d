"""A small HTTP server that answers like a classifier API, from a local classifier folder.

It is the endpoint to try ``teacher.mode: api`` against (and the tests' real server)::

    pocketbert serve models/teacher --port 8000
    curl -s localhost:8000/ -d '{"texts": ["If the pump rattles, stop it."]}'

A POST (any path) of ``{"texts": [text, ...]}`` is answered with::

    {"labels": [name, ...],                        the model's labels in its id order
     "logits": [[x, ...], ...],                    one row per text, in that label order
     "probabilities": [{name: p, ...}, ...]}       one object per text, keyed by label name

teacher.mode api reads ``probabilities`` with its default params; ``logits`` with
``api_answer_field: logits``, ``api_scores: logits`` and ``api_labels`` set to ``labels``.
A GET answers ``{"labels": [...], "model": folder}``. Bad requests get HTTP 400 (413 when too
large) and ``{"error": message}``. Standard library ThreadingHTTPServer; the model answers one
request at a time.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert import checkpoints, dataset, evaluation, modeling, tokenization

log = logging.getLogger(__name__)

MAX_TEXTS = 1024  # texts per request: bounds one request's memory and time
MAX_BODY_BYTES = 16 * 2**20  # 1,024 texts of a few KB each
BATCH_SIZE = 64  # texts per forward pass inside one request


class Classifier:
    """A sequence classifier folder (config.json, weights, tokenizer) loaded for answering.

    ``labels`` are config.json's id2label names in id order; texts are truncated to
    ``max_length`` tokens (the pipeline's tokenize.max_length gives the pipeline's logits).
    Loading is the pipeline's own (modeling.load_classifier: no code from the folder,
    weights-only); raises ModelError when the folder cannot be loaded or its id2label is
    unusable (gaps, repeats, generic LABEL_0 names)."""

    def __init__(self, folder: str | Path, max_length: int = 128) -> None:
        self.folder = Path(folder)
        origin = "pocketbert serve's MODEL_DIR"
        config = checkpoints.read_config(self.folder, origin)
        id2label = config.get("id2label") or {}
        try:
            names = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
        except (TypeError, ValueError):
            names = tuple(map(str, id2label.values()))  # load_classifier names the defect
        self.model = modeling.load_classifier(self.folder, names, origin).eval()
        self.labels = names
        self.tokenizer = tokenization.load_tokenizer(self.folder)
        self.max_length = max_length
        self._lock = threading.Lock()  # one forward pass at a time

    def logits(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), len(labels)], in input order."""
        from pocketbert import inference

        ids = tokenization.encode(self.tokenizer, texts, self.max_length)["input_ids"]
        with self._lock:
            logits, _ = inference.predict_logits(self.model, ids, BATCH_SIZE,
                                                 self.tokenizer.pad_token_id, progress=False)
        return logits

    def answer(self, texts: list[str]) -> dict[str, Any]:
        """The JSON answer for ``texts`` (see the module docstring)."""
        logits = self.logits(texts)
        probs = evaluation.softmax(logits)  # float64 [texts, labels]: no underflow to 0 in fp32
        return {"labels": list(self.labels), "logits": logits.tolist(),
                "probabilities": [dict(zip(self.labels, row.tolist(), strict=True))
                                  for row in probs]}


class ClassifierServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the Classifier that its handlers answer from."""

    daemon_threads = True  # a stuck client never keeps the process alive

    def __init__(self, address: tuple[str, int], classifier: Classifier) -> None:
        self.classifier = classifier
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ClassifierServer

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _texts(self) -> list[str]:
        """The request's texts; raises _Refused with the status and message on a bad one."""
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header") from None
        if size > MAX_BODY_BYTES:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"body over {MAX_BODY_BYTES} bytes; send fewer texts per request")
        try:
            texts = json.loads(self.rfile.read(size))["texts"]
        except (ValueError, KeyError, TypeError):
            raise _Refused(HTTPStatus.BAD_REQUEST,
                           'send a JSON body {"texts": [text, ...]}') from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _Refused(HTTPStatus.BAD_REQUEST, '"texts" must be a list of strings')
        for i, text in enumerate(texts):  # the same rule as the CSV loader and predict
            reason = dataset.blank_reason(text)
            if reason is not None:
                raise _Refused(HTTPStatus.BAD_REQUEST,
                               f'"texts"[{i}] is empty after normalisation: it holds {reason}; '
                               "send a sentence or leave it out")
        if len(texts) > MAX_TEXTS:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"{len(texts)} texts; send at most {MAX_TEXTS} per request")
        return texts

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        try:
            texts = self._texts()
        except _Refused as refused:
            self._send(refused.status, {"error": refused.message})
            return
        answer = self.server.classifier.answer(texts) if texts else {
            "labels": list(self.server.classifier.labels), "logits": [], "probabilities": []}
        self._send(HTTPStatus.OK, answer)

    def do_GET(self) -> None:  # noqa: N802
        self._send(HTTPStatus.OK, {"labels": list(self.server.classifier.labels),
                                   "model": str(self.server.classifier.folder)})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        log.info("%s %s", self.address_string(), format % args)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def make_server(classifier: Classifier, host: str = "127.0.0.1", port: int = 8000,
                ) -> ClassifierServer:
    """A bound, not yet serving server (port 0 picks a free port: see ``server.url``)."""
    return ClassifierServer((host, port), classifier)


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_length: int = 128) -> None:
    """Answer classifier requests from ``model_dir`` on http://host:port/ until interrupted.

    Raises ModelError when the folder cannot be loaded, OSError when the port is taken."""
    server = make_server(Classifier(model_dir, max_length), host, port)
    print(f"serving {model_dir} (labels {', '.join(server.classifier.labels)}) at {server.url}; "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
