"""teacher: produce the teacher classifier in models/teacher.

Any sequence classifier transformers loads (BERT, RoBERTa, MPNet, DeBERTa-v2, ELECTRA,
DistilBERT, ...); code shipped in a model folder runs only with teacher.trust_remote_code.
mode fine_tune: a new classifier head on the backbone named by teacher.model, trained on the
written train rows with early stopping on validation macro-F1 (augmented variants are the
distillation transfer set, not teacher training data: the teacher stands for the classifier
you already have, and changing augmentation does not retrain it). mode given: an already
fine-tuned sequence classifier taken as it is, after checking its labels match labels.json.
Either way the teacher is evaluated on validation and test. mode api: no weights; the endpoint
teacher.api_url is asked for the validation and test texts (answers cached in --api-cache, outside
DVC), which checks that it answers every label by name, and its accuracy and macro-F1 are
recorded with the call counters; the output folder holds endpoint.json (URL, fields, labels;
never the headers).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.teachers import api
from pocketbert.teachers import teacher as teachers
from pocketbert.training import modeling

PARAMS = ("teacher",)
INPUTS = ("tokenize",)
OUTPUTS = ("out", "metrics")
OPTIONS = ("api_cache",)


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.teacher
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    data = tokenization.load(inputs["tokenize"])
    splits = ("validation", "test")
    with atomic_path(outputs["out"], directory=True) as tmp:  # no folder if scoring fails
        teacher, metrics = _build(p, data, labels, inputs, tmp, outputs["out"])
        logits = teacher.logits({split: teachers.Texts(list(data[split]["text"]),
                                                       data[split]["input_ids"])
                                 for split in splits})
    for split in splits:
        metrics.update(evaluation.report(logits[split], data[split]["label"], labels, split))
    metrics.update(teacher.metrics())
    if teacher.model is not None:
        metrics["parameters"] = modeling.count_parameters(teacher.model)
        metrics["size_mb"] = size_mb(outputs["out"] / contract.WEIGHTS_FILE)
    write_json(outputs["metrics"], metrics)
    return metrics


def _build(p, data, labels: tuple[str, ...], inputs: stage.Paths, tmp: Path,
           out: Path) -> tuple[teachers.Teacher, dict]:
    """Write the teacher into ``tmp`` (renamed to ``out`` on success): the fine-tuned or given
    classifier folder, or the endpoint's endpoint.json; the teacher and its build metrics."""
    if p.mode == "api":
        api.write_endpoint(tmp, p, labels)
        return teachers.ApiTeacher(tmp, labels, params=p,
                                   cache=api.cache_folder(inputs)), {}
    from transformers import set_seed

    from pocketbert.training import distillation

    tokenizer = tokenization.load_tokenizer(inputs["tokenize"] / "tokenizer")
    set_seed(p.seed)
    metrics: dict = {}
    model = teachers.starting_classifier(p, labels)
    if p.mode == "given":
        # which output id of the given classifier each pipeline label was read from
        metrics.update({f"label_map.{label}": source for label, source in
                        zip(labels, model.pocketbert_label_order, strict=True)})
    else:
        metrics["train_rows"] = len(data["train"])
        result = distillation.train(
            model, data["train"], data["validation"], distillation.TrainConfig.of(p),
            tokenizer.pad_token_id, scratch=out.with_name(".teacher.trainer"))
        metrics["epochs_run"] = result["epochs_run"]
        metrics.update(distillation.class_weight_metrics(result, labels))
    modeling.save_classifier(tmp, model.cpu(), tokenizer, labels, "teacher", p)
    return teachers.LocalTeacher(model, tokenizer, labels), metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
