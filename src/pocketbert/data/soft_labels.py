"""The soft_label stage's folder, declared once: the teacher's logits per group of texts.

The writer (stages/soft_label.py) and every reader (training.student, the benchmark's row of an
API teacher, runs/recipe_check) go through ``SoftLabels``, so the file names and the checks live
here only. The folder holds ``<group>_logits.npy`` (float32 [rows, labels], rows in the order
of the tokenized split: groups train, validation, test and, with soft_label.use_unlabelled,
the text groups unlabelled and calibration), ``<text group>.json`` ({"texts": [...]}, a text
group's texts in the row order of its logits) and ``meta.json`` ({"kind": "logits",
"labels": [...], "rows": {group: n}}).

The text groups split soft_label.unlabelled_csv: ``unlabelled`` is the transfer text the student
learns by the KD term; ``calibration`` (soft_label.calibration_share of the texts, never
trained on) is where the calibrate stage measures the student's agreement with the teacher
beside the validation split, to choose the deferral threshold on more texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pocketbert.core.artifacts import read_json, write_json
from pocketbert.core.errors import DataError

META_FILE = "meta.json"
UNLABELLED = "unlabelled"
"the group of unlabelled transfer texts, learnt through the distillation term only"
CALIBRATION = "calibration"
"the group of unlabelled texts kept from training, for the deferral threshold (calibrate)"
TEXT_GROUPS = (UNLABELLED, CALIBRATION)
"the groups whose texts the folder holds (the splits' texts are the tokenize stage's)"
FIX = "re-run 'dvc repro soft_label'"


def logits_file(group: str) -> str:
    """File name of a group's logits."""
    return f"{group}_logits.npy"


def texts_file(group: str) -> str:
    """File name of a text group's texts."""
    return f"{group}.json"


@dataclass(frozen=True)
class SoftLabels:
    """Teacher logits per group ([rows, labels] float32, labels in ``labels`` order) and the
    texts of the text groups present (TEXT_GROUPS), in the row order of their logits."""

    labels: tuple[str, ...]
    logits: Mapping[str, np.ndarray]
    texts: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def unlabelled_texts(self) -> Sequence[str] | None:
        """The transfer texts the student learns by the KD term; None without that group."""
        return self.texts.get(UNLABELLED)

    def write(self, folder: Path) -> None:
        """Write the folder's files into ``folder`` (an atomic temp folder of the stage)."""
        for group, part in self.logits.items():
            np.save(folder / logits_file(group), part)
        for group, texts in self.texts.items():
            write_json(folder / texts_file(group), {"texts": list(texts)})
        write_json(folder / META_FILE, {"kind": "logits", "labels": list(self.labels),
                                        "rows": {g: len(p) for g, p in self.logits.items()}})

    @classmethod
    def read(cls, folder: Path, labels: tuple[str, ...], rows: Mapping[str, int], *,
             text_groups: Sequence[str] = ()) -> SoftLabels:
        """The groups of ``rows`` ({group: expected row count}), checked against ``labels``;
        also each of ``text_groups`` (of TEXT_GROUPS) with its texts, when the folder has it.

        Raises DataError naming the file and 'dvc repro soft_label' as the fix: no meta.json,
        another kind or labels, a missing file, or a shape other than (rows, labels)."""
        meta_file = folder / META_FILE
        if not meta_file.is_file():
            raise DataError(f"{meta_file}: not found; run 'dvc repro soft_label'")
        meta = read_json(meta_file)
        if meta.get("kind") != "logits":
            raise DataError(f"{meta_file}: soft labels must be teacher logits, found "
                            f"{meta.get('kind')!r}; {FIX}")
        if tuple(meta.get("labels", ())) != labels:
            raise DataError(f"{meta_file}: labels {meta.get('labels')} differ from labels.json "
                            f"{list(labels)}; {FIX}")
        expected = dict(rows)
        texts = {}
        for group in text_groups:
            if group in meta.get("rows", {}):
                path = folder / texts_file(group)
                if not path.is_file():
                    raise DataError(f"{path}: not found; {FIX}")
                texts[group] = list(read_json(path)["texts"])
                expected[group] = len(texts[group])
        out = {}
        for group, n in expected.items():
            path = folder / logits_file(group)
            if not path.is_file():
                raise DataError(f"{path}: not found; {FIX}")
            logits = np.load(path)
            if logits.shape != (n, len(labels)):
                raise DataError(f"{path}: shape {logits.shape} does not match the {group} rows "
                                f"{(n, len(labels))} (rows, labels); {FIX}")
            out[group] = logits
        return cls(labels, out, texts)
