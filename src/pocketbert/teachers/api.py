"""A teacher reachable only as an HTTP API (teacher.mode api): requests, answers, cache, limits.

Distillation needs only the teacher's scores per text, so a classifier behind an endpoint can
be the teacher. Texts go out in batches as the JSON body ``{"<api_text_field>": [text, ...]}``
(POST); the answer holds one entry per text, in order, under ``api_answer_field``. An entry is

- an object keyed by label name: ``{"notice": 0.7, "process": 0.1, ...}``,
- a list of ``{"label": name, "score": x}`` objects (the shape of Hugging Face's
  text-classification pipeline with ``top_k=None``), or
- a list of numbers in the order that ``teacher.api_labels`` declares.

Labels are matched to the pipeline's labels by name and reordered into their order. With
``api_scores: probabilities`` the numbers become log-probabilities, so what is stored are
logits in the sense distillation needs: their softmax gives the API's probabilities back.

Answers are cached per text in an SQLite file, keyed by (endpoint URL, request and answer
fields, text), one transaction per answered batch: a run that stops (an error, the call cap,
a killed process) keeps every answer it got, and the next run asks only for the rest.
Requests run on a bounded thread pool under a requests-per-second limit; timeouts, lost
connections, HTTP 429 and 5xx are retried with exponential back-off, honouring Retry-After
(RFC 9110 section 10.2.3: seconds or an HTTP date). Header values are filled from environment
variables; they are never logged, stored, or shown in an error (an endpoint that echoes them
back has them replaced by ``***``).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import sqlite3
import string
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pocketbert.core.artifacts import read_json, write_json
from pocketbert.core.errors import ApiError, DataError, ParamsError
from pocketbert.core.model_folders import ENDPOINT_FILE
from pocketbert.core.params import TeacherParams

log = logging.getLogger(__name__)

CACHE_FILE = "answers.sqlite"
"what the teacher stage writes in its output folder for an API teacher (no weights there)"
PARAMS = ("teacher.mode", *(f"teacher.{f.name}" for f in fields(TeacherParams)
                            if f.name.startswith("api_")))
"the params keys a stage that asks the API reads (its PARAMS and dvc.yaml params)"
EXCERPT_CHARS = 200  # of an answer body shown in an error: enough to see what came back
# A probability of 0 (an API that rounds) has no logarithm; float32's smallest normal number
# keeps the stored logit finite (log = -87.3) while its softmax stays 0 in float32.
MIN_PROBABILITY = float(np.finfo(np.float32).tiny)
# Probabilities rounded to 3 decimals over a few labels still sum to 1 within this; a sum
# further off means the numbers are not one distribution (sigmoid scores, logits).
SUM_TOLERANCE = 1e-2


@dataclass
class ApiStats:
    """Counters of one run: HTTP requests made (retries included), retries, texts answered
    from the cache, texts answered by the endpoint (distinct texts each)."""

    calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    texts_sent: int = 0

    def metrics(self, prefix: str = "api") -> dict[str, int]:
        """Flat metrics, e.g. ``{"api.calls": 12, "api.cache_hits": 340, ...}``."""
        return {f"{prefix}.{key}": value for key, value in asdict(self).items()}


class _BadEntry(Exception):
    """One text's answer is unusable: ``reason`` and ``fix`` go into the ApiError."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def resolve_headers(templates: Mapping[str, str], env: Mapping[str, str],
                    ) -> tuple[dict[str, str], tuple[str, ...]]:
    """Request headers with each ``${NAME}`` of ``teacher.api_headers`` filled from ``env``,
    and the filled-in values (secrets to redact from anything shown).

    Raises ApiError naming the header and the variable when the variable is unset or empty.
    """
    headers: dict[str, str] = {}
    secrets: list[str] = []
    for header, value in templates.items():
        template = string.Template(value)
        for name in template.get_identifiers():
            if not env.get(name):
                raise ApiError(
                    f"teacher.api_headers.{header} needs the environment variable {name}, "
                    f"which is not set; export {name}=... in the shell that runs the stage "
                    "(its value is never written to a file)")
            secrets.append(env[name])
        headers[header] = template.substitute(env)
    return headers, tuple(secrets)


