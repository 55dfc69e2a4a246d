"""teacher: produce the teacher classifier in models/teacher.

mode fine_tune: a new classifier head on the backbone named by teacher.model, trained on the
written train rows with early stopping on validation macro-F1 (augmented variants are the
distillation transfer set, not teacher training data: the teacher stands for the classifier
you already have, and changing augmentation does not retrain it). mode given: an already
fine-tuned sequence classifier taken as it is, after checking its labels match labels.json.
Either way the teacher is evaluated on validation and test.

    python -m stages.teacher --tokenize data/tokenize/written --out models/teacher \
        --metrics metrics/teacher.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pocketbert import checkpoints, dataset, evaluation, modeling, params, stage, tokenization
from pocketbert.artifacts import atomic_path, size_mb, write_json

PARAMS = ("teacher",)
INPUTS = ("tokenize",)
OUTPUTS = ("out", "metrics")


def run(p: params.TeacherParams, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    from transformers import set_seed

    from pocketbert import distillation, inference

    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    data = tokenization.load(inputs["tokenize"])
    tokenizer = tokenization.load_tokenizer(Path(inputs["tokenize"]) / "tokenizer")
    folder = checkpoints.resolve(p.model)
    set_seed(p.seed)
    metrics: dict = {}
    if p.mode == "given":
        model = modeling.load_classifier(folder, labels)
    else:
        model = modeling.new_classifier(folder, labels)
        metrics["train_rows"] = len(data["train"])
        result = distillation.train(
            model, data["train"], data["validation"], distillation.TrainConfig.of(p),
            tokenizer.pad_token_id, scratch=Path(outputs["out"]).with_name(".teacher.trainer"))
        metrics["epochs_run"] = result["epochs_run"]
    for split in ("validation", "test"):
        logits, _ = inference.predict_logits(model, data[split]["input_ids"], 64,
                                             tokenizer.pad_token_id, desc=f"teacher {split}")
        metrics.update(evaluation.report(logits, data[split]["label"], labels, split))
    with atomic_path(outputs["out"], directory=True) as tmp:
        modeling.save_classifier(tmp, model.cpu(), tokenizer, labels, "teacher", p)
    metrics["parameters"] = modeling.count_parameters(model)
    metrics["size_mb"] = size_mb(Path(outputs["out"]) / "model.safetensors")
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
