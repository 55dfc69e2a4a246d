"""WordPiece tokenization of the splits into token ids (no padding stored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pocketbert.dataset import Example
from pocketbert.errors import ModelError


def load_tokenizer(path: str | Path):
    """The fast WordPiece tokenizer of a model folder."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load a tokenizer ({exc}); the folder needs "
                         "tokenizer.json or vocab.txt") from exc
    if not tokenizer.is_fast:
        raise ModelError(f"{path}: no fast tokenizer; the folder needs tokenizer.json or "
                         "vocab.txt")
    return tokenizer


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, list]:
    """Token ids per text, truncated to max_length; also the untruncated lengths."""
    full = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return {"input_ids": ids, "full_length": [len(x) for x in full]}


def to_dataset(tokenizer, rows: list[Example], labels: tuple[str, ...], max_length: int):
    """A datasets.Dataset with text, label (id), input_ids and the untruncated length."""
    from datasets import Dataset

    label_id = {name: i for i, name in enumerate(labels)}
    enc = encode(tokenizer, [r.text for r in rows], max_length)
    return Dataset.from_dict({
        "text": [r.text for r in rows],
        "label": [label_id[r.label] for r in rows],
        "augmentation": [r.augmentation for r in rows],
        "input_ids": enc["input_ids"],
        "full_length": enc["full_length"],
    })


def length_stats(full_lengths: list[int], max_length: int) -> dict[str, float]:
    """Length percentiles (before truncation) and the share of truncated examples."""
    arr = np.asarray(full_lengths)
    return {
        "length_p50": float(np.percentile(arr, 50)),
        "length_p95": float(np.percentile(arr, 95)),
        "length_max": int(arr.max()),
        "truncated": int((arr > max_length).sum()),
        "truncation_rate": float((arr > max_length).mean()),
    }