MIN_ENCODED_CHARS = 8
"a base64 form shorter than this is left alone: it would match ordinary text"


def encoded_forms(secret: str) -> list[str]:
    """``secret`` as an endpoint might echo it: as it is, URL-encoded (urllib's ``quote`` and
    ``quote_plus``), and base64 (standard and URL-safe alphabets, RFC 4648). Inside a longer
    base64 text (``user:secret`` in a Basic header) the secret's encoding depends on its byte
    offset modulo 3, so each base64 form is the run of characters that depends on the
    secret's bytes alone, for each of the three offsets."""
    import base64
    import urllib.parse

    raw = secret.encode()
    forms = [secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)]
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode()
            # base64 character j holds bits [6j, 6j + 6); the secret holds bits
            # [8 offset, 8 (offset + len)): keep the characters wholly inside it
            first, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
            if end - first >= MIN_ENCODED_CHARS:
                forms.append(text[first:end])
    return list(dict.fromkeys(forms))


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret, and every encoded form of it an endpoint might echo
    (encoded_forms), replaced by ``***`` (longest first, so none leaks in part)."""
    forms = {form for secret in secrets if secret for form in encoded_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _excerpt(body: str, secrets: Sequence[str]) -> str:
    """The first EXCERPT_CHARS characters of ``body`` on one line, redacted and quoted."""
    flat = " ".join(redact(body, secrets).split())
    return repr(flat[:EXCERPT_CHARS] + ("..." if len(flat) > EXCERPT_CHARS else ""))


def scores_row(entry: Any, labels: Sequence[str], p: TeacherParams) -> np.ndarray:
    """One text's answer as float64 [len(labels)] in ``labels`` order: the API's logits, or
    with ``p.api_scores == "probabilities"`` its log-probabilities (log p - log sum p; a 0
    becomes log(MIN_PROBABILITY)).

    Raises _BadEntry with the reason and the fix (the caller adds the URL and the text).
    """
    if p.api_labels:
        if not (isinstance(entry, list) and len(entry) == len(p.api_labels)):
            raise _BadEntry(f"not a list of {len(p.api_labels)} numbers (teacher.api_labels)",
                            "set teacher.api_labels to the API's label names in answer order, "
                            "or empty it for answers keyed by label name")
        by_name = dict(zip(p.api_labels, entry, strict=True))
    elif isinstance(entry, dict):
        by_name = entry
    elif isinstance(entry, list) and entry and all(
            isinstance(x, dict) and isinstance(x.get("label"), str) and "score" in x
            for x in entry):
        by_name = {x["label"]: x["score"] for x in entry}
        if len(by_name) != len(entry):
            raise _BadEntry("a label listed twice", "fix the endpoint's answer")
    elif isinstance(entry, list):
        raise _BadEntry("a list without label names",
                        "set teacher.api_labels to the API's label names in answer order")
    else:
        raise _BadEntry(f"a {type(entry).__name__}, not scores per label",
                        "set teacher.api_answer_field to the key of the per-text list")
    missing = [name for name in labels if name not in by_name]
    unknown = [str(name) for name in by_name if name not in labels]
    if missing or unknown:
        raise _BadEntry(
            f"labels {sorted(map(str, by_name))} that do not match split.labels {list(labels)} "
            f"(missing {missing}, unknown {unknown})",
            "labels are matched by name: make split.labels the API's label names, or set "
            "teacher.api_labels for answers in a fixed order")
    values = [by_name[name] for name in labels]
    for name, value in zip(labels, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _BadEntry(f"{value!r} for label {name!r}, not a number",
                            "fix the endpoint's answer")
        if not math.isfinite(value):
            raise _BadEntry(f"the non-finite number {value} for label {name!r}",
                            "fix the endpoint: a model that outputs NaN or inf cannot teach")
    row = np.asarray(values, dtype=np.float64)  # [num_labels]
    if p.api_scores == "logits":
        return row
    if (row < 0).any() or (row > 1).any() or abs(row.sum() - 1) > SUM_TOLERANCE:
        raise _BadEntry(f"numbers {values} that are not probabilities summing to 1",
                        "set teacher.api_scores: logits if the API returns logits")
    return np.log(np.maximum(row, MIN_PROBABILITY)) - np.log(row.sum())


class AnswerCache:
    """Per-text answers of one endpoint in ``folder/answers.sqlite``.

    Keyed by (url, text field, answer field, text); an answer is stored as the endpoint's
    JSON entry for that text, so changing api_scores or api_labels reinterprets it rather
    than asking again. Each ``put`` is one SQLite transaction: a process killed mid-write
    leaves the earlier batches and nothing half-written.
    """

    def __init__(self, folder: Path, url: str, text_field: str, answer_field: str) -> None:
        """Raises ApiError when the file exists but is not a usable SQLite database."""
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_FILE
        self._key = (url, text_field, answer_field)
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (url TEXT, text_field TEXT, "
                "answer_field TEXT, text TEXT, answer TEXT NOT NULL, "
                "PRIMARY KEY (url, text_field, answer_field, text))")
        except sqlite3.DatabaseError as exc:
            raise ApiError(f"{self.path}: not a usable answer cache ({exc}); delete the file "
                           "(its answers will be asked again)") from None

    def get(self, texts: Sequence[str]) -> dict[str, Any]:
        """Cached answers of those ``texts`` that have one: text -> JSON entry."""
        found: dict[str, Any] = {}
        query = ("SELECT answer FROM answers WHERE url = ? AND text_field = ? "
                 "AND answer_field = ? AND text = ?")
        for text in texts:
            row = self._db.execute(query, (*self._key, text)).fetchone()
            if row is not None:
                found[text] = json.loads(row[0])
        return found

    def put(self, answers: Mapping[str, Any]) -> None:
        """Store text -> JSON entry, all in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                [(*self._key, text, json.dumps(entry)) for text, entry in answers.items()])

    def close(self) -> None:
        self._db.close()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by a Retry-After header (seconds or an HTTP date), else None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _client_error_fix(status: int) -> str:
    if status in (401, 403):
        return ("the endpoint refused the request's credentials: check teacher.api_headers and "
                "the environment variables they name")
    if status in (404, 405):
        return "check teacher.api_url (the path, and that it takes POST)"
    if status == 413:
        return "lower teacher.api_batch_size"
    return ("the endpoint rejected the request: check teacher.api_text_field and "
            "teacher.api_batch_size against the API's documentation")


