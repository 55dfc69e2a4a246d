"""An HTTP server that answers like a classifier API, from a local classifier folder.

It is the endpoint to try ``teacher.mode: api`` against (and the tests' real server)::

    pocketbert serve models/teacher --port 8000
    curl -s localhost:8000/ -d '{"texts": ["If the pump rattles, stop it."]}'

A POST (any path) of ``{"texts": [text, ...]}`` is answered with::

    {"labels": [name, ...],                        the model's labels in its id order
     "logits": [[x, ...], ...],                    one row per text, in that label order
     "probabilities": [{name: p, ...}, ...],       one object per text, keyed by label name
     "truncated": [bool, ...]}                     per text: longer than max_length tokens

teacher.mode api reads ``probabilities`` with its default params; ``logits`` with
``api_answer_field: logits``, ``api_scores: logits`` and ``api_labels`` set to ``labels``.
A GET answers ``{"labels": [...], "model": folder name, "batches_run": n}``. Bad requests get
a 4xx status and ``{"error": message}``.

The server is uvicorn (asyncio, h11) running a Starlette app. Waiting on sockets costs no
thread; request bodies are read as a stream and refused past MAX_BODY_BYTES; a client that
stays silent for ``timeout_s`` (before its request head is complete, between two body chunks,
or idle between requests) is cut off. Parsing, tokenization and the model run in worker
threads; the model runs one batch of BATCH_SIZE texts at a time under a first-come
first-served lock, so a short request waits for at most the batch that is running, not for a
whole long request. Each request is one access-log line on stderr (method, path, status,
number of texts, milliseconds, the batches that ran it); the texts are never logged.

Texts are truncated to ``max_length`` tokens without tokenizing all of a long text: a prefix
cut at a word boundary that grows until it yields more than max_length tokens gives the same
ids as tokenizing the whole text with truncation (see ``TruncatingEncoder``).

For tests: the environment variable POCKETBERT_SERVE_BATCH_PAUSE_S (seconds) makes every
batch hold the model lock that long, so that the order in which requests are served can be
observed without a large model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import string
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_TEXTS = 1024  # texts per request: bounds one request's memory and time
MAX_BODY_BYTES = 16 * 2**20  # 1,024 texts of a few KB each
BATCH_SIZE = 64  # texts per forward pass; the model lock is taken per batch
TIMEOUT_S = 30.0
"""seconds a client may stay silent: before its request head is complete, between two body
chunks, and idle between requests on a kept-alive connection (pocketbert serve --timeout)"""
MAX_CONNECTIONS = 1000
"open connections (idle ones included) and running requests before new requests get 503"
BACKLOG = 2048
"connections the kernel queues before the server accepts them (http.server's default: 5)"
MAX_HEADER_BYTES = 16 * 2**10
"""request line and headers: a head still incomplete past this size is refused with 400 and
the connection closed (h11's limit; a longer head that arrives whole in one read passes)"""
MAX_BUFFERED_BYTES = 4 * MAX_BODY_BYTES
"request bytes held at once over all connections (read and not yet answered); past it, 503"
MAX_JSON_CONTAINERS = 64
"lists and objects in a request body (a valid one has two): JSON parsing stays shallow"
SHUTDOWN_GRACE_S = 10.0
"on SIGINT or SIGTERM: how long running requests may take to finish before they are cancelled"
PAUSE_ENV = "POCKETBERT_SERVE_BATCH_PAUSE_S"
FALLBACK_PAUSE_S = 30.0
"""after the --fallback teacher endpoint fails, seconds during which it is not asked again:
unsure texts are then answered at once with the student's answer, marked"""

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[{,')))  # bytes that _json_shape drops
_ASCII_KEPT = re.compile(r"[!-~]")  # a printable ASCII character: never blank (fast path)


# --- the model ---------------------------------------------------------------------------------


class FairLock:
    """A lock handed out in the order it was asked for (first come, first served).

    ``threading.Lock`` wakes an arbitrary waiter, so a thread that releases and at once
    re-acquires it (a long request between its batches) can starve the others. Here each
    ``acquire`` joins a queue and the lock goes to the head of the queue. Use as a context
    manager."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        """Block until every earlier caller has had and released the lock, then take it."""
        me = object()
        with self._cond:
            self._queue.append(me)
            try:
                while self._held or self._queue[0] is not me:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the queue
                self._queue.remove(me)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        """Hand the lock to the next caller in the queue (RuntimeError if it is not held)."""
        with self._cond:
            if not self._held:
                raise RuntimeError("FairLock.release: the lock is not held")
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Cutter:
    """Where a text may be cut so that the tokens of the part before the cut are the first
    tokens of the whole text.

    A cut goes just before an ASCII whitespace character (every pre-tokenizer of the
    Hugging Face tokenizers library ends a word there, and the normalizers work character by
    character), and, for BERT's pre-tokenizer, which makes every punctuation character a word
    of its own, before an ASCII punctuation character too. A cut is never placed inside an
    added token (``[MASK]``, ``[CLS]``, ...): characters of added tokens that are matched after
    normalisation are never cut at, and for the others the text around the cut is checked."""

    def __init__(self, backend) -> None:
        from tokenizers.pre_tokenizers import BertPreTokenizer

        added = list(backend.get_added_tokens_decoder().values())
        chars = set(" \t\n\r")
        if isinstance(backend.pre_tokenizer, BertPreTokenizer):
            chars |= set(string.punctuation)
        if any(c.isspace() for token in added for c in token.content):
            chars -= set(" \t\n\r")  # an added token spans whitespace: cut at punctuation only
        chars -= {c for token in added if token.normalized for c in token.content}
        raw = [token.content for token in added if not token.normalized
               and len(token.content) > 1]
        self.raw_by_char = {c: [s for s in raw if c in s] for c in chars}
        if sum(map(len, self.raw_by_char.values())) > 256:  # many added tokens: do not check
            chars = {c for c in chars if not self.raw_by_char[c]}
        self.pattern = re.compile("[" + re.escape("".join(sorted(chars))) + "]") if chars else None

    def cut(self, text: str, start: int) -> int | None:
        """The first cut position >= ``start`` (``text[:cut]`` is the prefix), or None."""
        if self.pattern is None:
            return None
        for tries, match in enumerate(self.pattern.finditer(text, max(start, 1))):
            if tries == 64:  # a text made to defeat the cut: treat as having none
                return None
            at = match.start()
            if not any(self._straddles(text, at, s) for s in self.raw_by_char[text[at]]):
                return at
        return None

    @staticmethod
    def _straddles(text: str, at: int, token: str) -> bool:
        """Whether an occurrence of ``token`` starts before ``at`` and ends after it."""
        lo, hi = max(0, at - len(token) + 1), at + len(token) - 1
        found = text.find(token, lo, hi)
        while found != -1 and found < at:
            if found + len(token) > at:
                return True
            found = text.find(token, found + 1, hi)
        return False


class TruncatingEncoder:
    """Token ids truncated to ``max_length`` without tokenizing all of a long text.

    ``encode(texts)`` gives the ids of the transformers tokenizer's ``tokenizer(texts,
    truncation=True, max_length=max_length)["input_ids"]`` (what the pipeline feeds the model),
    but a long text is not tokenized in full: a prefix cut at a word boundary (_Cutter) is
    tokenized instead, its length doubled until it yields more than max_length tokens or is
    the whole text, so the work is proportional to max_length, not to the text. A text with no
    place to cut after its first ``first_cut_chars`` characters (e.g. one enormous word) is
    tokenized whole, once; with a tokenizer that truncates on the left, every text is.

    Thread-safe: it uses a private copy of the Rust tokenizer, set up once and never changed
    (the transformers tokenizer sets truncation on its Rust tokenizer at every call, which
    fails when two threads call it at once: "Already borrowed")."""

    def __init__(self, tokenizer, max_length: int, first_cut_chars: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()
        side = getattr(tokenizer, "truncation_side", "right")
        self.backend.enable_truncation(max_length, direction=side)
        self.cutter = _Cutter(self.backend) if side == "right" else None
        # characters of the first prefix; a BERT token averages about four
        self.first_cut_chars = first_cut_chars or max(256, 8 * max_length)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text, special tokens ([CLS], [SEP]) included, at most max_length
        each, and per text whether it was longer than max_length tokens (truncated)."""
        ids: list[list[int]] = [[] for _ in texts]
        truncated = [False] * len(texts)
        reach = dict.fromkeys(range(len(texts)), self.first_cut_chars)  # text -> prefix characters
        while reach:
            cuts = {}
            for i, chars in reach.items():
                text = texts[i]
                cut = None
                if len(text) > chars and self.cutter is not None:
                    cut = self.cutter.cut(text, chars)
                cuts[i] = cut
            encodings = self.backend.encode_batch(
                [texts[i] if cut is None else texts[i][:cut] for i, cut in cuts.items()])
            for (i, cut), encoding in zip(cuts.items(), encodings, strict=True):
                if encoding.overflowing or cut is None:
                    ids[i], truncated[i] = encoding.ids, bool(encoding.overflowing)
                    del reach[i]
                else:  # the prefix fits in max_length: the rest may hold more tokens
                    reach[i] = max(2 * reach[i], cut + 1)
        return ids, truncated


def is_onnx(path: Path) -> bool:
    """Whether ``path`` is an exported ONNX model (an .onnx file, or a folder holding the
    export stage's int8 model and no config.json) rather than a PyTorch classifier folder."""
    from pocketbert.core import contract

    if path.suffix == ".onnx":
        return True
    return (path / contract.ONNX_INT8_FILE).is_file() and not (path / "config.json").is_file()


class Classifier:
    """A sequence classifier loaded for answering: a PyTorch folder (config.json, weights,
    tokenizer), or an exported ONNX model (is_onnx: the .onnx file or the export folder, run
    by onnxruntime as `pocketbert predict` runs it, labels from its labels.json).

    For a PyTorch folder, ``labels`` are config.json's id2label names in id order. Texts are
    truncated to ``max_length`` tokens (the pipeline's tokenize.max_length gives the
    pipeline's logits).
    Loading is the pipeline's own (modeling.load_classifier: no code from the folder,
    weights-only); raises ModelError when the folder cannot be loaded or its id2label is
    unusable (gaps, repeats, generic LABEL_0 names). ``batch_pause_s`` (tests only) makes
    every batch hold the model lock that many seconds longer.

    Thread-safe: any number of threads may call ``encode``, ``logits`` and ``answer`` at once;
    tokenization runs in parallel and the model one batch at a time, in the order the batches
    asked for it (FairLock). ``batches_run`` counts the batches run since loading."""

    def __init__(self, folder: str | Path, max_length: int = 128, *,
                 batch_pause_s: float = 0.0) -> None:
        from pocketbert.core import model_folders
        from pocketbert.data import tokenization
        from pocketbert.runtime import onnx_runner, torch_runner
        from pocketbert.training import modeling

        self.folder = Path(folder)
        self.onnx = None
        if is_onnx(self.folder):  # the export stage's model: onnxruntime, no torch model
            self.onnx = onnx_runner.load_classifier(self.folder, max_length)
            names = tuple(self.onnx.labels)
            self.tokenizer = tokenization.load_tokenizer(
                self.folder if self.folder.is_dir() else self.folder.parent)
            self.batch_size = self.onnx.batch_size  # 1 for int8: no answer depends on a batch
        else:
            origin = "pocketbert serve's MODEL_DIR"
            config = model_folders.read_config(self.folder, origin)
            id2label = config.get("id2label") or {}
            try:
                names = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
            except (TypeError, ValueError):
                names = tuple(map(str, id2label.values()))  # load_classifier names the defect
            self.device = torch_runner.pick_device()
            self.model = modeling.load_classifier(self.folder, names, origin).eval().to(
                self.device)
            self.tokenizer = tokenization.load_tokenizer(self.folder)
            self.batch_size = BATCH_SIZE
        self.labels = names
        self.max_length = max_length
        self.encoder = TruncatingEncoder(self.tokenizer, max_length)
        self.batch_pause_s = batch_pause_s
        self.batches_run = 0
        self._lock = FairLock()

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """``TruncatingEncoder.encode`` with this model's tokenizer and max_length."""
        return self.encoder.encode(texts)

    def run(self, ids: list[list[int]]) -> tuple[np.ndarray, tuple[int, int]]:
        """float32 logits [len(ids), len(labels)] in input order, and the sequence numbers of
        the first and last batch that ran them ((0, 0) for no ids).

        Batches of BATCH_SIZE length-sorted rows (for an int8 ONNX model, one row: its
        activation scales are per call, onnx_runner.texts_per_call), each padded to its
        longest row; the model lock is taken per batch."""
        from pocketbert.core import batching

        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)  # [texts, labels]
        first = last = 0
        pad_id = self.tokenizer.pad_token_id
        for idx, input_ids, mask in batching.length_sorted_batches(ids, self.batch_size, pad_id):
            with self._lock:
                self.batches_run += 1
                last = self.batches_run
                first = first or last
                if self.batch_pause_s:
                    time.sleep(self.batch_pause_s)
                out[idx] = self._forward(input_ids, mask)
        return out, (first, last)

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """float32 logits [batch, labels] of one padded batch (int64 [batch, length] each)."""
        if self.onnx is not None:
            from pocketbert.runtime import onnx_runner

            session = self.onnx.session
            return session.run(None, onnx_runner.feed(session, input_ids, mask))[0]
        import torch

        batch = {"input_ids": torch.from_numpy(input_ids).to(self.device),
                 "attention_mask": torch.from_numpy(mask).to(self.device)}
        with torch.inference_mode():
            return self.model(**batch).logits.float().cpu().numpy()

    def logits(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), len(labels)], in input order."""
        return self.run(self.encode(texts)[0])[0]

    def answer(self, texts: list[str]) -> dict[str, Any]:
        """The JSON answer for ``texts`` (see the module docstring)."""
        return self.answer_and_batches(texts)[0]

    def answer_and_batches(self, texts: list[str]) -> tuple[dict[str, Any], tuple[int, int]]:
        """The JSON answer for ``texts`` and the sequence numbers of the first and last batch
        that ran them ((0, 0) for no texts; see ``run``)."""
        from pocketbert.core import evaluation

        if not texts:
            return {"labels": list(self.labels), "logits": [], "probabilities": [],
                    "truncated": []}, (0, 0)
        ids, truncated = self.encode(texts)
        logits, batches = self.run(ids)
        probs = evaluation.softmax(logits)  # float64 [texts, labels]: no underflow to 0 in fp32
        return {"labels": list(self.labels), "logits": logits.tolist(),
                "probabilities": [dict(zip(self.labels, row.tolist(), strict=True))
                                  for row in probs],
                "truncated": truncated}, batches


# --- requests ----------------------------------------------------------------------------------


class Refused(Exception):
    """A request to answer with HTTP ``status`` (4xx or 503) and ``{"error": message}``;
    ``close`` ends the connection after the answer (the rest of the body is not read)."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def parse_texts(body: bytes | bytearray) -> list[str]:
    """The texts of a request body ``{"texts": [text, ...]}`` (UTF-8 JSON).

    Before parsing, the lists, objects, commas and strings outside strings are counted
    (_json_shape: bytes methods and numpy, no Python loop): JSON of millions of tiny values
    (``[[],[],...]``) would take tens of times its size in Python objects, and deep nesting
    would exhaust the parser's recursion. Raises Refused: 400 when the body is not such JSON,
    holds over MAX_JSON_CONTAINERS lists and objects (or nests too deeply), a text is not a
    string or holds nothing a tokenizer keeps (dataset.blank_reason); 413 with more than
    MAX_TEXTS texts (or as many other values)."""
    from pocketbert.data import dataset

    usage = 'send a JSON body {"texts": [text, ...]}'
    containers, commas, strings = _json_shape(body)
    if containers > MAX_JSON_CONTAINERS:
        raise Refused(400, f"the JSON nests too deeply or holds over {MAX_JSON_CONTAINERS} "
                            f"lists and objects; {usage}")
    if max(commas, strings) > MAX_TEXTS + MAX_JSON_CONTAINERS:
        raise Refused(413, f"the JSON holds over {MAX_TEXTS} texts (or other values); send at "
                            f"most {MAX_TEXTS} texts per request")
    try:
        texts = json.loads(body)["texts"]
    except RecursionError:  # not reached with MAX_JSON_CONTAINERS under the recursion limit
        raise Refused(400, f"the JSON nests too deeply; {usage}") from None
    except (ValueError, KeyError, TypeError, IndexError):
        raise Refused(400, usage) from None
    if not isinstance(texts, list):
        raise Refused(400, '"texts" must be a list of strings')
    if len(texts) > MAX_TEXTS:
        raise Refused(413, f"{len(texts)} texts; send at most {MAX_TEXTS} per request")
    if not all(isinstance(t, str) for t in texts):
        raise Refused(400, '"texts" must be a list of strings')
    for i, text in enumerate(texts):  # the same rule as the CSV loader and predict
        reason = None if _ASCII_KEPT.search(text) else dataset.blank_reason(text)
        if reason is not None:
            raise Refused(400, f'"texts"[{i}] is empty after normalisation: it holds '
                                f"{reason}; send a sentence or leave it out")
    return texts


