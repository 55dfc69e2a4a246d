"""Shared fixtures: a params.yaml in a tmp folder and small labelled CSVs written in the test."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from pocketbert import params

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
    """Every section at its dataclass defaults, as YAML-friendly values."""
    return {name: params.as_dict(cls()) for name, cls in params.SECTIONS.items()}


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