class _Endpoint:
    """One run's connection to the API: pacing, the call cap, retries, answer checks."""

    def __init__(self, p: TeacherParams, labels: Sequence[str], headers: Mapping[str, str],
                 secrets: Sequence[str], stats: ApiStats) -> None:
        self.p, self.labels, self.secrets, self.stats = p, labels, secrets, stats
        self.url = p.api_url
        self._lock = threading.Lock()
        self._next_start = time.monotonic()
        self._client = httpx.Client(
            headers=dict(headers), timeout=p.api_timeout_s, follow_redirects=False,
            limits=httpx.Limits(max_connections=p.api_concurrency))

    def close(self) -> None:
        self._client.close()

    def _take_call(self) -> None:
        """Count one request against teacher.api_max_calls, then wait for its start time
        under teacher.api_requests_per_second."""
        with self._lock:
            if self.stats.calls >= self.p.api_max_calls:
                raise ApiError(
                    f"{self.url}: stopped at teacher.api_max_calls={self.p.api_max_calls} "
                    "requests; the answers so far are cached, so a re-run goes on from here "
                    "(raise teacher.api_max_calls to allow more per run)")
            self.stats.calls += 1
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.p.api_requests_per_second
        time.sleep(start - now)

    def ask(self, texts: list[str]) -> list[Any]:
        """POST one batch; the endpoint's entries, one per text, each checked by scores_row.

        Retries timeouts, connection errors, 429 and 5xx; raises ApiError (URL, status, the
        start of the body, the fix) on anything else or when the retries are used up."""
        p = self.p
        tries = p.api_max_retries + 1
        for attempt in range(tries):
            self._take_call()
            retry_after = None
            try:
                response = self._client.post(self.url, json={p.api_text_field: texts})
            except httpx.TimeoutException:
                problem = f"no answer within teacher.api_timeout_s={p.api_timeout_s} s"
                fix = "raise teacher.api_timeout_s or lower teacher.api_batch_size"
            except httpx.TransportError as exc:
                reason = " ".join(redact(str(exc), self.secrets).split())[:EXCERPT_CHARS]
                problem = f"cannot reach the endpoint ({type(exc).__name__}: {reason})"
                fix = "start the endpoint, or fix teacher.api_url"
            else:
                status = response.status_code
                body = _excerpt(response.text, self.secrets)
                if 200 <= status < 300:
                    return self._entries(response, texts)
                if status != 429 and status < 500:
                    where = response.headers.get("Location")
                    fix = (f"set teacher.api_url to the address it redirects to ({where})"
                           if 300 <= status < 400 else _client_error_fix(status))
                    raise ApiError(f"{self.url}: HTTP {status}: {body}; {fix}")
                problem = f"HTTP {status}: {body}"
                fix = ("the endpoint keeps failing: check it, or raise teacher.api_max_retries "
                       "and teacher.api_max_wait_s")
                retry_after = _retry_after(response)
            if attempt == tries - 1:
                break
            wait = min(p.api_backoff_s * 2**attempt, p.api_max_wait_s)
            if retry_after is not None:
                if retry_after > p.api_max_wait_s:
                    raise ApiError(
                        f"{self.url}: {problem}; it asks to wait {retry_after:.0f} s "
                        f"(Retry-After), more than teacher.api_max_wait_s={p.api_max_wait_s}: "
                        "raise teacher.api_max_wait_s or run again later")
                wait = retry_after
            with self._lock:
                self.stats.retries += 1
            log.warning("%s: %s; retry %d of %d in %.2f s", self.url, problem, attempt + 1,
                        p.api_max_retries, wait)
            time.sleep(wait)
        raise ApiError(f"{self.url}: {problem}, after {tries} tries; {fix}")

    def _entries(self, response: httpx.Response, texts: list[str]) -> list[Any]:
        p = self.p
        head = f"{self.url}: HTTP {response.status_code}"
        body = _excerpt(response.text, self.secrets)
        try:
            answer = response.json()
        except ValueError:
            raise ApiError(f"{head}, but the body is not JSON: {body}; check that "
                           "teacher.api_url is the classifier endpoint") from None
        entries = answer
        for part in p.api_answer_field.split("."):
            if not isinstance(entries, dict) or part not in entries:
                found = sorted(entries) if isinstance(entries, dict) else type(entries).__name__
                raise ApiError(f"{head}, but the answer has no '{p.api_answer_field}' (found "
                               f"{found}): {body}; set teacher.api_answer_field to the key of "
                               "the per-text list")
            entries = entries[part]
        if not isinstance(entries, list) or len(entries) != len(texts):
            size = len(entries) if isinstance(entries, list) else type(entries).__name__
            raise ApiError(f"{head}, but '{p.api_answer_field}' holds {size} entries for "
                           f"{len(texts)} texts: {body}; the endpoint must answer one entry "
                           "per text, in order")
        for text, entry in zip(texts, entries, strict=True):
            try:
                scores_row(entry, self.labels, p)
            except _BadEntry as bad:
                raise ApiError(f"{head}, but the answer for the text {text[:40]!r} has "
                               f"{bad.reason}: {body}; {bad.fix}") from None
        return entries


