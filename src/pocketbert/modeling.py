"""Teacher and student classifiers: loading, label checks, and student initialisation."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from pocketbert.checkpoints import read_config
from pocketbert.errors import ModelError


def label_maps(labels: tuple[str, ...]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}


def new_classifier(backbone: Path, labels: tuple[str, ...], key: str = "teacher.model"):
    """A BERT sequence classifier on ``backbone`` with a new head for ``labels``."""
    from transformers import BertForSequenceClassification

    read_config(backbone, key)
    return BertForSequenceClassification.from_pretrained(
        str(backbone), num_labels=len(labels), **label_maps(labels))


def load_classifier(folder: Path, labels: tuple[str, ...], key: str = "teacher.model"):
    """A fine-tuned classifier, checked to predict exactly ``labels`` in that order."""
    from transformers import BertForSequenceClassification

    config = read_config(folder, key)
    found = config.get("id2label") or {}
    ordered = tuple(found[str(i)] for i in range(len(found))) if found else ()
    if ordered != tuple(labels):
        raise ModelError(
            f"{folder / 'config.json'}: the classifier's labels {list(ordered)} differ from "
            f"labels.json {list(labels)}; set split.labels in params.yaml to the classifier's "
            "labels in its id order, or give a classifier trained on these labels"
        )
    return BertForSequenceClassification.from_pretrained(str(folder))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def student_from_layers(teacher, layers: tuple[int, ...]):
    """DistilBERT-style student: embeddings, the chosen encoder layers, pooler and head copied."""
    from transformers import BertForSequenceClassification

    n = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ModelError(f"params.yaml 'train_student.copy_layers': layer index {bad[0]} is out of "
                         f"range; the teacher has layers 0..{n - 1}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = BertForSequenceClassification(config)
    state = {k: v for k, v in teacher.state_dict().items() if ".encoder.layer." not in k}
    for new, old in enumerate(layers):
        prefix = f"bert.encoder.layer.{old}."
        for k, v in teacher.state_dict().items():
            if k.startswith(prefix):
                state[f"bert.encoder.layer.{new}." + k[len(prefix):]] = v
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise ModelError(f"teacher weights do not fit the student: missing {missing}, "
                         f"unexpected {unexpected}")
    return student


def fresh_student(teacher, hidden_size: int | None, num_layers: int, num_heads: int,
                  intermediate_size: int | None, seed: int):
    """A randomly initialised student with the teacher's vocabulary and labels."""
    from transformers import BertForSequenceClassification

    hidden = hidden_size or teacher.config.hidden_size
    if hidden % num_heads:
        raise ModelError(f"params.yaml 'train_student.num_heads': {num_heads} does not divide "
                         f"hidden size {hidden}; pick a divisor")
    config = copy.deepcopy(teacher.config)
    config.hidden_size = hidden
    config.num_hidden_layers = num_layers
    config.num_attention_heads = num_heads
    config.intermediate_size = intermediate_size or 4 * hidden
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def save_classifier(folder: Path, model, tokenizer, labels: tuple[str, ...], section: str,
                    params: object) -> None:
    """Weights, tokenizer, labels.json and the resolved params of the run, side by side."""
    import yaml

    from pocketbert.dataset import write_labels
    from pocketbert.params import as_dict

    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    write_labels(folder / "labels.json", labels)
    (folder / "params.yaml").write_text(
        yaml.safe_dump({section: as_dict(params)}, sort_keys=False), encoding="utf-8")


# A large negative number rather than -inf or float32's minimum: it survives the cast to fp16
# (max 65504) in Core ML's fp16 programs, and exp(-10000) is exactly 0 in both precisions.
MASKED = -10_000.0


class DeviceClassifier(torch.nn.Module):
    """A BERT classifier for export: (input_ids, attention_mask) [batch, seq] -> logits.

    transformers' own mask helpers use ops the Core ML converter does not support, so the
    additive attention mask is built here and the embeddings, encoder, pooler and classifier
    are called directly. Eager attention: plain matmul + softmax ops in the exported graph.
    ``probabilities=True`` appends a softmax (Core ML classifiers report probabilities).
    """

    def __init__(self, model, probabilities: bool = False) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        model.set_attn_implementation("eager")
        self.bert, self.classifier = model.bert, model.classifier
        self.probabilities = probabilities

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask[:, None, None, :].to(torch.float32)  # [batch, 1, 1, seq]
        additive = (1.0 - keep) * MASKED
        hidden = self.bert.embeddings(input_ids=input_ids.long())  # [batch, seq, hidden]
        hidden = self.bert.encoder(hidden, attention_mask=additive).last_hidden_state
        logits = self.classifier(self.bert.pooler(hidden))  # [batch, labels]
        return torch.softmax(logits, dim=-1) if self.probabilities else logits
