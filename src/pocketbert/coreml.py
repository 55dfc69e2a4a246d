"""Core ML: convert a classifier from PyTorch (never from ONNX), compress it, read it back.

The program is an ML program (mlprogram) with int32 inputs ``input_ids`` and ``attention_mask``
of shape [1, 1..max_length], a softmax over the labels and a ClassifierConfig, so Core ML
returns ``classLabel`` and ``classLabel_probs`` (every label's probability). Prediction exists
only on macOS; elsewhere a saved model is read back with ``skip_model_load=True``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pocketbert.errors import ModelError
from pocketbert.modeling import DeviceClassifier

VARIANTS = ("fp32", "fp16", "int8", "palette6", "palette4")
INPUTS = ("input_ids", "attention_mask")
LABEL_OUTPUT, PROBS_OUTPUT = "classLabel", "classLabel_probs"
NOT_MEASURED = "not measured here"


@contextlib.contextmanager
def quiet():
    """coremltools reports on import and on every pass; keep stage logs readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def can_predict() -> bool:
    """Core ML runs models on macOS only."""
    return platform.system() == "Darwin"


def convert(model, labels: tuple[str, ...], max_length: int, precision: str, target: str):
    """An mlprogram classifier; precision 'fp32' or 'fp16'; target e.g. 'iOS16'."""
    with quiet():
        import coremltools as ct

        wrapper = DeviceClassifier(model, probabilities=True).eval()
        example = (torch.ones(1, 8, dtype=torch.int32), torch.ones(1, 8, dtype=torch.int32))
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, example)
        seq = ct.RangeDim(lower_bound=1, upper_bound=max_length, default=min(32, max_length))
        return ct.convert(
            traced,
            inputs=[ct.TensorType(name=n, shape=(1, seq), dtype=np.int32) for n in INPUTS],
            classifier_config=ct.ClassifierConfig(list(labels)),
            minimum_deployment_target=getattr(ct.target, target),
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16"
            else ct.precision.FLOAT32,
        )


def compress(mlmodel, variant: str):
    """int8 linear weight quantization, or 6-/4-bit k-means palettization of the weights."""
    with quiet():
        import coremltools.optimize.coreml as cto

        if variant == "int8":
            config = cto.OpLinearQuantizerConfig(mode="linear_symmetric")
            return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(config))
        if variant in ("palette6", "palette4"):
            config = cto.OpPalettizerConfig(mode="kmeans", nbits=int(variant[-1]))
            return cto.palettize_weights(mlmodel, cto.OptimizationConfig(config))
    raise ValueError(f"not a compression variant: {variant}")


