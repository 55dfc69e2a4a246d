"""WordPiece tokenization of the splits into token ids (no padding stored)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core import contract
from pocketbert.core.artifacts import write_json
from pocketbert.core.errors import ModelError
from pocketbert.data.dataset import Example


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
    if not texts:  # the fast tokenizer cannot batch zero texts
        return {"input_ids": [], "full_length": []}
    full = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return {"input_ids": ids, "full_length": [len(x) for x in full]}


def to_dataset(tokenizer, rows: list[Example], labels: tuple[str, ...], max_length: int):
    """A datasets.Dataset with text, label (id), augmentation, input_ids and the untruncated
    length. The schema is explicit so that an empty split (no variants) saves and loads."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features({
        "text": Value("string"), "label": Value("int64"), "augmentation": Value("string"),
        "input_ids": Sequence(Value("int32")), "full_length": Value("int32"),
    })
    label_id = {name: i for i, name in enumerate(labels)}
    enc = encode(tokenizer, [r.text for r in rows], max_length)
    return Dataset.from_dict({
        "text": [r.text for r in rows],
        "label": [label_id[r.label] for r in rows],
        "augmentation": [r.augmentation for r in rows],
        "input_ids": enc["input_ids"],
        "full_length": enc["full_length"],
    }, features=features)


def load(written: str | Path, augmented: str | Path | None = None):
    """The tokenized splits (DatasetDict); with ``augmented``, train = written + variants.

    Row order is fixed (written rows, then variants) so stored teacher logits line up.
    """
    from datasets import concatenate_datasets, load_from_disk

    data = load_from_disk(str(Path(written) / "dataset"), keep_in_memory=True)
    if augmented is not None:
        extra = load_from_disk(str(Path(augmented) / "dataset"), keep_in_memory=True)
        data["train"] = concatenate_datasets([data["train"], extra])
    return data


LENGTH_STEP = 8
"a length that follows the data is rounded up to a multiple of this"


