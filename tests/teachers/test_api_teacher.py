"""teacher.mode api against real HTTP servers on 127.0.0.1: pocketbert's own classifier server
(serving.py, a tiny in-process BERT) and a scripted server that misbehaves on cue."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import (
    LABELS,
    files_under,
    secret_hits,
    sentences,
    tiny_classifier,
    tiny_tokenizer,
)

from pocketbert.apps import serving
from pocketbert.core import params
from pocketbert.core.errors import ApiError, ModelError, ParamsError
from pocketbert.teachers import api

TEXTS = [text for label in LABELS for text in sentences(label)]  # 40 distinct texts
BATCH = 4
# an API key that must never reach a file, a log or an error; with characters that URL
# encoding changes, so that its URL-encoded form differs from it
SECRET = "s3cr3t/Token+9f8e=7d"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> serving.Classifier:
    folder = tmp_path_factory.mktemp("served")
    tokenizer = tiny_tokenizer()
    tiny_classifier(len(tokenizer)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return serving.Classifier(folder, max_length=32)


@pytest.fixture(scope="module")
def table(classifier: serving.Classifier) -> dict[str, dict]:
    """text -> the classifier server's answer entries for it (the scripted server's 'ok')."""
    answer = classifier.answer(TEXTS)
    return {text: {"probabilities": answer["probabilities"][i], "logits": answer["logits"][i]}
            for i, text in enumerate(TEXTS)}


def local_log_softmax(classifier: serving.Classifier, texts: list[str]) -> np.ndarray:
    """The reference: the model run directly, unbatched by the server, log-softmaxed."""
    encoded = classifier.tokenizer(texts, padding=True, truncation=True, max_length=32,
                                   return_tensors="pt")
    with torch.inference_mode():
        logits = classifier.model(**encoded).logits  # [texts, labels]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def api_params(url: str, **overrides) -> params.TeacherParams:
    """Params for a fast test run: small batches, short waits, no pacing to speak of."""
    values = {"mode": "api", "api_url": url, "api_batch_size": BATCH, "api_concurrency": 2,
              "api_requests_per_second": 1000.0, "api_timeout_s": 5.0, "api_max_retries": 2,
              "api_backoff_s": 0.01, "api_max_wait_s": 2.0}
    return params.TeacherParams(**{**values, **overrides})


class Served:
    """Run a server's serve_forever in a thread for the duration of a with-block."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        host, port = server.server_address[:2]
        self.port, self.url = port, f"http://{host}:{port}/predict"

    def __enter__(self) -> Served:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the scripted server: each request takes the next action, then 'ok' ------------------------

