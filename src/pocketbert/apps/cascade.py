"""The cascade: the student answers the texts it is sure of, a teacher endpoint the others.

The decision is the device contract's one rule (``contract.answers``: the calibrated
confidence against the threshold the calibrate stage chose on validation, from its
``calibration.json``); the deferred texts go to the teacher with the API teacher's client
(``teachers.api``: batching, retries, pacing, secrets from the environment, never logged).
`pocketbert predict --fallback` and `pocketbert serve --fallback` both run it. When the
endpoint fails, the deferred texts keep the student's answer, marked UNREACHABLE.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core import contract
from pocketbert.core.errors import PocketbertError

CALIBRATION = Path("models/calibration") / contract.CALIBRATION_FILE
"the calibrate stage's deferral settings, relative to a checkout (dvc.yaml's out)"
STUDENT, TEACHER = "student", "teacher"
NOT_ASKED = "student (not sure: would ask the server)"
"answered_by of a deferred text when no teacher endpoint is given"
UNREACHABLE = "student (not sure; the server did not answer)"
"answered_by of a deferred text whose teacher endpoint failed"


class DeferralError(PocketbertError):
    """Deferral settings or a fallback URL that cannot be used; the message names the file or
    option and the fix."""


def settings_for(model: Path, given: str | Path | None,
                 metadata: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The deferral settings to apply to ``model``: the file ``given`` when set; else those
    the model carries (``metadata``: an ONNX model's metadata_props, as the web stage ships
    it, under contract.DEFERRAL_METADATA); else CALIBRATION of the model's checkout when the model
    is that checkout's int8 student (the .onnx file or its folder: the model the calibrate
    stage calibrated); else None.

    Returns {'temperature', 'score', 'threshold', 'labels' (or None), 'path', ...}; 'path'
    names where they came from. Raises DeferralError naming the file when ``given`` is
    missing, or the settings are not JSON or hold a temperature, score or threshold the rule
    cannot use."""
    from pocketbert.runtime import onnx_runner

    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise DeferralError(f"{path}: no such file; --calibration takes the calibrate "
                                f"stage's {contract.CALIBRATION_FILE} (dvc repro calibrate)")
        where, read = str(path), lambda: path.read_text(encoding="utf-8")
    elif metadata is not None and contract.DEFERRAL_METADATA in metadata:
        where = f"{model} (its metadata)"
        read = lambda: metadata[contract.DEFERRAL_METADATA]  # noqa: E731
    else:
        root = onnx_runner.project_root(model.absolute().parent)
        student = None if root is None else root / onnx_runner.DEFAULT_MODEL
        if student is None or model.absolute() not in (student, student.parent):
            return None
        path = root / CALIBRATION
        if not path.is_file():
            return None
        where, read = str(path), lambda: path.read_text(encoding="utf-8")
    try:
        settings = json.loads(read())
        temperature, score = float(settings["temperature"]), settings["score"]
        threshold = settings["threshold"]
        if not (temperature > 0 and score in contract.CONFIDENCE_SCORES
                and (threshold is None or isinstance(threshold, (int, float)))):
            raise ValueError("a temperature > 0, a score of "
                             f"{list(contract.CONFIDENCE_SCORES)} and a number or null "
                             "threshold")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeferralError(f"{where}: not usable deferral settings ({exc}); run `dvc repro "
                            "calibrate` again") from None
    return {**settings, "path": where}


def set_threshold(settings: dict[str, Any], threshold: float, n_labels: int) -> None:
    """Replace the settings' threshold by ``threshold`` (--threshold). Raises DeferralError
    when it lies outside the range of the settings' score for ``n_labels`` labels."""
    from pocketbert.apps.results import SCORE_NAMES, score_range

    low, high = score_range(settings["score"], n_labels)
    if not low <= threshold <= high:
        raise DeferralError(f"--threshold {threshold:g}: the calibration's score is "
                            f"{SCORE_NAMES[settings['score']]}, whose values lie in "
                            f"[{low:.4g}, {high:.4g}] for {n_labels} labels; pick X in that "
                            "range")
    settings["threshold"] = threshold


def rule_note(settings: dict[str, Any]) -> str:
    """The deferral rule in words, e.g. 'calibrated top probability below 0.9'."""
    from pocketbert.apps.results import SCORE_NAMES

    threshold = settings["threshold"]
    return (f"calibrated {SCORE_NAMES[settings['score']]} below {threshold:.4g}"
            if threshold is not None else "no threshold reached the target")


def teacher_params(model: Path, url: str) -> tuple[Any, str]:
    """The API client's settings for the endpoint ``url`` and where they come from: the
    teacher section of the params.yaml of ``model``'s checkout (retries, pacing, headers),
    else TeacherParams' defaults, with mode api. Raises DeferralError when ``url`` is not an
    http(s) URL."""
    from pocketbert.core import params
    from pocketbert.runtime import onnx_runner

    root = onnx_runner.project_root(model.absolute().parent)
    if root is not None and (root / "params.yaml").is_file():
        settings = params.load(root / "params.yaml", "teacher")
        source = f"the teacher.api_* params of {root / 'params.yaml'}"
    else:
        settings = params.TeacherParams()
        source = "the defaults of the teacher.api_* params (no checkout holds the model)"
    try:
        return dataclasses.replace(settings, mode="api", api_url=url), source
    except PocketbertError as exc:
        raise DeferralError(f"--fallback {url}: {exc}") from None