def _json_shape(body: bytes | bytearray) -> tuple[int, int, int]:
    """How many lists and objects (``[`` and ``{``), commas and strings a JSON text holds
    outside its strings, without parsing it: escaped backslashes and quotes are removed,
    every byte but ``"[{,`` dropped, then quote parity (numpy, over at most the body's size
    in bytes) tells which of the rest lie outside strings. Exact for valid JSON; for invalid
    JSON some counts (the parser refuses it anyway)."""
    unescaped = bytes(body).replace(b"\\\\", b"").replace(b'\\"', b"")
    chars = np.frombuffer(unescaped.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    del unescaped
    quotes = chars == ord('"')  # [kept bytes]
    outside = (np.cumsum(quotes, dtype=np.uint8) & 1) == 0  # parity survives uint8 wrap-around
    containers = np.count_nonzero(outside & ((chars == ord("[")) | (chars == ord("{"))))
    commas = np.count_nonzero(outside & (chars == ord(",")))
    return int(containers), int(commas), int(np.count_nonzero(quotes)) // 2


class _App:
    """The Starlette application answering from one Classifier (see the module docstring)."""

    def __init__(self, classifier: Classifier, timeout_s: float, cascade=None) -> None:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        self.classifier = classifier
        self.cascade = cascade  # apps.cascade.Cascade, or None: every text answered here
        self.timeout_s = timeout_s
        self.buffered = 0  # request bytes held now (only the event loop's thread changes it)
        self.starlette = Starlette(
            routes=[Route("/{path:path}", self.endpoint, methods=["GET", "POST"])],
            exception_handlers={HTTPException: self.http_error})

    async def __call__(self, scope, receive, send) -> None:
        """ASGI entry: the Starlette app, and one access-log line per HTTP request."""
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        start = time.perf_counter()
        note = scope["pocketbert"] = {"status": 500, "texts": 0, "batches": (0, 0)}

        async def send_noting_status(message) -> None:
            if message["type"] == "http.response.start":
                note["status"] = message["status"]
            await send(message)

        try:
            await self.starlette(scope, receive, send_noting_status)
        except Exception as exc:  # a bug: one line, the server keeps answering
            log.error("internal error answering %s %s: %s: %s", scope["method"],
                      _shown_path(scope), type(exc).__name__, exc)
        except asyncio.CancelledError:  # stopping, SHUTDOWN_GRACE_S passed: the task ends here
            note["status"] = 503
        finally:
            ms = (time.perf_counter() - start) * 1000
            first, last = note["batches"]
            log.info("%s %s %d %d texts %.1f ms batches %s", scope["method"], _shown_path(scope),
                     note["status"], note["texts"], ms, f"{first}-{last}" if first else "-")

    async def http_error(self, request, exc) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    async def endpoint(self, request) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, Response

        if request.method in ("GET", "HEAD"):
            status = {"labels": list(self.classifier.labels),
                      "model": self.classifier.folder.name,
                      "batches_run": self.classifier.batches_run}
            if self.cascade is not None:
                status["cascade"] = self.cascade.counts()
            return JSONResponse(status)
        held = [0]
        try:
            body = await self.read_body(request, held)
            body_out, count, batches = await run_in_threadpool(self.respond, body)
            del body
            request.scope["pocketbert"].update(texts=count, batches=batches)
            return Response(body_out, 200, media_type="application/json")
        except Refused as refused:
            headers = {"Connection": "close"} if refused.close else {}
            if refused.status == 503:
                headers["Retry-After"] = "1"
            return JSONResponse({"error": refused.message}, refused.status, headers=headers)
        except ClientDisconnect:  # the client left: nobody to answer, nothing to say
            return Response(b"", 499)
        finally:
            self.buffered -= held[0]

    async def read_body(self, request, held: list[int]) -> bytearray:
        """The request body, read as a stream; ``held[0]`` counts the bytes taken from
        MAX_BUFFERED_BYTES (the caller gives them back).

        Raises Refused: 411 without Content-Length or chunked encoding, 413 past
        MAX_BODY_BYTES (declared or streamed: reading stops at the limit), 408 when no byte
        comes for timeout_s, 503 when all connections together hold MAX_BUFFERED_BYTES.
        Raises starlette's ClientDisconnect when the client leaves."""
        import anyio
        from starlette.requests import ClientDisconnect

        declared = request.headers.get("content-length")
        if declared is None and "transfer-encoding" not in request.headers:
            raise Refused(411, 'send a Content-Length header and a JSON body {"texts": [...]}')
        too_large = f"body over {MAX_BODY_BYTES} bytes; send fewer texts per request"
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise Refused(413, too_large, close=True)  # (h11 already refuses non-digits)
        body = bytearray()
        while True:
            with anyio.move_on_after(self.timeout_s) as scope:
                message = await request.receive()
            if scope.cancelled_caught:
                raise Refused(408, f"no body bytes for {self.timeout_s:g} s", close=True)
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > MAX_BODY_BYTES:
                raise Refused(413, too_large, close=True)
            if self.buffered + len(chunk) > MAX_BUFFERED_BYTES:
                raise Refused(503, "the server holds too many large requests; retry shortly",
                               close=True)
            self.buffered += len(chunk)
            held[0] += len(chunk)
            body += chunk
            if not message.get("more_body", False):
                return body

    def respond(self, body: bytearray) -> tuple[bytes, int, tuple[int, int]]:
        """In a worker thread: the answer's JSON bytes, the number of texts and the batches
        that ran them. Raises Refused (parse_texts)."""

        texts = parse_texts(body)
        answer, batches = self.classifier.answer_and_batches(texts)
        if self.cascade is not None and texts:
            probs = np.array([[p[name] for name in answer["labels"]]
                              for p in answer["probabilities"]])  # [texts, labels]
            routed = self.cascade.route(texts, probs)
            if routed.failed:  # once per failure: then the endpoint rests (Cascade)
                log.warning("%s", routed.note)  # (texts are never logged)
            answer.update({
                "probabilities": [dict(zip(answer["labels"], row.tolist(), strict=True))
                                  for row in routed.probabilities],
                "calibrated_probabilities": [
                    dict(zip(answer["labels"], row.tolist(), strict=True))
                    for row in routed.calibrated],
                "deferred": routed.deferred, "answered_by": routed.answered_by})
        elif self.cascade is not None:
            answer.update({"calibrated_probabilities": [], "deferred": [], "answered_by": []})
        return json.dumps(answer).encode("utf-8"), len(texts), batches


def _shown_path(scope: dict[str, Any]) -> str:
    """The request path as sent (percent-encoded: no control characters), at most 100
    characters, for the access log."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    shown = raw.decode("ascii", "replace")
    return shown if len(shown) <= 100 else shown[:99] + "…"


# --- the server --------------------------------------------------------------------------------


def _protocol_class():
    """uvicorn's h11 protocol with a deadline on request heads.

    uvicorn closes a kept-alive connection that stays idle for timeout_keep_alive, but a new
    connection that sends nothing, or a client that sends half a request head, is waited for
    forever. Here a connection is closed when the head of its next request is not complete
    within timeout_keep_alive of the connection opening or of the previous response; a
    request head refused by h11 (bad Content-Length, head too large) is one access-log line."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _HeadTimeoutProtocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            if not self.transport.is_closing():
                self._head_timer = self.loop.call_later(self.timeout_keep_alive,
                                                        self._head_timeout, self.cycle)

        def _head_timeout(self, cycle) -> None:
            self._head_timer = None
            in_request = self.cycle is not cycle or (cycle is not None
                                                     and not cycle.response_complete)
            if not in_request and not self.transport.is_closing():
                if self.conn.our_state not in (h11.ERROR, h11.CLOSED):
                    with contextlib.suppress(h11.LocalProtocolError):
                        self.conn.send(h11.ConnectionClosed())
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            log.info("- - 400 0 texts 0.0 ms batches - (the request head is not valid HTTP)")
            super().send_400_response(msg)

    return _HeadTimeoutProtocol


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one). Raises OSError
    (socket.gaierror for an unknown host)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address[:2], family=family, backlog=BACKLOG)


