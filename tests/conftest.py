"""Shared fixtures: a params.yaml in a tmp folder and small labelled CSVs written in the test."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from pocketbert.core import params

ROOT = Path(__file__).resolve().parents[1]
LABELS = params.LABELS

# Ten distinct sentences per label, built from templates; texts are unique across all labels.
_SUBJECTS = ("the boiler", "the router", "the printer", "the freezer", "the gate", "the pump",
             "the dryer", "the laptop", "the elevator", "the scanner", "the heater", "the kettle")
_TEMPLATES = {
    "condition": "If {s} starts to rattle, switch it off at once.",
    "constraint": "No more than two people may operate {s} at the same time.",
    "notice": "Please note that {s} will be serviced on Friday.",
    "process": "First unplug {s}, then wipe it down, and finally plug it back in.",
}


def sentences(label: str, n: int = 10) -> list[str]:
    """``n`` distinct sentences of one label (n <= 12)."""
    return [_TEMPLATES[label].format(s=s) for s in _SUBJECTS[:n]]


def small_rows(per_label: int = 10) -> list[dict[str, Any]]:
    """Rows for the CSV format: text, label, label_id (labels interleaved, as in a real file)."""
    rows = []
    by_label = {label: sentences(label, per_label) for label in LABELS}
    for i in range(per_label):
        for label_id, label in enumerate(LABELS):
            rows.append({"text": by_label[label][i], "label": label, "label_id": label_id})
    return rows


def write_csv(path: Path, rows: Iterable[dict[str, Any]],
              columns: Sequence[str] = ("text", "label", "label_id")) -> Path:
    """Write rows (dicts) with the given header, quoting as csv does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def default_params() -> dict[str, dict[str, Any]]:
    """Every section at its dataclass defaults, as YAML-friendly values, except that tiny
    pipelines leave the 1,260 unlabelled transfer texts out (tests of them turn it on)."""
    out = {name: params.as_dict(cls()) for name, cls in params.SECTIONS.items()}
    out["soft_label"]["use_unlabelled"] = False
    return out


def write_tokenized_splits(tok_dir: Path, tokenizer, max_length: int = 32,
                           per_label: int = 12) -> dict[str, list]:
    """The tokenize stage's written output for tiny splits (8 train, 2 validation, 2 test rows
    per label at per_label=12) in ``tok_dir``; returns the rows by split."""
    from datasets import DatasetDict

    from pocketbert.data import dataset, tokenization

    rows: dict[str, list] = {name: [] for name in ("train", "validation", "test")}
    for label in LABELS:
        for i, text in enumerate(sentences(label, per_label)):
            split = "train" if i < 8 else "validation" if i < 10 else "test"
            rows[split].append(dataset.Example(text, label, i + 2))
    DatasetDict({k: tokenization.to_dataset(tokenizer, v, LABELS, max_length)
                 for k, v in rows.items()}).save_to_disk(str(tok_dir / "dataset"))
    dataset.write_labels(tok_dir / "labels.json", LABELS)
    tokenization.write_max_length(tok_dir, max_length)
    return rows


@pytest.fixture
def make_rows() -> Callable[..., list[dict[str, Any]]]:
    """Factory: ``make_rows(per_label=10)`` gives rows for the CSV format."""
    return small_rows