def tokenizer_config(tokenizer, max_length: int) -> dict[str, Any]:
    """What a device-side WordPiece tokenizer needs to match the pipeline's."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    norm = spec.get("normalizer") or {}
    lowercase = bool(norm.get("lowercase", False))
    strip = norm.get("strip_accents")
    return {
        "type": "WordPiece",
        "do_lower_case": lowercase,
        "strip_accents": lowercase if strip is None else bool(strip),  # BERT: follows lowercase
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


def set_metadata(mlmodel, labels: tuple[str, ...], max_length: int, tok_config: dict,
                 description: str, license_text: str, version: str, variant: str) -> None:
    mlmodel.short_description = description
    mlmodel.license = license_text
    mlmodel.version = version
    mlmodel.author = "pocketbert"
    mlmodel.input_description["input_ids"] = (
        f"WordPiece token ids, int32 [1, 1..{max_length}], starting with [CLS] and ending with "
        "[SEP]; use the vocab.txt shipped beside the model")
    mlmodel.input_description["attention_mask"] = (
        "1 for each real token, 0 for padding; same shape as input_ids")
    mlmodel.output_description[LABEL_OUTPUT] = "the most probable label"
    mlmodel.output_description[PROBS_OUTPUT] = "probability of every label (they sum to 1)"
    special = tok_config["special_tokens"]
    mlmodel.user_defined_metadata.update({
        "labels": json.dumps(list(labels)),
        "max_length": str(max_length),
        "do_lower_case": str(tok_config["do_lower_case"]).lower(),
        "strip_accents": str(tok_config["strip_accents"]).lower(),
        "special_token_ids": json.dumps({k: v["id"] for k, v in special.items()}),
        "variant": variant,
    })


def read_back(path: Path) -> dict[str, Any]:
    """Inputs, outputs, shape ranges, labels and metadata of a saved .mlpackage."""
    with quiet():
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    inputs = {}
    for feature in spec.description.input:
        arr = feature.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        inputs[feature.name] = {"dtype": int(arr.dataType), "ranges": ranges}
    classify_labels: list[str] = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "classify":
                    classify_labels = _classify_labels(block, op)
    return {
        "spec_version": spec.specificationVersion,
        "is_mlprogram": spec.WhichOneof("Type") == "mlProgram",
        "inputs": inputs,
        "outputs": [f.name for f in spec.description.output],
        "predicted_feature": spec.description.predictedFeatureName,
        "probabilities_output": spec.description.predictedProbabilitiesName,
        "classify_labels": classify_labels,
        "metadata": dict(spec.description.metadata.userDefined),
        "short_description": spec.description.metadata.shortDescription,
        "license": spec.description.metadata.license,
        "version": spec.description.metadata.versionString,
        "input_descriptions": {f.name: f.shortDescription for f in spec.description.input},
    }


def _classify_labels(block, op) -> list[str]:
    """The class labels of the program's classify op (an immediate list, or a const)."""
    argument = op.inputs["classes"].arguments[0]
    if argument.HasField("value"):
        return [v.immediateValue.tensor.strings.values[0]
                for v in argument.value.immediateValue.list.values]
    for other in block.operations:
        if other.type == "const" and other.outputs[0].name == argument.name:
            return list(other.attributes["val"].immediateValue.tensor.strings.values)
    return []


def check_spec(info: dict[str, Any], labels: tuple[str, ...], max_length: int,
               path: Path) -> None:
    """Raise ModelError when a saved model does not state what the device app expects."""
    int32 = 131104  # ArrayFeatureType.INT32 in Core ML's protobuf
    problems = []
    if not info["is_mlprogram"]:
        problems.append("not an ML program")
    for name in INPUTS:
        got = info["inputs"].get(name)
        if got is None:
            problems.append(f"input {name} missing")
            continue
        if got["dtype"] != int32:
            problems.append(f"input {name} is not int32")
        if got["ranges"] != [(1, 1), (1, max_length)]:
            problems.append(f"input {name} ranges {got['ranges']} != [1, 1..{max_length}]")
    if set(info["outputs"]) != {LABEL_OUTPUT, PROBS_OUTPUT}:
        problems.append(f"outputs {info['outputs']}")
    if info["classify_labels"] != list(labels):
        problems.append(f"class labels {info['classify_labels']} != {list(labels)}")
    if json.loads(info["metadata"].get("labels", "[]")) != list(labels):
        problems.append("labels metadata missing or wrong")
    if info["metadata"].get("max_length") != str(max_length):
        problems.append("max_length metadata missing or wrong")
    if problems:
        raise ModelError(f"{path}: " + "; ".join(problems))


def predict_probabilities(mlmodel, sequences: list[list[int]], labels: tuple[str, ...],
                          ) -> np.ndarray:
    """[n, labels] probabilities from Core ML itself (macOS only), batch 1."""
    out = np.zeros((len(sequences), len(labels)), dtype=np.float32)
    for i, seq in enumerate(sequences):
        feed = {n: np.ones((1, len(seq)), dtype=np.int32) for n in INPUTS}
        feed["input_ids"] = np.asarray([seq], dtype=np.int32)
        probs = mlmodel.predict(feed)[PROBS_OUTPUT]
        out[i] = [probs[label] for label in labels]
    return out