def data_max_length(full_lengths: Sequence[int], percentile: float, cap: int) -> int:
    """The length that follows the data (tokenize.length_percentile): the ``percentile``
    (0, 100] of ``full_lengths`` (token counts before truncation, [CLS] and [SEP] included;
    numpy's 'higher' method: a length some text has), rounded up to a multiple of LENGTH_STEP,
    at least LENGTH_STEP and at most ``cap`` (tokenize.max_length).

    Raises ValueError for no lengths."""
    if len(full_lengths) == 0:
        raise ValueError("data_max_length: no lengths")
    at = int(np.percentile(np.asarray(full_lengths), percentile, method="higher"))
    rounded = -(-at // LENGTH_STEP) * LENGTH_STEP
    return int(min(cap, max(LENGTH_STEP, rounded)))


def max_length_for(tokenizer, texts: Sequence[str], max_length: int,
                   percentile: float | None) -> int:
    """The length the tokenize stage cuts every split at: ``max_length`` (tokenize.max_length),
    or with ``percentile`` (tokenize.length_percentile) the length that follows ``texts`` (the
    written train texts; data_max_length of their full token counts), at most ``max_length``.
    Raises ValueError for a percentile with no texts."""
    if percentile is None:
        return max_length
    full = encode(tokenizer, list(texts), max_length)["full_length"]
    return data_max_length(full, percentile, max_length)


def write_max_length(folder: Path, max_length: int) -> None:
    """Record ``max_length`` in ``folder`` (contract.LENGTH_FILE)."""
    write_json(Path(folder) / contract.LENGTH_FILE, {"max_length": int(max_length)})


def read_max_length(folder: str | Path) -> int:
    """The max_length recorded in ``folder`` by the tokenize or export stage.

    Raises ModelError naming the file and the fix when it is missing or malformed."""
    path = Path(folder) / contract.LENGTH_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["max_length"]
        if not (isinstance(value, int) and value >= 3):
            raise ValueError(f"max_length {value!r} is not a whole number of at least 3")
    except FileNotFoundError:
        raise ModelError(f"{path}: not found; the tokenize stage writes it (beside an exported "
                         "model: the export stage); run `dvc repro`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: expected {{\"max_length\": n}} ({exc}); run `dvc repro` "
                         "again") from None
    return value


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


# Texts that trip device tokenizers: accents, punctuation, digits, emoji, unknown words,
# casing, whitespace and control characters, CJK, and inputs that normalise to nothing.
EDGE_CASES = (
    "Café crème brûlée à la carte", "Naïve façade; déjà vu — résumé", "ÉCOLE ÖFFNET MORGEN",
    "Zoë's piñata costs €12.50", "São Paulo → Zürich", "Ångström-level tolerances",
    "If the pump stalls, restart it!!!", "Wait... what?!", "(optional) [see note 3] {draft}",
    "e-mail: help@example.org; url: https://example.org/a?b=c", "#hashtag @mention $5 100%",
    "\"quoted\" 'single' `code`", "semi;colon:colon/slash\\backslash", "a&b<c>d=e+f*g^h|i~j",
    "Room 101 opens at 09:30 on 2026-03-14", "3.14159 2,500,000 1/2 ½ 10^6",
    "v2.0.1-rc3 build #4512",
    "Call +1 (555) 010-9999 x23", "The 2nd and 3rd floors", "1st-class 24/7 support",
    "Great job 👍", "🚗💨 leaving now", "🙂🙂🙂", "Fire 🔥 exit ➡️ left", "❤️ thanks",
    "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "qwxzvbnm plokijuh", "antidisestablishmentarianism", "GPT-4o and BERT-large",
    "UPPER lower MiXeD", "tab\tseparated\twords", "line one\nline two", "  leading and trailing  ",
    "multiple     spaces   here", "zero\u200bwidth\u200bspace", "non\u00a0breaking\u00a0space",
    "中文 and English", "日本語のテキスト", "한국어 문장", "Привет, мир", "مرحبا بالعالم",
    "", " ", "\t\n", "\u200b", "\u0000\u0001\u0002", "\ufeff",
    "word " * 200,
    "Once the dough has doubled, knead it again. " * 12,
    # reported against Swift, JS and .NET BERT tokenizers: a word of exactly 100 characters
    # (BERT's max_input_chars_per_word, still split into pieces) and of 101 (one [UNK])
    "abcdefghij" * 10, "abcdefghij" * 10 + "k",
    "first\rsecond", "Cafe\u0301 cre\u0300me bru\u0302le\u0301e",  # lone CR; NFD accents
    "Zażółć gęślą jaźń, ŁÓDŹ i Łęczyca",  # Polish: ogonek (ą, ę) and stroke (ł, Ł)
    "ガギグゲゴ がぎぐげご パピプ テ\u3099ータ",  # voiced kana, precomposed and with U+3099
    "con\u0007trol wo\u001brd tab\u007fle",  # C0 controls and DEL inside words
    "con\u0085trol wo\u009frd na\u0080me",  # C1 controls (U+0085 is also Unicode whitespace)
)


def edge_cases(max_length: int) -> list[str]:
    """EDGE_CASES plus texts of max_length - 1, max_length and max_length + 1 tokens.

    Each "a" is one token in BERT vocabularies (and kept by vocabulary trimming, which keeps
    ASCII characters); [CLS] and [SEP] make the other two."""
    return [*EDGE_CASES, *(" ".join(["a"] * (n - 2)) for n in
                           (max_length - 1, max_length, max_length + 1))]


def parity_vectors(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """Exact input_ids and attention_mask the pipeline feeds the model, one dict per text."""
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return [{"text": t, "input_ids": ids, "attention_mask": mask}
            for t, ids, mask in zip(texts, enc["input_ids"], enc["attention_mask"], strict=True)]


def wordpiece_settings(tokenizer, max_length: int) -> dict[str, Any]:
    """What a hand-written device WordPiece tokenizer needs to match the pipeline's: casing,
    accent stripping, special tokens and their ids, max_length (written as wordpiece.json and
    into the Core ML metadata). BERT's accent stripping follows lowercasing when unset
    (transformers' BertNormalizer)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    norm = spec.get("normalizer") or {}
    lowercase = bool(norm.get("lowercase", False))
    strip = norm.get("strip_accents")
    return {
        "type": "WordPiece",
        "do_lower_case": lowercase,
        "strip_accents": lowercase if strip is None else bool(strip),
        "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
        "clean_text": bool(norm.get("clean_text", True)),
        "continuing_subword_prefix": spec["model"].get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": spec["model"].get("max_input_chars_per_word", 100),
        "max_length": max_length,
        "vocab_size": len(tokenizer),
        "special_tokens": {
            name: {"token": getattr(tokenizer, f"{name}_token"),
                   "id": getattr(tokenizer, f"{name}_token_id")}
            for name in ("cls", "sep", "pad", "unk", "mask")
        },
    }


def save_device_tokenizer(tokenizer, folder: Path, max_length: int) -> dict[str, Any]:
    """Write tokenizer.json and tokenizer_config.json into ``folder`` for device libraries
    (swift-transformers); return the wordpiece_settings they were written with.

    transformers 5 names its generic backend as tokenizer_class; swift-transformers picks the
    algorithm by this class name, and WordPiece is BertTokenizer, so the config says so, with
    the casing and max_length spelled out."""
    settings = wordpiece_settings(tokenizer, max_length)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tokenizer.save_pretrained(tmp)
        shutil.move(Path(tmp) / "tokenizer.json", folder / "tokenizer.json")
        config = json.loads((Path(tmp) / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update({"tokenizer_class": "BertTokenizer",
                   "do_lower_case": settings["do_lower_case"],
                   "strip_accents": settings["strip_accents"],
                   "model_max_length": max_length})
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                  encoding="utf-8")
    return settings
