"""model2vec: Model2Vec static embeddings with a linear head, two ways.

What a user could ship instead of a distilled student, measured by the benchmark beside it.
The token vectors are distilled once by model2vec from ``model2vec.backbone`` (the packaged
MiniLM by default, a local folder: nothing is downloaded); a text is the mean of its tokens'
vectors. Two heads (logistic regression, C picked on validation) make two pipelines:

- ``plain``: fitted on the written train rows' labels, as the TF-IDF baseline and fastText are;
  C by validation macro-F1;
- ``distilled``: fitted on the teacher's probabilities (soft labels at temperature 1) of every
  text the student learns from: the train rows, their augmented variants and, where the
  soft_label stage labelled them, the unlabelled transfer texts; C by validation agreement
  with the teacher.

Writes each as a model2vec pipeline folder (``out/plain``, ``out/distilled``) with labels.json,
the label names of the head's output order. Load one with model2vec alone:
``StaticModelPipeline.from_pretrained(folder).predict_proba(texts)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from pocketbert.core import contract, evaluation, model_folders, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.data.soft_labels import UNLABELLED, SoftLabels
from pocketbert.training import model2vec_model

PARAMS = ("model2vec",)
INPUTS = ("tokenize", "augmented", "soft_label")
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.model2vec
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    written = tokenization.load(inputs["tokenize"])
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    soft = SoftLabels.read(inputs["soft_label"], labels,
                           {split: len(data[split]) for split in dataset.SPLITS},
                           text_groups=(UNLABELLED,))
    folder = model_folders.resolve(p.backbone, origin="the params key 'model2vec.backbone'")
    start = time.perf_counter()
    model = model2vec_model.distill(folder, p)
    metrics: dict = {"distill_seconds": time.perf_counter() - start,
                     "vocabulary": len(model.tokens), "dim": int(model.embedding.shape[1])}
    print(f"model2vec: {metrics['vocabulary']:,} token vectors of {metrics['dim']} in "
          f"{metrics['distill_seconds']:.0f} s", file=sys.stderr, flush=True)
    validation = model2vec_model.encode(model, written["validation"]["text"])
    gold = np.asarray(written["validation"]["label"])
    teacher = soft.logits["validation"].argmax(1)
    transfer = list(data["train"]["text"]) + list(soft.unlabelled_texts or [])
    targets = np.concatenate([soft.logits["train"], soft.logits.get(
        UNLABELLED, np.zeros((0, len(labels)), dtype=np.float32))])
    fits = {
        model2vec_model.PLAIN: (written["train"]["text"],
                                np.asarray(written["train"]["label"]),
                                lambda pred: evaluation.macro_f1(gold, pred, len(labels))),
        model2vec_model.DISTILLED: (transfer, evaluation.softmax(targets),
                                    lambda pred: float((pred == teacher).mean())),
    }
    with atomic_path(outputs["out"], directory=True) as tmp:
        for name, (texts, target, score) in fits.items():
            start = time.perf_counter()
            head, c = model2vec_model.fit_head(model2vec_model.encode(model, texts), target,
                                               validation, score, p, len(labels))
            model2vec_model.save(model, head, tmp / name)
            dataset.write_labels(tmp / name / contract.LABELS_FILE, labels)
            pipeline = model2vec_model.load(tmp / name)
            pred = model2vec_model.probabilities(pipeline, written["validation"]["text"]).argmax(1)
            metrics.update({
                f"{name}.train_rows": len(texts), f"{name}.c": c,
                f"{name}.train_seconds": time.perf_counter() - start,
                f"{name}.size_mb": size_mb(tmp / name),
                f"{name}.parameters": model2vec_model.count_parameters(pipeline),
                f"{name}.validation.macro_f1": evaluation.macro_f1(gold, pred, len(labels)),
                f"{name}.validation.agreement_with_teacher": float((pred == teacher).mean())})
            print(f"model2vec {name}: {len(texts):,} texts, C {c:g}, "
                  f"{metrics[f'{name}.size_mb']:.2f} MB, validation macro-F1 "
                  f"{metrics[f'{name}.validation.macro_f1']:.3f}, agreement with the teacher "
                  f"{metrics[f'{name}.validation.agreement_with_teacher']:.3f}",
                  file=sys.stderr, flush=True)
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