@pytest.fixture
def make_csv(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_csv(rows, name=..., columns=...)`` writes a CSV under tmp_path/raw."""

    def make(rows: Iterable[dict[str, Any]], name: str = "sentences.csv",
             columns: Sequence[str] = ("text", "label", "label_id")) -> Path:
        return write_csv(tmp_path / "raw" / name, rows, columns)

    return make


@pytest.fixture
def small_csv(make_csv: Callable[..., Path]) -> Path:
    """A 40-row CSV, 10 rows per label."""
    return make_csv(small_rows(10))


@pytest.fixture
def write_params(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a params.yaml into tmp_path from the defaults plus nested overrides.

    ``write_params(split={"csv": path}, augment={"factor": 3})`` overrides single keys;
    ``raw=...`` writes the given mapping as it is (for malformed params files).
    """

    def make(raw: dict | None = None, name: str = "params.yaml", **overrides: dict) -> Path:
        data = raw if raw is not None else default_params()
        if raw is None:
            for section, values in overrides.items():
                data.setdefault(section, {}).update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make


# --- tiny in-process models -------------------------------------------------------------------

TINY_WORDS = sorted({w.strip(".,").lower() for label in LABELS for text in sentences(label, 12)
                     for w in text.split()} | {"##s", "##ing", "##ed"})


def tiny_tokenizer():
    """A real fast WordPiece tokenizer over a small vocabulary (specials, a-z, ##a-##z, words)."""
    import string

    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,!?'"]
    vocab += list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    vocab += [w for w in TINY_WORDS if w not in vocab]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


# What padding alone may change in a Core ML program's probabilities, per variant. Padding
# changes the inner dimension of the attention matmuls, so the BLAS kernel's blocking (and so
# the fp32 summation order) differs with the CPU's vector width (AVX-512 vs AVX2). fp32
# program: float32 round-off of sums of a few dozen terms, < 1e-6 on probabilities. Every other
# variant computes in fp16: a different fp32 sum can round an intermediate to the neighbouring
# fp16 value (one ulp, 2**-11 relative), and a few such flips reach the output as a few ulps of
# a probability (one ulp at p in [0.5, 1) is 2**-11 ~ 4.9e-4, seen on an AVX2-only CPU).
# 8 ulps (3.9e-3) allows several flips and stays far under what a broken mask moves on the
# sharp tiny models (test_mil_executor.FP16_TOLERANCE).
FP16_ULP_NEAR_ONE = 2.0**-11
PADDING_TOLERANCE = {"fp32": 1e-6, "fp16": 8 * FP16_ULP_NEAR_ONE, "int8": 8 * FP16_ULP_NEAR_ONE,
                     "palette6": 8 * FP16_ULP_NEAR_ONE, "palette4": 8 * FP16_ULP_NEAR_ONE}


def tiny_classifier(vocab_size: int, labels: Sequence[str] = LABELS, layers: int = 3,
                    seed: int = 0):
    """A random BERT classifier: hidden 32, 2 heads, ``layers`` layers."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={n: i for i, n in enumerate(labels)},
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        initializer_range=0.3)  # sharp enough that masking bugs show
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def tiny_world(tmp_path: Path, write_params: Callable[..., Path]) -> dict[str, Path]:
    """A tokenize output folder and a tiny 'given' teacher classifier folder, on disk."""
    from pocketbert.data import dataset, tokenization

    tokenizer = tiny_tokenizer()
    teacher = tiny_classifier(len(tokenizer))
    teacher_dir = tmp_path / "given_teacher"
    teacher.save_pretrained(str(teacher_dir))
    tokenizer.save_pretrained(str(teacher_dir))

    tok_dir = tmp_path / "tokenize"
    rows = write_tokenized_splits(tok_dir, tokenizer, 32)
    tokenizer.save_pretrained(str(tok_dir / "tokenizer"))
    # augmented variants of the first train rows (a trailing "!")
    variants = [dataset.Example(r.text.rstrip(".") + "!", r.label, r.line, "synonym")
                for r in rows["train"][:6]]
    aug_dir = tmp_path / "tokenize_augmented"
    tokenization.to_dataset(tokenizer, variants, LABELS, 32).save_to_disk(str(aug_dir / "dataset"))
    params_file = write_params(
        teacher={"model": str(teacher_dir), "mode": "given"},
        train_student={"epochs": 2, "batch_size": 8, "copy_layers": [0, 2], "vocab_reserve": 0},
        tokenize={"max_length": 32},
    )
    return {"root": tmp_path, "tokenize": tok_dir, "augmented": aug_dir,
            "given_teacher": teacher_dir, "params": params_file}


# --- secrets and ports for the API tests --------------------------------------------------------


def secret_forms(secret: str) -> dict[str, bytes]:
    """The forms a leaked ``secret`` would take in a file, an output or a log, by name: as it
    is, URL-encoded (``quote`` and ``quote_plus``), and base64 (standard and URL-safe).

    Base64 of a longer text that contains the secret (``user:secret`` in a Basic header)
    encodes it differently for each of the three byte offsets it can start at modulo 3; each
    form here is the part that does not depend on the bytes around it: the encoding of the
    whole 3-byte groups of the secret from offset 0, 1 or 2."""
    import base64
    import urllib.parse

    raw = secret.encode()
    forms = {"plain": raw, "url-encoded": urllib.parse.quote(secret, safe="").encode(),
             "url-encoded (plus)": urllib.parse.quote_plus(secret).encode()}
    for start in range(3):
        whole = raw[start : start + 3 * ((len(raw) - start) // 3)]
        forms[f"base64 at offset {start}"] = base64.b64encode(whole)
        forms[f"urlsafe base64 at offset {start}"] = base64.urlsafe_b64encode(whole)
    return forms


def secret_hits(secret: str, places: dict[str, bytes | str]) -> list[str]:
    """``'<place>: <form>'`` for every place (a name -> its bytes or text) holding any of
    ``secret_forms(secret)``; empty when none does."""
    forms = secret_forms(secret)
    hits = []
    for place, content in places.items():
        data = content.encode() if isinstance(content, str) else content
        hits += [f"{place}: {name}" for name, form in forms.items() if form in data]
    return hits


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (hidden folders such as caches included): path -> bytes."""
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def held_port() -> Iterable[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test, and is not freed for
    another program to take: a socket bound to it that never listens (on Linux a connection to
    a bound, non-listening port is refused with a reset). The socket sets SO_REUSEPORT, so a
    test server may listen on the same port by setting it too (then it answers); any socket
    without it, another program's, cannot bind the port while it is held."""
    import socket

    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(("127.0.0.1", 0))
    try:
        yield held.getsockname()[1]
    finally:
        held.close()


# --- the benchmark's measured variants, for the frontier ------------------------------------------

# name: (size MB, agreement, p50 ms or None); a benchmark's keys are built from these
FRONTIER_ROWS = {
    "teacher.onnx_int8": (23.0, 1.000, 2.0),
    "student.onnx_int8": (6.7, 0.986, 0.6),
    "student.coreml_palette6": (5.0, 0.986, None),
    "student.coreml_palette4": (3.4, 0.976, None),
    "student.coreml_int8": (6.7, 0.986, None),
    "baseline.tfidf_logreg": (2.1, 0.906, 1.6),
}


def frontier_benchmark() -> dict:
    """metrics/benchmark.json keys for FRONTIER_ROWS (the frontier and choose tests)."""
    out: dict = {"test_rows": 212, "teacher.coreml_fp16.size_mb": 45.5}  # size only: no point
    for name, (size, agreement, p50) in FRONTIER_ROWS.items():
        out.update({f"{name}.size_mb": size, f"{name}.macro_f1": agreement - 0.01,
                    f"{name}.agreement_with_teacher": agreement,
                    f"{name}.agreement_with_teacher_ci_low": agreement - 0.02,
                    f"{name}.agreement_with_teacher_ci_high": min(1.0, agreement + 0.02),
                    f"{name}.latency_p50_ms": p50})
    return out


# the fasttext stage on tiny data: few epochs and hash rows, still over the 256 rows fastText's
# product quantizer needs
TINY_FASTTEXT = {"epochs": 5, "bucket": 1000, "quantize_cutoff": 300}


def _update_section(params_file: Path, section: str, values: dict[str, Any]) -> None:
    """Set ``values`` in ``section`` of the params file, keeping its other keys."""
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    raw[section] = {**raw.get(section, {}), **values}
    params_file.write_text(yaml.safe_dump(raw), encoding="utf-8")


def run_fasttext_stage(params_file: Path, tokenize: Path, out: Path) -> dict:
    """The fasttext stage on ``tokenize`` into ``out`` (metrics beside it), with TINY_FASTTEXT
    written into ``params_file``'s fasttext section."""
    from stages import fasttext

    _update_section(params_file, "fasttext", TINY_FASTTEXT)
    return fasttext.main(["--params", str(params_file), "--tokenize", str(tokenize),
                          "--out", str(out), "--metrics", str(out.with_suffix(".json"))])


def write_random_soft_labels(folder: Path, tokenize: Path, augmented: Path | None,
                             unlabelled: Sequence[str] = (), seed: int = 0) -> None:
    """A soft_label folder for ``tokenize`` (+ ``augmented``): random teacher logits per
    split, and per text of ``unlabelled`` (the unlabelled group) when there are any."""
    import numpy as np

    from pocketbert.data import dataset, tokenization
    from pocketbert.data.soft_labels import UNLABELLED, SoftLabels

    data = tokenization.load(tokenize, augmented)
    labels = dataset.read_labels(tokenize / "labels.json")
    rng = np.random.default_rng(seed)
    groups = [(split, len(data[split])) for split in dataset.SPLITS]
    if unlabelled:
        groups.append((UNLABELLED, len(unlabelled)))
    logits = {g: rng.normal(0, 3, (n, len(labels))).astype(np.float32) for g, n in groups}
    folder.mkdir(parents=True, exist_ok=True)
    SoftLabels(labels, logits, {UNLABELLED: list(unlabelled)} if unlabelled else {}).write(folder)


def run_model2vec_stage(params_file: Path, backbone: Path, inputs: dict[str, Path],
                        out: Path) -> dict:
    """The model2vec stage into ``out`` (metrics beside it) with ``backbone`` distilled to
    8-wide vectors and one C; ``inputs``: tokenize, augmented, soft_label folders."""
    from stages import model2vec

    _update_section(params_file, "model2vec",
                    {"backbone": str(backbone), "pca_dims": 8, "c_values": [1.0]})
    return model2vec.main(["--params", str(params_file), "--tokenize", str(inputs["tokenize"]),
                           "--augmented", str(inputs["augmented"]),
                           "--soft-label", str(inputs["soft_label"]),
                           "--out", str(out), "--metrics", str(out.with_suffix(".json"))])