def teacher_logits(texts: Sequence[str], labels: Sequence[str], p: TeacherParams,
                   cache_dir: Path, env: Mapping[str, str] | None = None,
                   ) -> tuple[np.ndarray, ApiStats]:
    """The endpoint's scores for ``texts``: float32 [len(texts), len(labels)] in ``labels``
    order (logits, or log-probabilities for api_scores=probabilities), and the run's counters.

    Cached answers are used first; the rest go out in batches of ``p.api_batch_size``, each
    batch cached as soon as it is answered. ``env`` (default: os.environ) fills the headers.
    Raises ParamsError when api_labels and ``labels`` differ as sets, ApiError when the
    endpoint fails (answers received before the failure stay cached).
    """
    if p.api_labels and set(p.api_labels) != set(labels):
        raise ParamsError(f"'teacher.api_labels' {list(p.api_labels)} must name the labels "
                          f"of split.labels {list(labels)}, in the API's order",
                          key="teacher.api_labels", source="params.yaml")
    headers, secrets = resolve_headers(p.api_headers, os.environ if env is None else env)
    stats = ApiStats()
    unique = list(dict.fromkeys(texts))
    cache = AnswerCache(cache_dir, p.api_url, p.api_text_field, p.api_answer_field)
    try:
        answers = cache.get(unique)
        stats.cache_hits = len(answers)
        todo = [text for text in unique if text not in answers]
        batches = [todo[i : i + p.api_batch_size] for i in range(0, len(todo), p.api_batch_size)]
        endpoint = _Endpoint(p, labels, headers, secrets, stats)
        error: BaseException | None = None
        try:
            with ThreadPoolExecutor(max_workers=p.api_concurrency) as pool:
                futures = {pool.submit(endpoint.ask, batch): batch for batch in batches}
                for future in as_completed(futures):
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        if error is None:  # the first failure ends the run; queued batches
                            error = future.exception()  # are cancelled, running ones finish
                            for other in futures:
                                other.cancel()
                        continue
                    answered = dict(zip(futures[future], future.result(), strict=True))
                    cache.put(answered)
                    answers.update(answered)
                    stats.texts_sent += len(answered)
        finally:
            endpoint.close()
            log.info("%s: %d distinct texts, %d from the cache, %d answered in %d calls "
                     "(%d retries)", p.api_url, len(unique), stats.cache_hits, stats.texts_sent,
                     stats.calls, stats.retries)
        if error is not None:
            raise error
    finally:
        cache.close()
    rows: dict[str, np.ndarray] = {}
    for text in unique:
        try:
            rows[text] = scores_row(answers[text], labels, p)
        except _BadEntry as bad:  # only a cached answer can fail here: fresh ones were checked
            raise ApiError(f"{cache.path}: the cached answer for the text {text[:40]!r} has "
                           f"{bad.reason}; {bad.fix}, or delete the cache file") from None
    out = np.zeros((len(texts), len(labels)), dtype=np.float32)  # [texts, labels]
    for i, text in enumerate(texts):
        out[i] = rows[text]
    return out, stats