class ClassifierServer:
    """uvicorn answering from a Classifier, on a socket bound at construction.

    ``serve_forever()`` blocks until ``shutdown()`` (from another thread) or, in the main
    thread of ``serve``, SIGINT/SIGTERM; ``server_close()`` closes the socket. ``url`` is the
    bound address, ``http://host:port/``."""

    def __init__(self, classifier: Classifier, host: str = "127.0.0.1", port: int = 8000,
                 timeout_s: float = TIMEOUT_S, cascade=None) -> None:
        import uvicorn

        self.classifier = classifier
        self.socket = _bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            _App(classifier, timeout_s, cascade),
            http=_protocol_class(),  # h11 (pure Python), with the request-head deadline
            loop="asyncio",  # the standard library's loop: no uvloop dependency
            lifespan="off",  # nothing to start or stop besides the model, loaded already
            log_config=None,  # serve() sets up logging; a library caller keeps its own
            access_log=False,  # _App logs each request with its texts count and time
            proxy_headers=False,  # no proxy in front: never trust X-Forwarded-For
            server_header=False,  # do not advertise the server's software
            backlog=BACKLOG,  # the kernel's accept queue: bursts of clients are not reset
            timeout_keep_alive=timeout_s,  # idle kept-alive connections (and request heads)
            limit_concurrency=MAX_CONNECTIONS,  # past it: 503, not unbounded memory
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # slow, huge heads: 400
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # a stop never hangs on a client
        )
        self._server = _uvicorn_server(config)
        self._stopped = threading.Event()
        self._running = False

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Answer requests until shutdown() or should_exit; returns when all connections are
        closed (requests still running after SHUTDOWN_GRACE_S are cancelled)."""
        self._running = True
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """Ask serve_forever to return, without waiting (safe from a signal handler)."""
        if self._server.should_exit:
            self._server.force_exit = True  # a second stop: do not wait for clients
        self._server.should_exit = True

    def shutdown(self) -> None:
        """Stop serve_forever and wait until it has returned (at most SHUTDOWN_GRACE_S plus a
        few seconds)."""
        self.stop()
        if self._running:
            self._stopped.wait(SHUTDOWN_GRACE_S + 5)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def _uvicorn_server(config):
    """uvicorn.Server without its own signal handling: it would re-raise the signal after
    stopping, ending the process with SIGTERM's status; serve installs handlers that stop the
    server and let the process exit with status 0."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


