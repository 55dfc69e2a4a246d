"""soft_label: run the teacher once and store its LOGITS for every training example.

Logits, not probabilities: train_student divides them by the temperature itself; storing
softmax outputs and softening them again would flatten the targets towards uniform. Covers the
(augmented) train split and validation (distillation targets) and test (only to measure how
often the student agrees with the teacher). With soft_label.use_unlabelled, also the texts of
soft_label.unlabelled_csv (rows repeating a labelled text are skipped and counted): the student
learns them through the distillation term only, except soft_label.calibration_share of them
(chosen by a hash of each text, dataset.held_out_by_text), kept from training so that the
calibrate stage can measure the student's agreement with the teacher on texts it never saw,
beside the validation split: agreement needs the teacher's label only, not a gold one. With
teacher.mode api the same texts go to the endpoint instead (pocketbert.teachers.api: answers
cached in --api-cache, outside DVC; calls and cache hits are metrics) and probabilities are
stored as log-probabilities.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import numpy as np

from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.data.soft_labels import CALIBRATION, TEXT_GROUPS, UNLABELLED, SoftLabels
from pocketbert.teachers import api
from pocketbert.teachers import teacher as teachers

PARAMS = ("soft_label", *api.PARAMS)
INPUTS = ("teacher", "tokenize", "augmented")
OUTPUTS = ("out", "metrics")
OPTIONS = ("api_cache",)


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.soft_label
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    teacher = teachers.load(inputs["teacher"], labels, params=params.teacher,
                            cache=inputs.get("api_cache"), batch_size=p.batch_size,
                            max_length=tokenization.read_max_length(inputs["tokenize"]))
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    groups = {split: teachers.Texts(list(data[split]["text"]), data[split]["input_ids"])
              for split in dataset.SPLITS}
    metrics: dict = {}
    if p.use_unlabelled:
        labelled = {text.casefold() for split in dataset.SPLITS for text in data[split]["text"]}
        texts, skipped = dataset.load_unlabelled_csv(p.unlabelled_csv, exclude=labelled)
        held = dataset.held_out_by_text(texts, p.calibration_share)
        text_groups = {UNLABELLED: [t for t, h in zip(texts, held, strict=True) if not h],
                       CALIBRATION: [t for t, h in zip(texts, held, strict=True) if h]}
        # tokenized by a local teacher itself; an empty group is left out
        groups.update({g: teachers.Texts(part) for g, part in text_groups.items() if part})
        metrics["unlabelled.skipped_labelled_texts"] = skipped
        metrics.update({f"{g}.rows": len(part) for g, part in text_groups.items()})
        if p.calibration_share and not all(text_groups.values()):
            warnings.warn(f"soft_label.calibration_share {p.calibration_share} leaves the "
                          + " and the ".join(f"{g} group" for g, part in text_groups.items()
                                             if not part)
                          + f" of {p.unlabelled_csv} empty ({len(texts)} texts)", stacklevel=2)
    elif p.calibration_share:
        warnings.warn(f"soft_label.calibration_share is {p.calibration_share} but "
                      "soft_label.use_unlabelled is false: there are no calibration texts, and "
                      "the deferral threshold is chosen on validation alone", stacklevel=2)
    with atomic_path(outputs["out"], directory=True) as tmp:
        logits = teacher.logits(groups)  # inside: no folder if the teacher fails
        for split, part in logits.items():
            metrics[f"{split}.rows"] = len(part)
            if split in dataset.SPLITS:
                metrics[f"{split}.teacher_gold_agreement"] = evaluation.accuracy(
                    np.asarray(data[split]["label"]), part.argmax(-1))
        SoftLabels(labels, logits, {g: groups[g].texts for g in TEXT_GROUPS if g in groups}
                   ).write(tmp)
    metrics.update(teacher.metrics())
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