@dataclasses.dataclass
class Routed:
    """What the cascade did with n texts: per text ``deferred``, ``answered_by`` (STUDENT,
    TEACHER, NOT_ASKED or UNREACHABLE), the student's calibrated probabilities
    (``calibrated``, float64 [n, labels]) and the answer's probabilities (``probabilities``:
    the teacher's where it answered, else the student's, float64 [n, labels]); ``note`` says
    what happened to the deferred texts (None when there was nothing to say)."""

    deferred: list[bool]
    answered_by: list[str]
    calibrated: np.ndarray
    probabilities: np.ndarray
    note: str | None = None
    failed: bool = False
    "the endpoint was asked in this call and failed"


class Cascade:
    """The rule of ``settings`` (settings_for) on a student's probabilities, and, when
    ``fallback`` (teacher_params: the settings and where they come from) is given, the teacher
    endpoint asked for the deferred texts. After the endpoint fails, it is not asked again for
    ``pause_after_failure_s`` seconds (a server fronting a teacher that is down answers at once
    instead of waiting out the client's retries on every request).

    ``labels``: the student's, in its output order; the settings' labels must be the same.
    Thread-safe; counts texts answered locally, sent to the teacher and left unanswered by
    it since creation (``counts()``). Raises DeferralError when the labels differ."""

    def __init__(self, settings: dict[str, Any], labels: Sequence[str],
                 fallback: tuple[Any, str] | None = None,
                 pause_after_failure_s: float = 0.0) -> None:
        if settings.get("labels") not in (None, list(labels)):
            raise DeferralError(f"{settings['path']}: calibrated for labels "
                                f"{settings['labels']}, but the model has {list(labels)}; "
                                "pass the --calibration of this model")
        self.settings, self.labels = settings, list(labels)
        self.fallback, self.source = fallback if fallback is not None else (None, "")
        self.pause_after_failure_s = pause_after_failure_s
        self._failed_at: float | None = None  # time.monotonic() of the last failure
        self._lock = threading.Lock()
        self._counts = {"answered_locally": 0, "sent_to_teacher": 0, "teacher_unreachable": 0}

    def counts(self) -> dict[str, int]:
        """Texts answered by the student, sent to the teacher (answered by it) and deferred
        but left with the student's answer because the endpoint failed."""
        with self._lock:
            return dict(self._counts)

    def route(self, texts: Sequence[str], probabilities: np.ndarray) -> Routed:
        """Decide for each text (``probabilities``: the student's softmax, [n, labels]) and
        ask the teacher for the deferred ones when there is a fallback.

        Never raises for a failing endpoint (teachers.api's ApiError): the deferred texts
        keep the student's answer, ``answered_by`` UNREACHABLE, and the note says so."""
        from pocketbert.core import evaluation
        from pocketbert.core.errors import ApiError
        from pocketbert.teachers import api

        rule = {key: self.settings[key] for key in ("temperature", "score", "threshold")}
        rows = np.asarray(probabilities, dtype=np.float64)
        deferred = [not contract.answers(p, **rule) for p in rows.tolist()]
        calibrated = np.array([contract.calibrated(p, rule["temperature"])
                               for p in rows.tolist()], dtype=np.float64).reshape(rows.shape)
        answered_by = [NOT_ASKED if d else STUDENT for d in deferred]
        out = rows.copy()
        asked = [i for i, d in enumerate(deferred) if d]
        note, failed, counts = None, False, {"answered_locally": len(texts) - len(asked)}
        if self.fallback is not None:
            url = self.fallback.api_url
            with self._lock:
                since = (None if self._failed_at is None
                         else time.monotonic() - self._failed_at)
            if not asked:
                note = f"no text deferred; nothing sent to {url}"
            elif since is not None and since < self.pause_after_failure_s:
                for i in asked:
                    answered_by[i] = UNREACHABLE
                counts["teacher_unreachable"] = len(asked)
                note = (f"the teacher at {url} (--fallback) failed {since:.0f} s ago and is "
                        f"asked again after {self.pause_after_failure_s:g} s; the "
                        f"{len(asked)} deferred text(s) keep the student's answer")
            else:
                try:
                    with tempfile.TemporaryDirectory(prefix="pocketbert-fallback-") as cache:
                        scores, _ = api.teacher_logits([texts[i] for i in asked], self.labels,
                                                       self.fallback, Path(cache))
                except ApiError as exc:
                    with self._lock:
                        self._failed_at = time.monotonic()
                    for i in asked:
                        answered_by[i] = UNREACHABLE
                    counts["teacher_unreachable"], failed = len(asked), True
                    # the client names its params key; here the URL is the --fallback option
                    problem = str(exc).replace("teacher.api_url", "--fallback")
                    note = (f"the teacher at {url} (--fallback) did not answer ({problem}); "
                            f"the {len(asked)} deferred text(s) keep the student's answer "
                            f"(answered_by: {UNREACHABLE}); retries and timeouts: "
                            f"{self.source}")
                    if self.pause_after_failure_s:
                        note += f"; not asked again for {self.pause_after_failure_s:g} s"
                else:
                    out[asked] = evaluation.softmax(scores)
                    for i in asked:
                        answered_by[i] = TEACHER
                    counts["sent_to_teacher"] = len(asked)
                    note = f"{len(asked)} deferred text(s) answered by the teacher at {url}"
        with self._lock:
            for key, value in counts.items():
                self._counts[key] += value
        return Routed(deferred, answered_by, calibrated, out, note, failed)