def cache_folder(inputs: Mapping[str, Path]) -> Path:
    """The answer cache folder a stage got as ``--api-cache`` (dvc.yaml's cmd passes it).

    Raises ParamsError when it was not given."""
    if "api_cache" not in inputs:
        raise ParamsError("teacher.mode api needs the answer cache folder: pass --api-cache "
                          "FOLDER (dvc.yaml's cmd passes .cache/pocketbert/api)")
    return inputs["api_cache"]


def write_endpoint(folder: Path, p: TeacherParams, labels: Sequence[str]) -> None:
    """Write ENDPOINT_FILE: the URL, request and answer fields and labels of an API teacher.

    Never the headers: their values may be secrets (only the variable names are in params)."""
    write_json(folder / ENDPOINT_FILE, {
        "mode": "api", "url": p.api_url, "text_field": p.api_text_field,
        "answer_field": p.api_answer_field, "scores": p.api_scores, "labels": list(labels)})


def check_endpoint(folder: Path, p: TeacherParams, labels: Sequence[str]) -> None:
    """Check that the teacher stage's ENDPOINT_FILE in ``folder`` describes the endpoint and
    labels of ``p``; raises DataError naming the file and 'dvc repro teacher' as the fix."""
    path = folder / ENDPOINT_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found, so {folder} is not an API teacher; run "
                        "'dvc repro teacher' with teacher.mode api")
    written = read_json(path)
    now = {"url": p.api_url, "text_field": p.api_text_field,
           "answer_field": p.api_answer_field, "labels": list(labels)}
    changed = sorted(key for key, value in now.items() if written.get(key) != value)
    if changed:
        raise DataError(f"{path}: {', '.join(changed)} differ from params.yaml and labels.json; "
                        "run 'dvc repro teacher' to check the endpoint again")
