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

    python -m stages.teacher --tokenize data/tokenize/written --out models/teacher \
        --metrics metrics/teacher.json [--api-cache .cache/pocketbert/api]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pocketbert.core import evaluation, model_folders, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.training import modeling

PARAMS = ("teacher",)
INPUTS = ("tokenize",)
OUTPUTS = ("out", "metrics")
OPTIONS = ("api_cache",)


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    if params.teacher.mode == "api":
        return _run_api(params.teacher, inputs, outputs)
    from transformers import set_seed

    from pocketbert.runtime import torch_runner
    from pocketbert.training import distillation

    p = params.teacher
    labels = dataset.read_labels(inputs["tokenize"] / "labels.json")
    data = tokenization.load(inputs["tokenize"])
    tokenizer = tokenization.load_tokenizer(inputs["tokenize"] / "tokenizer")
    folder = model_folders.resolve(p.model)
    set_seed(p.seed)
    metrics: dict = {}
    if p.mode == "given":
        model = modeling.load_classifier(folder, labels, label_names=p.label_names,
                                         trust_remote_code=p.trust_remote_code)
        # which output id of the given classifier each pipeline label was read from
        metrics.update({f"label_map.{label}": source for label, source in
                        zip(labels, model.pocketbert_label_order, strict=True)})
    else:
        model = modeling.new_classifier(folder, labels, trust_remote_code=p.trust_remote_code)
        metrics["train_rows"] = len(data["train"])
        result = distillation.train(
            model, data["train"], data["validation"], distillation.TrainConfig.of(p),
            tokenizer.pad_token_id, scratch=outputs["out"].with_name(".teacher.trainer"))
        metrics["epochs_run"] = result["epochs_run"]
    for split in ("validation", "test"):
        logits, _ = torch_runner.predict_logits(model, data[split]["input_ids"], 64,
                                             tokenizer.pad_token_id, desc=f"teacher {split}")
        metrics.update(evaluation.report(logits, data[split]["label"], labels, split))
    with atomic_path(outputs["out"], directory=True) as tmp:
        modeling.save_classifier(tmp, model.cpu(), tokenizer, labels, "teacher", p)
    metrics["parameters"] = modeling.count_parameters(model)
    metrics["size_mb"] = size_mb(outputs["out"] / "model.safetensors")
    write_json(outputs["metrics"], metrics)
    return metrics


def _run_api(p, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    """mode api: the endpoint's scores of the validation and test texts, and endpoint.json."""
    from pocketbert.teachers import api

    cache = api.cache_folder(inputs)
    labels = dataset.read_labels(inputs["tokenize"] / "labels.json")
    data = tokenization.load(inputs["tokenize"])
    splits = ("validation", "test")
    texts = [text for split in splits for text in data[split]["text"]]
    logits, stats = api.teacher_logits(texts, labels, p, cache)  # [texts, labels]
    metrics: dict = {}
    start = 0
    for split in splits:
        end = start + len(data[split])
        metrics.update(evaluation.report(logits[start:end], data[split]["label"], labels, split))
        start = end
    metrics.update(stats.metrics())
    with atomic_path(outputs["out"], directory=True) as tmp:
        api.write_endpoint(tmp, p, labels)
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
