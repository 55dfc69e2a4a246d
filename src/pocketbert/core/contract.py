"""The device contract: what every exported model takes and returns, and where it is written.

Export, convert, bundle, web, benchmark, ``pocketbert predict`` and the tests read these names
from here and nowhere else. Torch-free (plain constants, the deferral rule in plain Python and
the reader of its settings), so the predict command can import it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from pocketbert.core.errors import DataError

# --- model inputs and outputs ---------------------------------------------------------------
INPUT_NAMES = ("input_ids", "attention_mask")
"the ONNX model's inputs: token ids and the 1/0 attention mask, both int64 [batch, sequence]"
COREML_INPUT = INPUT_NAMES[0]
"the Core ML model's one input, int32 [1, sequence]; its mask is input_ids != [PAD], in-graph"
LOGITS_OUTPUT = "logits"
"the ONNX model's output, [batch, labels] float32"
DYNAMIC_AXES = {0: "batch", 1: "sequence"}
"the dynamic axes of every ONNX input, by position"
LABEL_OUTPUT, PROBS_OUTPUT = "classLabel", "classLabel_probs"
"the Core ML classifier's outputs: the best label, and {label: probability} for every label"

# --- variants ---------------------------------------------------------------------------------
COREML_VARIANTS = ("fp32", "fp16", "int8", "palette6", "palette4")
"Core ML variants convert can write (convert.variants picks among them)"
COREML_BASE_PRECISIONS = ("fp32", "fp16")
"variants converted from PyTorch directly; the others are compressed from the fp16 program"

# --- artifact file names (folders come from dvc.yaml) -------------------------------------------
WEIGHTS_FILE = "model.safetensors"
"a PyTorch model folder's weights (models/teacher, models/student)"
LABELS_FILE = "labels.json"
"label names in output order: {'labels': [...]}"
VOCAB_FILE = "vocab.txt"
"a WordPiece vocabulary, line number = token id"
ONNX_FP32_FILE = "model.onnx"
"the fp32 ONNX model in an export folder"
ONNX_INT8_FILE = "model.int8.onnx"
"the int8 ONNX model in an export folder (export.int8)"
APP_MODEL_FILE = "PocketBert.mlpackage"
"the Core ML model in the app bundle (models/app)"
WORDPIECE_FILE = "wordpiece.json"
"the settings a hand-written WordPiece tokenizer needs (models/app)"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"the Hugging Face tokenizer files an app or `pocketbert predict` loads"
LENGTH_FILE = "max_length.json"
"""{'max_length': n}: the tokens a text is cut to (tokenize.max_length, or the length that
follows the data with tokenize.length_percentile), beside the tokenized data (tokenize stage)
and beside an exported model (export stage)"""
DEFERRAL_METADATA = "deferral"
"""key of the deferral settings (JSON {temperature, score, threshold}) in a shipped model's
metadata: the Core ML model's user-defined metadata and the ONNX model's metadata_props"""

NOT_MEASURED_NOTE = "not measured here"
"shown (README, logs) where a number needs hardware this machine lacks; never a metric value"


def coreml_file(variant: str) -> str:
    """The .mlpackage name of a Core ML variant in a convert folder, e.g. 'fp16.mlpackage'."""
    return f"{variant}.mlpackage"


# --- deferral: when the student answers and when it asks the teacher ----------------------------
CALIBRATION_FILE = "calibration.json"
"""the deferral settings of a shipped student (models/calibration): {'temperature', 'score',
'threshold', 'target_agreement', 'labels' (the student's output order)}"""
CONFIDENCE_SCORES = ("max_probability", "margin", "entropy")
"""confidence scores of a probability vector, higher = surer: the top probability, the top
probability minus the second, and the negative entropy (nats)"""


def read_calibration(folder: Path, labels: Sequence[str]) -> dict:
    """The deferral settings the calibrate stage wrote in ``folder`` (CALIBRATION_FILE), for
    a student whose output order is ``labels``. Raises DataError naming the file and
    `dvc repro calibrate` when the file is missing or not JSON, or when the settings were
    calibrated for other labels."""
    path = Path(folder) / CALIBRATION_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8 or not JSON
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataError(f"{path}: cannot read the deferral settings ({reason}); "
                        "run `dvc repro calibrate`") from None
    found = settings.get("labels") if isinstance(settings, dict) else None
    if found != list(labels):
        raise DataError(f"{path}: calibrated for labels {found}, the student has "
                        f"{list(labels)}; run `dvc repro calibrate`")
    return settings


def calibrated(probabilities: Sequence[float], temperature: float) -> list[float]:
    """Temperature-scaled probabilities: softmax(logits / T) computed from softmax(logits), as
    p_i ** (1 / T) renormalised (the same up to rounding, and what a Core ML classifier's
    probability output allows). ``temperature`` > 0; 1 leaves them unchanged. Guo et al. 2017,
    "On Calibration of Modern Neural Networks", section 4.2 (temperature scaling)."""
    powered = [p ** (1.0 / temperature) if p > 0 else 0.0 for p in probabilities]
    total = sum(powered)
    return [p / total for p in powered]


def confidence(probabilities: Sequence[float], score: str) -> float:
    """The ``score`` (one of CONFIDENCE_SCORES) of one probability vector [labels].

    Raises ValueError for another score name."""
    if score == "max_probability":
        return max(probabilities)
    if score == "margin":
        top = sorted(probabilities, reverse=True)
        return top[0] - (top[1] if len(top) > 1 else 0.0)
    if score == "entropy":
        return sum(p * math.log(p) for p in probabilities if p > 0)  # -H(p), at most 0
    raise ValueError(f"unknown confidence score {score!r}; use one of {CONFIDENCE_SCORES}")


def answers(probabilities: Sequence[float], *, temperature: float, score: str,
            threshold: float | None) -> bool:
    """The deferral rule: True when the student answers a text itself, False when it defers
    to the teacher. ``probabilities``: the model's softmax output [labels] (temperature 1);
    the rule answers when ``confidence(calibrated(probabilities, temperature), score)`` is at
    least ``threshold`` (None: no threshold reached the target, so it always defers)."""
    if threshold is None:
        return False
    return confidence(calibrated(probabilities, temperature), score) >= threshold