def make_server(classifier: Classifier, host: str = "127.0.0.1", port: int = 8000,
                timeout_s: float = TIMEOUT_S, cascade=None) -> ClassifierServer:
    """A bound, not yet serving server (port 0 picks a free port: see ``server.url``);
    ``cascade`` (apps.cascade.Cascade): defer unsure texts, see ``serve``.

    Raises OSError when the address cannot be bound (socket.gaierror: unknown host)."""
    return ClassifierServer(classifier, host, port, timeout_s, cascade)


@contextlib.contextmanager
def running(classifier: Classifier, host: str = "127.0.0.1", port: int = 0,
            timeout_s: float = TIMEOUT_S) -> Iterator[str]:
    """Serve ``classifier`` from a background thread for a with-block; yields its URL
    ``http://host:port/`` (port 0: a free one) once it accepts connections."""
    server = make_server(classifier, host, port, timeout_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SHUTDOWN_GRACE_S + 5)


def _setup_logging() -> None:
    """Access lines and uvicorn's warnings on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    # a bad request head is already an access line (_protocol_class)
    handler.addFilter(lambda record: record.getMessage() != "Invalid HTTP request received.")
    for name, level in ((__name__, logging.INFO), ("uvicorn.error", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
        logger.propagate = False


def _return_large_blocks_to_the_system() -> None:
    """With glibc, fix malloc's mmap threshold at its default, 128 KiB.

    glibc raises the threshold each time a block allocated with mmap is freed (up to 32 MiB),
    after which blocks the size of a request body come from per-thread heaps that keep the
    memory once freed: each worker thread that parsed a large body would keep tens of MiB.
    A fixed threshold returns every large block to the system when it is freed. Nothing
    happens with another C library."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (malloc.h)


