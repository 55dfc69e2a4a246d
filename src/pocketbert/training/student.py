"""The student's side of distillation: stored teacher logits, initialisation, its own tokens.

Distillation needs only the teacher's logits per text (soft_label stores them), so teacher and
student may differ in architecture, width and tokenizer. The student starts from:

- ``copy``: chosen layers of the teacher (DistilBERT-style; the teacher's tokenizer);
- ``pretrained``: chosen layers of its own pre-trained backbone (train_student.backbone, by
  default the packaged all-MiniLM-L6-v2) with that backbone's tokenizer and a new head;
- ``fresh``: random weights of a smaller config of the teacher's architecture.

Every split is re-tokenized with the student's (optionally trimmed) tokenizer: the student sees
what the device will see. Unlabelled transfer texts join the training split with the label
distillation.UNLABELLED, so they are learnt through the KD term only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pocketbert.core import model_folders
from pocketbert.core.errors import ParamsError
from pocketbert.data import dataset, soft_labels, tokenization, vocabulary
from pocketbert.data.soft_labels import SoftLabels
from pocketbert.training import modeling


def read_soft_labels(folder: Path, data, labels: tuple[str, ...]) -> SoftLabels:
    """The soft_label folder's logits of every split (checked against the tokenized data's
    rows and the labels) and of the unlabelled transfer texts when it has them (never the
    calibration texts: those are kept from training). Raises
    DataError naming the file and 'dvc repro soft_label' as the fix (SoftLabels.read)."""
    return SoftLabels.read(folder, labels, {split: len(data[split]) for split in dataset.SPLITS},
                           text_groups=(soft_labels.UNLABELLED,))


def init_student(p, teacher, teacher_tokenizer, labels: tuple[str, ...]):
    """The untrained student and its tokenizer (before trimming), per train_student.init.

    ``p``: TrainStudentParams; ``teacher``, ``teacher_tokenizer``: None for a teacher without
    weights (an endpoint). Raises ParamsError when init copy or fresh has no teacher weights
    to start from, a layer index out of range or heads that do not divide the hidden size;
    ModelError for a backbone folder that cannot be loaded."""
    if teacher is None and p.init != "pretrained":
        raise ParamsError(
            f"'train_student.init' is {p.init!r}, but teacher.mode api has no teacher weights "
            "or config to copy; set train_student.init: pretrained (layers of "
            "train_student.backbone, with its own tokenizer)", key="train_student.init",
            source="params.yaml")
    if p.init == "copy":
        return modeling.student_from_layers(teacher, p.copy_layers), teacher_tokenizer
    if p.init == "pretrained":
        origin = "the params key 'train_student.backbone'"
        folder = model_folders.resolve(p.backbone, origin)
        backbone = modeling.new_classifier(folder, labels, origin)
        return modeling.keep_layers(backbone, p.copy_layers), tokenization.load_tokenizer(folder)
    return (modeling.fresh_student(teacher, p.hidden_size, p.num_layers, p.num_heads,
                                   p.intermediate_size, p.seed), teacher_tokenizer)


def build(p, teacher, teacher_tokenizer, labels: tuple[str, ...], written_train: list[str],
          max_length: int):
    """The untrained student (init_student) with its tokenizer, trimmed or clustered per
    train_student.trim_vocab / vocab_clusters on ``written_train`` (the written train texts,
    not their augmented variants), and its vocabulary figures:
    (model, tokenizer, {'teacher.vocab_size' (with a teacher tokenizer),
    'student.backbone_vocab_size', 'student.vocab_size', 'student.embedding_rows'}).
    Every random draw is seeded here (train_student.seed, transformers.set_seed). Raises
    ParamsError and ModelError as init_student, trim and cluster."""
    from transformers import set_seed

    set_seed(p.seed)
    metrics: dict = {}
    if teacher_tokenizer is not None:
        metrics["teacher.vocab_size"] = len(teacher_tokenizer)
    model, tokenizer = init_student(p, teacher, teacher_tokenizer, labels)
    metrics["student.backbone_vocab_size"] = len(tokenizer)
    if p.trim_vocab:
        if p.vocab_clusters:
            tokenizer = cluster(model, tokenizer, written_train, p.vocab_reserve,
                                p.vocab_clusters, max_length, p.seed, p.embedding_rank,
                                p.vocab_max_rows)
        else:
            tokenizer = trim(model, tokenizer, written_train, p.vocab_reserve, max_length,
                             p.vocab_max_rows)
    metrics["student.vocab_size"] = len(tokenizer)
    metrics["student.embedding_rows"] = model.get_input_embeddings().weight.shape[0]
    return model, tokenizer, metrics


def hidden_layer_map(copy_layers: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The (student, teacher) ``hidden_states`` index pairs of a student copied from teacher
    ``copy_layers``: the embeddings' output (0, 0), then student layer i's output against the
    output of the teacher layer it copies (i + 1, copy_layers[i] + 1)."""
    return ((0, 0), *((i + 1, layer + 1) for i, layer in enumerate(copy_layers)))


