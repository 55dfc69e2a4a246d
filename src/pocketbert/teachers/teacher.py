"""One interface for the teacher, whatever it is: a classifier folder (teacher.mode fine_tune or
given: ``LocalTeacher``) or an HTTP endpoint (teacher.mode api: ``ApiTeacher``).

What the stages ask of a teacher is small: its labels; its logits for named groups of texts
(``logits``: the splits, the unlabelled transfer texts); its weights and tokenizer where it has
them (``model``, ``tokenizer``: None for an endpoint, so the student cannot copy its layers and
the benchmark has no size or latency to compare); and what a run of it cost (``metrics``).
Which of the two a folder holds is read from the folder the teacher stage wrote (model folders
are data): ``endpoint.json`` marks an endpoint, anything else is a classifier folder.

    teacher = teachers.load(Path("models/teacher"), labels, params=p.teacher, cache=cache)
    logits = teacher.logits({"test": Texts(texts, ids)})["test"]   # [rows, labels] float32
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core import contract, model_folders
from pocketbert.core.artifacts import size_mb
from pocketbert.core.errors import ParamsError
from pocketbert.core.params import TeacherParams
from pocketbert.data import tokenization
from pocketbert.teachers import api


@dataclass(frozen=True)
class Texts:
    """A group of texts to score; ``ids``: their token ids in the teacher's tokenizer when the
    tokenize stage already computed them (a local teacher then skips tokenizing again)."""

    texts: Sequence[str]
    ids: Sequence[Sequence[int]] | None = None


class LocalTeacher:
    """A sequence classifier in memory (PyTorch), scored in length-sorted batches on the best
    device (runtime.torch_runner)."""

    def __init__(self, model: Any, tokenizer: Any, labels: tuple[str, ...], *,
                 batch_size: int | None = None, max_length: int | None = None,
                 folder: Path | None = None) -> None:
        from pocketbert.runtime import torch_runner

        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.batch_size = batch_size or torch_runner.BATCH_SIZE
        self.max_length, self.folder = max_length, folder
        self.device = torch_runner.pick_device()
        self._throughput: dict[str, float] = {}

    def logits(self, groups: Mapping[str, Texts]) -> dict[str, np.ndarray]:
        """Logits float32 [rows, labels] per group, in the group's row order; each group is
        batched on its own (its examples/s in ``metrics``). Texts without ids are tokenized
        here, cut at ``max_length`` tokens (ValueError when the teacher has none)."""
        from pocketbert.runtime import torch_runner

        out = {}
        for name, group in groups.items():
            ids = group.ids
            if ids is None:
                if self.max_length is None:
                    raise ValueError(f"group {name!r}: texts without token ids need the "
                                     "teacher's max_length")
                ids = tokenization.encode(self.tokenizer, list(group.texts),
                                          self.max_length)["input_ids"]
            start = time.perf_counter()
            out[name] = torch_runner.predict_logits(
                self.model, ids, self.tokenizer.pad_token_id, batch_size=self.batch_size,
                device=self.device, desc=f"teacher {name}")
            self._throughput[name] = len(ids) / max(time.perf_counter() - start, 1e-9)
        return out

    def metrics(self) -> dict:
        """The device and examples/s of each group scored so far."""
        return {"device": self.device.type,
                **{f"{name}.examples_per_s": v for name, v in self._throughput.items()}}

    @property
    def size_mb(self) -> float | None:
        """Size of the weights file on disk (MB), where the teacher was read from a folder."""
        return None if self.folder is None else size_mb(self.folder / contract.WEIGHTS_FILE)


class ApiTeacher:
    """An endpoint that answers texts with scores (teachers.api: batching, retries, pacing,
    answer cache); no weights, no tokenizer."""

    model = tokenizer = size_mb = None

    def __init__(self, folder: Path, labels: tuple[str, ...], *,
                 params: TeacherParams | None, cache: Path | None) -> None:
        self.folder, self.labels, self.params, self.cache = folder, labels, params, cache
        if params is not None:
            api.check_endpoint(folder, params, labels)
        self._stats: api.ApiStats | None = None

    def logits(self, groups: Mapping[str, Texts]) -> dict[str, np.ndarray]:
        """The endpoint's scores float32 [rows, labels] per group (logits, or log-probabilities
        for api_scores probabilities); all groups go out as one stream of batches. Raises
        ParamsError when this teacher was loaded without params or cache (a stage that only
        reads stored answers), ApiError when the endpoint fails."""
        if self.params is None:
            raise ParamsError(f"{self.folder}: an API teacher loaded without teacher params "
                              "cannot be asked; load it with params=")
        cache = self.cache or api.cache_folder({})  # no cache: the error names --api-cache
        flat = [text for group in groups.values() for text in group.texts]
        scores, stats = api.teacher_logits(flat, self.labels, self.params, cache)
        self._stats = stats
        out, start = {}, 0
        for name, group in groups.items():
            out[name] = scores[start : start + len(group.texts)]
            start += len(group.texts)
        return out

    def metrics(self) -> dict:
        """The last ``logits`` run's counters (api.calls, api.retries, ...)."""
        return {} if self._stats is None else self._stats.metrics()


Teacher = LocalTeacher | ApiTeacher


def starting_classifier(p: TeacherParams, labels: tuple[str, ...]):
    """The classifier the teacher stage starts from, per ``p`` (TeacherParams, mode given or
    fine_tune): the given classifier with its outputs in ``labels`` order (teacher.label_names
    for generic LABEL_0.. names), or teacher.model's backbone with a new head of
    len(labels) outputs; teacher.trust_remote_code either way. Raises ModelError (a folder
    that cannot be found or loaded, labels that do not match)."""
    from pocketbert.training import modeling

    folder = model_folders.resolve(p.model)
    if p.mode == "given":
        return modeling.load_classifier(folder, labels, label_names=p.label_names,
                                        trust_remote_code=p.trust_remote_code)
    return modeling.new_classifier(folder, labels, trust_remote_code=p.trust_remote_code)


def load(folder: Path, labels: tuple[str, ...], *, params: TeacherParams | None = None,
         cache: Path | None = None, batch_size: int | None = None,
         max_length: int = 128) -> Teacher:
    """The teacher the teacher stage wrote to ``folder``.

    A classifier folder loads its weights and tokenizer (``batch_size`` texts per forward
    pass, None: runtime.torch_runner.BATCH_SIZE; texts without ids cut at ``max_length``
    tokens); an endpoint folder is checked against ``params`` (when given:
    ``api.check_endpoint``) and asks the endpoint, with answers
    cached in ``cache``. Raises ModelError for a classifier folder that does not load or
    match ``labels``, DataError for an endpoint folder of other params."""
    if model_folders.is_endpoint(folder):
        return ApiTeacher(folder, labels, params=params, cache=cache)
    from pocketbert.training import modeling

    model = modeling.load_classifier(folder, labels, origin=f"stage input {folder}")
    return LocalTeacher(model, tokenization.load_tokenizer(folder), labels,
                        batch_size=batch_size, max_length=max_length, folder=folder)