Action = Callable[[BaseHTTPRequestHandler, list[str]], None]


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         headers: dict[str, str] | None = None) -> None:
    """Answer with ``status``, a JSON content type, ``headers`` and ``body``."""
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def ok(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
    """Answer the classifier's own probabilities and logits of ``texts`` (the server's table)."""
    rows = [handler.server.table[t] for t in texts]
    send(handler, 200, json.dumps({"probabilities": [r["probabilities"] for r in rows],
                                   "logits": [r["logits"] for r in rows]}).encode())


def status(code: int, body: str = '{"error": "busy"}', **headers: str) -> Action:
    """An action answering ``code`` with ``body``; header names with '_' for '-'."""
    return lambda handler, texts: send(handler, code, body.encode(),
                                       {k.replace("_", "-"): v for k, v in headers.items()})


def slow(seconds: float) -> Action:
    """An action answering 'ok' after sleeping ``seconds``."""
    def act(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
        time.sleep(seconds)
        with contextlib.suppress(OSError):  # the client may have given up waiting
            ok(handler, texts)
    return act


def drop(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
    """Close the connection without an answer."""
    handler.close_connection = True


def die(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
    """Drop this request unanswered and go down for good: every later request is dropped too
    (set at once, so a retry that arrives before the shutdown below is not answered), and the
    listening socket is closed (on a held_port, connections are refused from then on)."""
    server = handler.server
    with server.lock:
        server.down = True
    threading.Thread(target=lambda: (server.shutdown(), server.server_close())).start()
    drop(handler, texts)


def unanswered(at_most_s: float) -> Action:
    """Answer nothing until the client hangs up (httpx closes a connection it timed out on),
    for at most ``at_most_s``: such a request is answered after the client's timeout however
    slow or fast the machine is, unlike one that sleeps a fixed time."""
    def act(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
        deadline = time.monotonic() + at_most_s
        sock = handler.connection
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0.05)[0]:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        break  # end of stream: the client hung up
                except OSError:
                    break  # reset: hung up too
                time.sleep(0.05)  # bytes of another request (httpx does not pipeline): wait on
        handler.close_connection = True
    return act


def hold(until_in_flight: int, at_most_s: float) -> Action:
    """Keep the request open until ``until_in_flight`` requests have been open at once (or for
    at most ``at_most_s``), then answer 'ok'. A request stops counting as open before its
    answer is sent, and the client cannot start a request in its place before it has the
    answer: the server never counts more open requests than the client has."""
    def act(handler: BaseHTTPRequestHandler, texts: list[str]) -> None:
        server = handler.server
        with server.changed:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            server.overlapped |= server.in_flight >= until_in_flight
            server.changed.notify_all()
            server.changed.wait_for(lambda: server.overlapped, at_most_s)
            server.in_flight -= 1
        ok(handler, texts)
    return act


class ScriptedServer(ThreadingHTTPServer):
    """Answers each POST with the next scripted action ('ok' once the script is used up;
    'drop' once a 'die' has run) and records the request's headers, body and arrival time
    (time.monotonic(), taken before the body is read). ``port`` (default: a free one) may be a
    held_port: the server then sets SO_REUSEPORT to listen there."""

    daemon_threads = True

    def __init__(self, table: dict[str, dict], script: list[Action], port: int = 0) -> None:
        self.table, self.script, self.requests = table, script, []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified on each request and by hold
        self.down = False
        self.in_flight = self.max_in_flight = 0
        self.overlapped = False
        self.allow_reuse_port = port != 0
        super().__init__(("127.0.0.1", port), ScriptedHandler)


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.changed:
            self.server.requests.append({"headers": dict(self.headers), "body": body,
                                         "arrived": arrived})
            self.server.changed.notify_all()
            action = drop if self.server.down else \
                self.server.script.pop(0) if self.server.script else ok
        action(self, body["texts"])

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def scripted(table: dict[str, dict], *script: Action) -> Served:
    """A ScriptedServer on a free port with these actions, to run in a with-block."""
    return Served(ScriptedServer(table, list(script)))


# --- a healthy endpoint ------------------------------------------------------------------------


def test_healthy_server_gives_the_local_teachers_log_probabilities(classifier, tmp_path):
    texts = [*TEXTS, TEXTS[0]]  # a repeated text is asked once
    with Served(serving.make_server(classifier, port=0)) as served:
        logits, stats = api.teacher_logits(texts, LABELS, api_params(served.url), tmp_path)
        again, stats2 = api.teacher_logits(texts, LABELS, api_params(served.url), tmp_path)
    reference = local_log_softmax(classifier, texts)
    assert logits.shape == (41, 4) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference, atol=1e-5, rtol=0)
    # stored rows are logits for distillation: their softmax is the API's probabilities
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, atol=1e-5)
    assert stats.metrics() == {"api.calls": 10, "api.retries": 0, "api.cache_hits": 0,
                               "api.texts_sent": 40}
    assert (stats2.calls, stats2.cache_hits, stats2.texts_sent) == (0, 40, 0)
    np.testing.assert_array_equal(again, logits)


@pytest.mark.parametrize("form", ["probabilities keyed by name", "logits in declared order"])
def test_answers_are_reordered_into_the_pipelines_label_order(classifier, tmp_path, form):
    pipeline_labels = tuple(reversed(LABELS))  # the server answers in LABELS order
    kw = ({} if form.startswith("probabilities") else
          {"api_answer_field": "logits", "api_scores": "logits", "api_labels": LABELS})
    with Served(serving.make_server(classifier, port=0)) as served:
        logits, _ = api.teacher_logits(TEXTS, pipeline_labels, api_params(served.url, **kw),
                                               tmp_path)
    reference = local_log_softmax(classifier, TEXTS)[:, ::-1]
    if kw:  # raw logits: compare after log-softmax
        logits = torch.log_softmax(torch.from_numpy(logits).double(), -1).numpy()
    np.testing.assert_allclose(logits, reference, atol=1e-5, rtol=0)


def test_hugging_face_label_score_lists_and_rounded_probabilities_are_read():
    p = api_params("http://127.0.0.1:9/")
    entry = [{"label": "notice", "score": 0.5}, {"label": "condition", "score": 0.25},
             {"label": "process", "score": 0.25}, {"label": "constraint", "score": 0.0}]
    row = api.scores_row(entry, LABELS, p)
    assert row[0] == pytest.approx(math.log(0.25)) and row[2] == pytest.approx(math.log(0.5))
    assert row[1] == pytest.approx(math.log(api.MIN_PROBABILITY))  # finite, not -inf


# --- failures ------------------------------------------------------------------------------------


def test_resume_after_the_server_dies_asks_only_for_the_rest(classifier, table, tmp_path,
                                                            held_port):
    # The answers are cached per URL, so the endpoint must come back at the same address. The
    # port stays held from start to end (held_port): while the endpoint is down it refuses
    # connections, and no other program can take it in between.
    with Served(ScriptedServer(table, [ok, ok, ok, die], port=held_port)) as first:
        p = api_params(first.url, api_concurrency=1, api_timeout_s=2.0)
        with pytest.raises(ApiError) as info:
            api.teacher_logits(TEXTS, LABELS, p, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{first.url}: cannot reach the endpoint")
    assert "after 3 tries; start the endpoint, or fix teacher.api_url" in message
    with pytest.raises(httpx.ConnectError):  # down: refused, not answered by anyone else
        httpx.post(first.url, json={"texts": TEXTS[:1]}, timeout=5)
    cache = api.AnswerCache(tmp_path, first.url, "texts", "probabilities")
    assert sorted(cache.get(TEXTS)) == sorted(TEXTS[:12])  # the three answered batches
    cache.close()
    # the same endpoint back up, same address (answers: the classifier's own, as before)
    with Served(ScriptedServer(table, [], port=held_port)) as second:
        logits, stats = api.teacher_logits(TEXTS, LABELS, p, tmp_path)
        asked = [text for r in second.server.requests for text in r["body"]["texts"]]
    assert second.url == first.url
    assert (stats.cache_hits, stats.texts_sent, stats.calls) == (12, 28, 7)
    assert sorted(asked) == sorted(TEXTS[12:])  # only the rest went out
    np.testing.assert_allclose(logits, local_log_softmax(classifier, TEXTS), atol=1e-5, rtol=0)


def test_429_waits_as_long_as_retry_after_says(table, tmp_path):
    with scripted(table, status(429, Retry_After="1")) as served:
        start = time.monotonic()
        _, stats = api.teacher_logits(TEXTS[:8], LABELS,
                                              api_params(served.url, api_concurrency=1), tmp_path)
        waited = time.monotonic() - start
    assert waited >= 1.0  # back-off alone would have waited 0.01 s
    assert (stats.calls, stats.retries, stats.texts_sent) == (3, 1, 8)


def test_retry_after_longer_than_allowed_stops_at_once(table, tmp_path):
    with scripted(table, status(429, Retry_After="120")) as served, pytest.raises(
            ApiError, match=r"HTTP 429: .*asks to wait 120 s \(Retry-After\), more than "
                            r"teacher.api_max_wait_s=2.0"):
        api.teacher_logits(TEXTS[:4], LABELS, api_params(served.url), tmp_path)


def test_500_then_success(table, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pocketbert.teachers.api")
    with scripted(table, status(500), status(503)) as served:
        logits, stats = api.teacher_logits(TEXTS[:4], LABELS,
                                           api_params(served.url, api_concurrency=1), tmp_path)
    assert (stats.calls, stats.retries) == (3, 2)
    assert np.isfinite(logits).all()
    assert "HTTP 500" in caplog.text and "retry 2 of 2" in caplog.text


def test_5xx_that_persists_names_url_status_body_and_fix(table, tmp_path):
    failing = status(502, "<html>upstream gone " + "x" * 500 + "</html>")
    with scripted(table, failing, failing, failing) as served, pytest.raises(ApiError) as info:
        api.teacher_logits(TEXTS[:4], LABELS, api_params(served.url), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{served.url}: HTTP 502: '<html>upstream gone xxx")
    assert "...', after 3 tries; the endpoint keeps failing" in message
    assert len(message) < 500 and "\n" not in message


# A request the server leaves unanswered until the client hangs up times out whatever the
# machine's speed; this bounds how long a server thread waits for a client that never does.
HANG_UP_BOUND_S = 60.0


def test_slow_server_past_the_timeout_is_retried(table, tmp_path, caplog):
    # The first request is answered only after the client gave up on it (unanswered), so it
    # times out however fast the machine is. The retries are answered from a dictionary over
    # loopback, in milliseconds; api_timeout_s=1.0 leaves a busy machine a wide margin, and a
    # retry that still misses it is followed by another (api_max_retries=3): the assertions
    # count the tries rather than expect exactly two.
    caplog.set_level(logging.WARNING, logger="pocketbert.teachers.api")
    with scripted(table, unanswered(HANG_UP_BOUND_S)) as served:
        p = api_params(served.url, api_timeout_s=1.0, api_max_retries=3)
        _, stats = api.teacher_logits(TEXTS[:4], LABELS, p, tmp_path)
        seen = len(served.server.requests)
    assert stats.texts_sent == 4 and stats.calls == seen == stats.retries + 1
    assert 2 <= stats.calls <= p.api_max_retries + 1
    assert "no answer within teacher.api_timeout_s=1.0 s; retry 1 of 3" in caplog.text


def test_server_slow_every_time_fails_with_the_timeout_fix(table, tmp_path):
    never = unanswered(HANG_UP_BOUND_S)  # each try times out, however fast the machine is
    with scripted(table, never, never) as served, pytest.raises(
            ApiError, match=r"no answer within teacher.api_timeout_s=0.3 s, after 2 tries; "
                            r"raise teacher.api_timeout_s"):
        api.teacher_logits(TEXTS[:4], LABELS,
                           api_params(served.url, api_timeout_s=0.3, api_max_retries=1), tmp_path)


# --- pacing: requests per second, concurrency, back-off ------------------------------------------
# Only lower bounds on time: a slow machine can only make a run take longer. Each bound
# follows from api._Endpoint: _take_call gives request k (in the order requests take
# their slot) the start time first_slot + k / api_requests_per_second, first_slot being the
# endpoint's creation (after the test's clock reading), and sleeps until then before sending.
# A server's arrival time comes after the client sent the request. FLOAT_SLACK_S covers only
# float rounding: monotonic clock readings (float64 steps of 1e-10 s or less at uptimes up to
# weeks) and the sums of float steps of 1/rate; it is 100,000 times smaller than the smallest
# gap asserted below (0.1 s).
FLOAT_SLACK_S = 1e-6


def test_requests_per_second_spaces_the_requests_the_server_sees(table, tmp_path):
    rate, calls = 10.0, 8  # requests/s; at least (calls - 1) / rate = 0.7 s in all
    with scripted(table) as served:
        # 4 may be in flight at once: only the pacing can space the requests
        p = api_params(served.url, api_requests_per_second=rate, api_concurrency=4)
        start = time.monotonic()
        _, stats = api.teacher_logits(TEXTS[: calls * BATCH], LABELS, p, tmp_path)
        arrivals = sorted(r["arrived"] for r in served.server.requests)
    assert stats.calls == len(arrivals) == calls and stats.retries == 0
    # By the k-th arrival (sorted, from 0) k + 1 requests have arrived; one of them has slot
    # >= k, so it was sent at start + k / rate or later.
    for k, arrived in enumerate(arrivals):
        assert arrived - start >= k / rate - FLOAT_SLACK_S, (k, arrived - start)
    assert arrivals[-1] - start >= (calls - 1) / rate - FLOAT_SLACK_S


def _most_in_flight(table: dict[str, dict], tmp_path: Path, concurrency: int, batches: int,
                    overlap: int, at_most_s: float) -> int:
    """The most requests the server saw open at once in a run of ``batches`` batches with
    ``concurrency``, each request held open until ``overlap`` were open at once (at most
    ``at_most_s``)."""
    with scripted(table, *[hold(overlap, at_most_s)] * batches) as served:
        # the client waits longer than a request is held: a held request is never retried
        p = api_params(served.url, api_concurrency=concurrency, api_timeout_s=2 * at_most_s + 5.0)
        _, stats = api.teacher_logits(TEXTS[: batches * BATCH], LABELS, p, tmp_path)
        assert stats.calls == batches and stats.retries == 0
        return served.server.max_in_flight


def test_api_concurrency_caps_the_requests_in_flight(table, tmp_path):
    cap = 2
    # Each request is held open for 0.3 s unless a third one opens meanwhile: the window in
    # which a request over the cap would be seen (the pool starts its threads together, and
    # pacing at 1,000 requests/s spaces them 1 ms apart). No assertion depends on it; with the
    # cap the run takes batches / cap * 0.3 s = 0.9 s.
    seen = _most_in_flight(table, tmp_path / "capped", concurrency=cap, batches=6,
                           overlap=cap + 1, at_most_s=0.3)
    assert 1 <= seen <= cap
    # the negative control: a larger cap lets the server see more than `cap` at once (the
    # held requests are released as soon as cap + 1 are open, so the generous bound costs
    # time only on a machine that cannot open 3 requests in that time)
    wider = _most_in_flight(table, tmp_path / "wider", concurrency=4, batches=4,
                            overlap=cap + 1, at_most_s=HANG_UP_BOUND_S)
    assert wider > cap


@pytest.mark.parametrize(("backoff", "max_wait"), [(0.1, 2.0), (0.1, 0.15)])
def test_back_off_doubles_up_to_max_wait(table, tmp_path, caplog, backoff, max_wait):
    # api._Endpoint.ask, after failed attempt i (from 0) that sent no Retry-After:
    #     wait = min(p.api_backoff_s * 2**attempt, p.api_max_wait_s)
    # (no jitter; a Retry-After replaces it), time.sleep(wait), then _take_call, which can only
    # add time. The failure's answer reached the client after the request arrived, so the next
    # attempt arrives at least `wait` after this one.
    caplog.set_level(logging.WARNING, logger="pocketbert.teachers.api")
    failures = 3
    with scripted(table, *[status(503)] * failures) as served:
        p = api_params(served.url, api_concurrency=1, api_max_retries=failures,
                       api_backoff_s=backoff, api_max_wait_s=max_wait)
        _, stats = api.teacher_logits(TEXTS[:4], LABELS, p, tmp_path)
        arrivals = [r["arrived"] for r in served.server.requests]
    assert (stats.calls, stats.retries, stats.texts_sent) == (failures + 1, failures, 4)
    waits = [min(backoff * 2**i, max_wait) for i in range(failures)]
    for i, wait in enumerate(waits):
        assert arrivals[i + 1] - arrivals[i] >= wait - FLOAT_SLACK_S, (i, wait)
        assert f"retry {i + 1} of {failures} in {wait:.2f} s" in caplog.text


def test_wrong_label_names_are_one_clear_error(classifier, tmp_path):
    labels = ("condition", "constraint", "notice", "warning")
    with Served(serving.make_server(classifier, port=0)) as served, pytest.raises(
            ApiError) as info:
        api.teacher_logits(TEXTS, labels, api_params(served.url), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{served.url}: HTTP 200, but the answer for the text ")
    assert "do not match split.labels" in message and "(missing ['warning'], unknown " \
        "['process'])" in message and "labels are matched by name" in message
    assert not api.AnswerCache(tmp_path, served.url, "texts", "probabilities") \
        .get(TEXTS)  # a wrong answer is never cached


@pytest.mark.parametrize(("body", "expected"), [
    ("<html>Service Unavailable</html>",
     "HTTP 200, but the body is not JSON: '<html>Service Unavailable</html>'; check that "
     "teacher.api_url is the classifier endpoint"),
    ('{"scores": []}', "HTTP 200, but the answer has no 'probabilities' (found ['scores'])"),
    ('{"probabilities": []}', "but 'probabilities' holds 0 entries for 1 texts"),
    ('{"probabilities": [[0.1, 0.2, 0.3, 0.4]]}', "has a list without label names: "
     "'{\"probabilities\": [[0.1, 0.2, 0.3, 0.4]]}'; set teacher.api_labels"),
])
def test_malformed_answers_name_the_problem(table, tmp_path, body, expected):
    with scripted(table, status(200, body)) as served, pytest.raises(ApiError) as info:
        api.teacher_logits(TEXTS[:1], LABELS, api_params(served.url), tmp_path)
    assert str(info.value).startswith(f"{served.url}: ") and expected in str(info.value)


@pytest.mark.parametrize(("value", "shown"), [("NaN", "nan"), ("Infinity", "inf"),
                                             ("-Infinity", "-inf")])
def test_non_finite_numbers_are_refused(table, tmp_path, value, shown):
    body = ('{"probabilities": [{"condition": VALUE, "constraint": 0.1, "notice": 0.2, '
            '"process": 0.3}]}').replace("VALUE", value)  # JSON as Python's json module writes
    with scripted(table, status(200, body)) as served, pytest.raises(
            ApiError, match=rf"has the non-finite number {shown} for label 'condition': .*; "
                            r"fix the endpoint"):
        api.teacher_logits(TEXTS[:1], LABELS, api_params(served.url, api_scores="logits"),
                                   tmp_path)


def test_probabilities_that_are_not_a_distribution_are_refused():
    p = api_params("http://127.0.0.1:9/")
    with pytest.raises(api._BadEntry, match="not probabilities summing to 1"):
        api.scores_row({n: 0.9 for n in LABELS}, LABELS, p)
    with pytest.raises(api._BadEntry, match="a list without label names") as info:
        api.scores_row([0.1, 0.2, 0.3, 0.4], LABELS, p)
    assert "set teacher.api_labels" in info.value.fix


def test_client_errors_are_not_retried(table, tmp_path):
    with scripted(table, status(404, '{"detail": "Not Found"}')) as served:
        with pytest.raises(ApiError) as info:
            api.teacher_logits(TEXTS[:4], LABELS, api_params(served.url), tmp_path)
        assert len(served.server.requests) == 1
    assert str(info.value) == (f"{served.url}: HTTP 404: '{{\"detail\": \"Not Found\"}}'; "
                               "check teacher.api_url (the path, and that it takes POST)")


def test_call_cap_stops_the_run_and_keeps_what_was_answered(table, tmp_path):
    with scripted(table) as served:
        p = api_params(served.url, api_concurrency=1, api_max_calls=3)
        with pytest.raises(ApiError, match=r"stopped at teacher.api_max_calls=3 requests; the "
                                           r"answers so far are cached"):
            api.teacher_logits(TEXTS, LABELS, p, tmp_path)
        assert len(served.server.requests) == 3
        _, stats = api.teacher_logits(TEXTS[:16], LABELS, p, tmp_path)
    assert (stats.cache_hits, stats.calls) == (12, 1)


def test_api_key_goes_only_into_the_request(table, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # httpx's and httpcore's own logs included
    env = {"POCKETBERT_TEST_KEY": SECRET}
    echo = status(401, json.dumps({"error": f"invalid token Bearer {SECRET}"}))
    with scripted(table, echo) as served:
        p = api_params(served.url, api_headers={"Authorization": "Bearer ${POCKETBERT_TEST_KEY}"})
        with pytest.raises(ApiError) as refused:
            api.teacher_logits(TEXTS[:4], LABELS, p, tmp_path / "cache", env=env)
        logits, stats = api.teacher_logits(TEXTS, LABELS, p, tmp_path / "cache", env=env)
        sent = {r["headers"]["Authorization"] for r in served.server.requests}
    assert sent == {f"Bearer {SECRET}"}  # the header was sent, with every request
    assert "invalid token Bearer ***" in str(refused.value)  # the echo, redacted
    assert "check teacher.api_headers" in str(refused.value)
    out, err = capfd.readouterr()
    files = files_under(tmp_path)
    assert any(name.endswith(api.CACHE_FILE) for name in files)
    shown = {"the error": str(refused.value), "stdout": out, "stderr": err,
             "the log": caplog.text, "the stats": json.dumps(stats.metrics()),
             **{f"log record {i}": r.getMessage() for i, r in enumerate(caplog.records)}}
    assert secret_hits(SECRET, {**files, **shown}) == []
    assert len(caplog.records) > 0 and np.isfinite(logits).all()


def test_the_secret_scan_finds_every_form_at_every_offset():
    # the negative control of the scans above: each form is found wherever it starts
    for before, after in (("", ""), ("u", "!"), ("us", "!!"), ("user:", "\n"), ("Basic a", "")):
        text = f"{before}{SECRET}{after}"
        encoded = {"base64": base64.b64encode(text.encode()),
                   "urlsafe base64": base64.urlsafe_b64encode(text.encode()),
                   "url-encoded": urllib.parse.quote(text, safe="").encode(),
                   "url-encoded (plus)": urllib.parse.quote_plus(text).encode(),
                   "plain": text.encode()}
        for name, data in encoded.items():
            hits = secret_hits(SECRET, {"x": b"noise " + data + b" noise"})
            assert any(hit.startswith(f"x: {name}") for hit in hits), (before, name)
    assert secret_hits(SECRET, {"x": SECRET[:-1], "y": SECRET[1:]}) == []  # only the whole


def test_a_missing_environment_variable_is_named(tmp_path):
    p = api_params("http://127.0.0.1:9/", api_headers={"X-Api-Key": "${POCKETBERT_UNSET_KEY}"})
    with pytest.raises(ApiError, match=r"teacher.api_headers.X-Api-Key needs the environment "
                                       r"variable POCKETBERT_UNSET_KEY, which is not set"):
        api.teacher_logits(TEXTS, LABELS, p, tmp_path, env={})


def cached_rows(db: Path) -> int:
    """Answers in the cache file; 0 while the writer has not created its table yet."""
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
        try:
            return con.execute("SELECT count(*) FROM answers").fetchone()[0]
        except sqlite3.OperationalError:  # no such table (yet)
            return 0


def test_a_killed_run_leaves_a_sound_cache_to_resume_from(table, tmp_path):
    child = ("import sys; from pathlib import Path; from pocketbert.teachers import api;"
             "from pocketbert.core import params;"
             "p = params.TeacherParams(mode='api', api_url=sys.argv[1], api_batch_size=4,"
             " api_concurrency=1, api_requests_per_second=1000.0);"
             "api.teacher_logits(sys.argv[3:], params.LABELS, p, Path(sys.argv[2]))")
    db = tmp_path / api.CACHE_FILE
    with scripted(table, *[slow(0.3)] * 10) as served:
        proc = subprocess.Popen([sys.executable, "-c", child, served.url, str(tmp_path), *TEXTS])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if db.is_file() and cached_rows(db) >= 8:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        with contextlib.closing(sqlite3.connect(db)) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = cached_rows(db)
        assert 8 <= done < 40 and done % 4 == 0  # whole batches only
        _, stats = api.teacher_logits(TEXTS, LABELS, api_params(served.url), tmp_path)
    assert (stats.cache_hits, stats.texts_sent) == (done, 40 - done)


# --- params and the server ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    ({"mode": "api"}, "'teacher.api_url': give the endpoint's http:// or https:// URL"),
    ({"mode": "api", "api_url": "https://user:key@api.example/v1"}, "without user:password@"),
    ({"api_headers": {"Authorization": "Bearer sk-live-123"}},
     "'teacher.api_headers.Authorization': reference the secret's environment variable as "
     "${NAME}"),
    ({"api_headers": {"Bad Header": "${KEY}"}}, "'teacher.api_headers.Bad Header'"),
    ({"api_headers": ["Authorization"]}, "'teacher.api_headers' must be a mapping"),
    ({"api_scores": "softmax"}, "'teacher.api_scores' is 'softmax'; use one of"),
    ({"api_concurrency": 0}, "'teacher.api_concurrency' (given: 0): use a positive integer"),
    ({"api_labels": ["notice", "notice"]}, "'teacher.api_labels': remove the repeated label"),
])
def test_api_params_are_checked_by_full_key(raw, message):
    with pytest.raises(ParamsError) as info:
        params.parse_section("teacher", raw)
    assert message in str(info.value)


def test_api_labels_must_name_the_pipelines_labels(tmp_path):
    p = api_params("http://127.0.0.1:9/", api_labels=("a", "b", "c", "d"))
    with pytest.raises(ParamsError, match=r"'teacher.api_labels' \['a', 'b', 'c', 'd'\] must "
                                          r"name the labels of split.labels"):
        api.teacher_logits(TEXTS, LABELS, p, tmp_path)


def test_server_refuses_bad_requests_with_a_reason(classifier):
    with Served(serving.make_server(classifier, port=0)) as served, httpx.Client(
            timeout=10) as client:
        info = client.get(served.url).json()
        wrong = client.post(served.url, json={"text": "one"})
        not_strings = client.post(served.url, json={"texts": [1, 2]})
        too_many = client.post(served.url, json={"texts": ["a"] * (serving.MAX_TEXTS + 1)})
        empty = client.post(served.url, json={"texts": []}).json()
        blank = client.post(served.url, json={"texts": ["fine", "\u200b\u200b"]})
        control = client.post(served.url, json={"texts": ["\x00\x01"]})
    assert info["labels"] == list(LABELS)
    assert blank.status_code == 400
    assert '"texts"[1] is empty after normalisation' in blank.json()["error"]
    assert "U+200B ZERO WIDTH SPACE" in blank.json()["error"]
    assert control.status_code == 400 and '"texts"[0]' in control.json()["error"]
    assert wrong.status_code == 400 and "texts" in wrong.json()["error"]
    assert not_strings.status_code == 400
    assert too_many.status_code == 413 and "at most 1024" in too_many.json()["error"]
    assert empty == {"labels": list(LABELS), "logits": [], "probabilities": [], "truncated": []}


def test_cache_that_is_not_a_database_is_named(tmp_path):
    (tmp_path / api.CACHE_FILE).write_bytes(b"not sqlite" * 100)
    with pytest.raises(ApiError, match=r"answers.sqlite: not a usable answer cache .*delete the "
                                       r"file"):
        api.AnswerCache(tmp_path, "http://127.0.0.1:9/", "texts", "probabilities")


def test_server_loads_only_a_usable_classifier_folder(classifier, tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        serving.Classifier(tmp_path)
    folder = tmp_path / "gap"
    shutil.copytree(classifier.folder, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {"0": "condition", "1": "constraint", "2": "notice", "4": "process"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match=r"config.json: id2label has ids \[0, 1, 2, 4\]: ids "
                                         r"\[3\] are missing"):
        serving.Classifier(folder)


def test_redact_removes_the_secret_in_every_form_an_endpoint_might_echo() -> None:
    import base64
    import urllib.parse

    from conftest import secret_hits

    secret = "s3cr3t/Token+9f8e=7d"
    for prefix in ("", "u:", "us:"):  # base64 of a longer text: each offset modulo 3
        echoed = (f"bad key {secret}; {urllib.parse.quote(secret, safe='')}; "
                  f"{urllib.parse.quote_plus(secret)}; "
                  f"{base64.b64encode((prefix + secret).encode()).decode()}; "
                  f"{base64.urlsafe_b64encode((prefix + secret).encode()).decode()}")
        assert secret_hits(secret, {"echo": echoed})  # the control: the scan sees them
        assert secret_hits(secret, {"redacted": api.redact(echoed, [secret])}) == []
    # ordinary text is left alone, and an empty secret redacts nothing
    assert api.redact("nothing to hide", [secret, ""]) == "nothing to hide"