def _raise_open_files_limit() -> None:
    """Let the process hold MAX_CONNECTIONS sockets: raise the soft limit on open files up
    to the hard limit (Linux and macOS; nothing elsewhere)."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_length: int = 128, timeout_s: float = TIMEOUT_S, *,
          calibration: str | Path | None = None, threshold: float | None = None,
          fallback: str | None = None) -> None:
    """Answer classifier requests from ``model_dir`` on http://host:port/ until SIGINT or
    SIGTERM (then return normally). Prints one line with the bound URL on stdout; logs one
    line per request on stderr. ``timeout_s``: see TIMEOUT_S.

    Deferral settings (apps.cascade.settings_for: the file ``calibration``, else those the
    ONNX model carries, else the checkout's for its int8 student; ``threshold`` replaces
    theirs) add to every answer, per text, ``deferred``, ``answered_by`` and the
    ``calibrated_probabilities``; with ``fallback`` (a teacher endpoint's URL), the deferred
    texts are sent there (apps.cascade.Cascade) and ``probabilities`` are its answer for them
    (``logits`` stay the served model's). A GET then counts texts answered locally, sent and
    left unanswered by the endpoint.

    Raises ModelError when the folder cannot be loaded, DeferralError for unusable or missing
    deferral settings (``threshold`` or ``fallback`` without any) or URL, OSError when the
    port is taken."""
    from pocketbert.apps import cascade as cascades

    pause = float(os.environ.get(PAUSE_ENV) or 0)
    model = Path(model_dir)
    classifier = Classifier(model, max_length, batch_pause_s=pause)
    metadata = (None if classifier.onnx is None
                else classifier.onnx.session.get_modelmeta().custom_metadata_map)
    settings = cascades.settings_for(model, calibration, metadata)
    if settings is None and (threshold is not None or fallback is not None):
        raise cascades.DeferralError(
            f"{'--threshold' if threshold is not None else '--fallback'} needs deferral "
            f"settings: none found for {model} (serve the int8 student, "
            "models/export/student, or pass --calibration PATH)")
    cascade = None
    if settings is not None:
        if threshold is not None:
            cascades.set_threshold(settings, threshold, len(classifier.labels))
        teacher = None if fallback is None else cascades.teacher_params(model, fallback)
        cascade = cascades.Cascade(settings, classifier.labels, teacher,
                                   pause_after_failure_s=FALLBACK_PAUSE_S)
    server = make_server(classifier, host, port, timeout_s, cascade)
    _setup_logging()
    _raise_open_files_limit()
    _return_large_blocks_to_the_system()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: server.stop())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    deferral = "" if cascade is None else (
        f"; unsure texts ({cascades.rule_note(settings)}) "
        + (f"sent to {fallback}" if fallback else "marked deferred"))
    print(f"serving {model_dir} (labels {', '.join(server.classifier.labels)}) at {server.url}"
          f"{deferral}; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