def relation_layers(copy_layers: tuple[int, ...]) -> tuple[int, int]:
    """The (student, teacher) encoder layer indices whose attention relations are compared for
    a student copied from teacher ``copy_layers``: its last layer and the teacher layer it
    copies (with the default [0, 5] of a 6-layer teacher, the teacher's last layer, the layer
    MiniLMv2 distils)."""
    return len(copy_layers) - 1, copy_layers[-1]


def trim(student, tokenizer, corpus: list[str], reserve: int, max_length: int,
         max_rows: int | None = None):
    """The tokenizer trimmed to the tokens of ``corpus`` (the written train texts, in the
    student's own tokenization) plus the vocabulary module's keep rules, at most ``max_rows``
    of them (vocabulary.kept_token_ids); the student's embedding rows follow. Returns the
    trimmed tokenizer."""
    corpus_ids = tokenization.encode(tokenizer, corpus, max_length)["input_ids"]
    kept = vocabulary.kept_token_ids(tokenizer, corpus_ids, reserve, max_rows)
    vocabulary.trim_embeddings(student, kept)
    return vocabulary.trimmed_tokenizer(tokenizer, kept)


def cluster(student, tokenizer, corpus: list[str], reserve: int, clusters: int,
            max_length: int, seed: int, rank: int | None = None, max_rows: int | None = None):
    """Like ``trim``, but the tokens trimming would drop share ``clusters`` embedding rows
    (vocabulary.cluster_rows) instead: the tokenizer stays whole (the teacher's pieces on
    every text) and the student's word embeddings become a modeling.RemappedEmbedding,
    factorised to ``rank`` unless it is None; ``max_rows`` caps the exact rows as in ``trim``.
    Returns the tokenizer, unchanged. Raises ParamsError (a rank whose factors would not be
    smaller than the rows: modeling.factorise; a cap below the always-kept tokens)."""
    corpus_ids = tokenization.encode(tokenizer, corpus, max_length)["input_ids"]
    kept = vocabulary.kept_token_ids(tokenizer, corpus_ids, reserve, max_rows)
    weight = student.get_input_embeddings().weight  # [vocab, hidden]
    remap, rows = vocabulary.cluster_rows(weight, kept, clusters, seed)
    modeling.install_remapped_embedding(student, remap, rows, rank)
    return tokenizer


def student_splits(data, soft: dict[str, np.ndarray], tokenizer, max_length: int,
                   unlabelled: list[str] | None = None) -> dict:
    """Each split re-tokenized with the student's tokenizer, with a teacher_logits column.

    ``unlabelled`` texts (with soft['unlabelled']) are appended to train with the label
    distillation.UNLABELLED and augmentation 'unlabelled'."""
    from datasets import Dataset, concatenate_datasets

    from pocketbert.training.distillation import UNLABELLED

    splits = {}
    for split in dataset.SPLITS:
        ids = tokenization.encode(tokenizer, list(data[split]["text"]), max_length)["input_ids"]
        splits[split] = (data[split].remove_columns(["input_ids"])
                         .add_column("input_ids", ids)
                         .add_column("teacher_logits", soft[split].tolist()))
    if unlabelled:
        enc = tokenization.encode(tokenizer, unlabelled, max_length)
        extra = Dataset.from_dict({
            "text": unlabelled, "label": [UNLABELLED] * len(unlabelled),
            "augmentation": ["unlabelled"] * len(unlabelled),
            "full_length": enc["full_length"], "input_ids": enc["input_ids"],
            "teacher_logits": soft["unlabelled"].tolist(),
        }, features=splits["train"].features)
        splits["train"] = concatenate_datasets([splits["train"], extra])
    return splits
