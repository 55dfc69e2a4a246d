"""Core ML: convert a classifier from PyTorch (never from ONNX), compress it, read it back.

The program is an ML program (mlprogram) with one int32 input, ``input_ids`` [1, L], a softmax
over the labels and a ClassifierConfig, so Core ML returns ``classLabel`` and
``classLabel_probs`` (every label's probability). The attention mask is computed inside the
program as ``input_ids != [PAD]``: the app pads with [PAD] and feeds nothing else.

L is one of a few enumerated lengths (buckets, convert.shapes 'enumerated'; the app pads to the
next bucket) or any length 1..max_length (convert.shapes 'range'). Enumerated shapes because
flexible-range models are reported to leave the Neural Engine for the CPU at any length other
than their default (coremltools issue 2370; huggingface/exporters issue 33), and Apple's
coremltools guide "Flexible Input Shapes" recommends enumerated shapes for performance. One
input because coremltools 9 accepts enumerated shapes on one input only below iOS 18.
Prediction exists only on macOS; elsewhere a saved model is read back with
``skip_model_load=True`` and run by pocketbert.export.mil_executor.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pocketbert.core import contract
from pocketbert.core.contract import COREML_INPUT, LABEL_OUTPUT, PROBS_OUTPUT
from pocketbert.core.errors import ModelError, ParamsError
from pocketbert.training.modeling import DeviceClassifier, device_step


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


def sequence_buckets(requested: Sequence[int], max_length: int) -> tuple[int, ...]:
    """The enumerated sequence lengths: ``requested`` (params 'convert.buckets') up to
    ``max_length``, and ``max_length`` itself always, so every tokenized text fits one.

    Entries above max_length are dropped with a warning (no tokenized text is that long).
    Raises ParamsError for a max_length below 1."""
    if max_length < 1:
        raise ParamsError(f"invalid value for 'tokenize.max_length': {max_length}; use a "
                          "positive integer", key="tokenize.max_length", source="params.yaml")
    dropped = sorted(b for b in requested if b > max_length)
    if dropped:
        warnings.warn(f"convert.buckets {dropped} exceed tokenize.max_length {max_length} and "
                      "were dropped", stacklevel=2)
    return tuple(sorted({b for b in requested if b <= max_length} | {max_length}))


def next_bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``length`` tokens. Raises ModelError if none does."""
    for bucket in sorted(buckets):
        if length <= bucket:
            return bucket
    raise ModelError(f"{length} tokens do not fit the largest Core ML input length "
                     f"{max(buckets)}; truncate to it when tokenizing")


def pad_to(ids: Sequence[int], length: int, pad_id: int) -> np.ndarray:
    """``input_ids`` as the app feeds them: int32 [1, length], [PAD] after the tokens."""
    if len(ids) > length:
        raise ModelError(f"{len(ids)} tokens do not fit an input of length {length}")
    return np.asarray([[*ids, *[pad_id] * (length - len(ids))]], dtype=np.int32)


def app_input(ids: Sequence[int], metadata: Mapping[str, str]) -> np.ndarray:
    """``input_ids`` int32 [1, L] for a converted model: padded with its [PAD] id to the next
    of its buckets (metadata 'buckets', set_metadata), or unpadded for a range model.
    Raises ModelError for more tokens than the largest bucket."""
    buckets = json.loads(metadata.get("buckets", "[]"))
    pad_id = json.loads(metadata["special_token_ids"])["pad"]
    return pad_to(ids, next_bucket(len(ids), buckets) if buckets else len(ids), pad_id)


class _IdsOnly(torch.nn.Module):
    """input_ids [1, seq] -> probabilities [1, labels]; the attention mask is
    ``input_ids != pad_id``, computed in the graph (the tokenizer never emits [PAD] inside a
    text, so the mask is the tokenizer's own)."""

    def __init__(self, model, pad_id: int) -> None:
        super().__init__()
        self.classifier = DeviceClassifier(model, probabilities=True)
        self.pad_id = pad_id
        self.eval()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).to(torch.int32)  # [1, seq]
        return self.classifier(input_ids, mask)


def convert(model, *, labels: tuple[str, ...], max_length: int, precision: str, target: str,
            buckets: Sequence[int] | None = None, pad_id: int | None = None):
    """An mlprogram classifier; precision 'fp32' or 'fp16'; target e.g. 'iOS16'.

    ``buckets``: the enumerated sequence lengths (sequence_buckets; the largest is the
    default shape); None for a RangeDim 1..max_length. ``pad_id``: the tokenizer's [PAD] id
    (default: the model config's pad_token_id). Raises modeling.UnsupportedArchitectureError
    (one line) when the architecture does not trace or convert, ModelError without a pad id."""
    pad_id = model.config.pad_token_id if pad_id is None else pad_id
    if pad_id is None:
        raise ModelError(f"{type(model).__name__}: no pad_token_id in its config; give the "
                         "tokenizer's [PAD] id")
    with quiet():
        import coremltools as ct

        wrapper = _IdsOnly(model, pad_id)
        if buckets:
            shape = ct.EnumeratedShapes(shapes=[(1, b) for b in buckets],
                                        default=(1, max(buckets)))
        else:
            shape = (1, ct.RangeDim(lower_bound=1, upper_bound=max_length,
                                    default=min(32, max_length)))
        example = torch.ones(1, max(buckets) if buckets else 8, dtype=torch.int32)
        with device_step("Core ML conversion", model), torch.no_grad():
            return ct.convert(
                torch.jit.trace(wrapper, example),
                inputs=[ct.TensorType(name=COREML_INPUT, shape=shape, dtype=np.int32)],
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


def convert_variants(model, *, labels: tuple[str, ...], max_length: int,
                     variants: tuple[str, ...], target: str, buckets: Sequence[int] | None,
                     pad_id: int) -> Iterator[tuple[str, Any]]:
    """``(variant, mlmodel)`` for each of ``variants``, in their order.

    fp32 and fp16 are converted from PyTorch; int8, palette6 and palette4 compress the fp16
    program's weights (so the fp16 program is converted whenever one of them is asked for,
    even without fp16 itself): a compressed variant then computes in fp16 like the app's
    default variant, and differs from it only by its weights."""
    base = {}
    for precision in contract.COREML_BASE_PRECISIONS:
        if precision in variants or (precision == "fp16"
                                     and set(variants) - set(contract.COREML_BASE_PRECISIONS)):
            base[precision] = convert(model, labels=labels, max_length=max_length,
                                      precision=precision, target=target, buckets=buckets,
                                      pad_id=pad_id)
    for variant in variants:
        yield variant, base.get(variant) or compress(base["fp16"], variant)


def set_metadata(mlmodel, *, labels: tuple[str, ...], max_length: int, wordpiece: dict,
                 description: str, license_text: str, version: str, variant: str,
                 buckets: Sequence[int] | None) -> None:
    """Descriptions, license, version and the user-defined metadata an app reads (labels,
    max_length, the input lengths ``buckets`` (None: a range model), lowercasing, special
    token ids; ``wordpiece`` from tokenization.wordpiece_settings)."""
    mlmodel.short_description = description
    mlmodel.license = license_text
    mlmodel.version = version
    mlmodel.author = "pocketbert"
    special = wordpiece["special_tokens"]
    pad = f"{special['pad']['token']} (id {special['pad']['id']})"
    lengths = (f"[1, L], L one of {', '.join(map(str, buckets))}: pad with {pad} to the next "
               "of these lengths" if buckets else
               f"[1, 1..{max_length}]; padding with {pad} is optional")
    mlmodel.input_description[COREML_INPUT] = (
        f"WordPiece token ids, int32 {lengths}. Starts with [CLS] and ends with [SEP]; "
        f"positions holding {pad} are masked out inside the model. Use the vocab.txt shipped "
        "beside the model")
    mlmodel.output_description[LABEL_OUTPUT] = "the most probable label"
    mlmodel.output_description[PROBS_OUTPUT] = "probability of every label (they sum to 1)"
    mlmodel.user_defined_metadata.update({
        "labels": json.dumps(list(labels)),
        "max_length": str(max_length),
        "do_lower_case": str(wordpiece["do_lower_case"]).lower(),
        "strip_accents": str(wordpiece["strip_accents"]).lower(),
        "special_token_ids": json.dumps({k: v["id"] for k, v in special.items()}),
        "variant": variant,
        **({"buckets": json.dumps(list(buckets))} if buckets else {}),
    })



def add_deferral(source: Path, target: Path, settings: Mapping[str, Any]) -> None:
    """Save the .mlpackage at ``source`` to ``target`` with the deferral ``settings``
    (temperature, score, threshold; contract.CALIBRATION_FILE) in its user-defined metadata
    under contract.DEFERRAL_METADATA; the program and weights are unchanged."""
    import coremltools as ct

    with quiet():
        mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    mlmodel.user_defined_metadata[contract.DEFERRAL_METADATA] = json.dumps(
        {key: settings[key] for key in ("temperature", "score", "threshold")})
    mlmodel.save(str(target))


def read_back(path: Path) -> dict[str, Any]:
    """Inputs (dtype, shape ranges, enumerated shapes sorted, default shape), outputs, labels
    and metadata of a saved .mlpackage."""
    with quiet():
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    inputs = {}
    for feature in spec.description.input:
        arr = feature.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        shapes = sorted(tuple(s.shape) for s in arr.enumeratedShapes.shapes)
        inputs[feature.name] = {"dtype": int(arr.dataType), "ranges": ranges,
                                "shapes": shapes, "default": tuple(arr.shape)}
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
               path: Path, buckets: Sequence[int] | None = None) -> None:
    """Raise ModelError when a saved model does not state what the device app expects: the one
    int32 input ``input_ids`` of the enumerated lengths ``buckets`` (or, for None, the range
    1..max_length), the classifier outputs, the labels, and metadata naming max_length and
    exactly these buckets."""
    int32 = 131104  # ArrayFeatureType.INT32 in Core ML's protobuf
    problems = []
    if not info["is_mlprogram"]:
        problems.append("not an ML program")
    if list(info["inputs"]) != [COREML_INPUT]:
        problems.append(f"inputs {list(info['inputs'])} != ['{COREML_INPUT}']")
    got = info["inputs"].get(COREML_INPUT)
    if got is not None:
        if got["dtype"] != int32:
            problems.append(f"input {COREML_INPUT} is not int32")
        if buckets:
            want = [(1, b) for b in sorted(buckets)]
            if got["shapes"] != want:
                problems.append(f"input {COREML_INPUT} shapes {got['shapes']} != {want}")
        elif got["ranges"] != [(1, 1), (1, max_length)] or got["shapes"]:
            problems.append(f"input {COREML_INPUT} ranges {got['ranges']} != "
                            f"[1, 1..{max_length}]")
    if set(info["outputs"]) != {LABEL_OUTPUT, PROBS_OUTPUT}:
        problems.append(f"outputs {info['outputs']}")
    if info["classify_labels"] != list(labels):
        problems.append(f"class labels {info['classify_labels']} != {list(labels)}")
    if json.loads(info["metadata"].get("labels", "[]")) != list(labels):
        problems.append("labels metadata missing or wrong")
    if info["metadata"].get("max_length") != str(max_length):
        problems.append("max_length metadata missing or wrong")
    if json.loads(info["metadata"].get("buckets", "[]")) != sorted(buckets or []):
        problems.append(f"buckets metadata {info['metadata'].get('buckets')} != "
                        f"{sorted(buckets or []) or 'none (range)'}")
    if problems:
        raise ModelError(f"{path}: " + "; ".join(problems))


def metadata_buckets(info: dict[str, Any]) -> tuple[int, ...]:
    """The input lengths a read-back model's metadata lists; () for a range model."""
    return tuple(json.loads(info["metadata"].get("buckets", "[]")))


def predict_probabilities(mlmodel, sequences: list[list[int]], labels: tuple[str, ...],
                          ) -> np.ndarray:
    """[n, labels] probabilities from Core ML itself (macOS only), batch 1, each sequence
    padded as the app pads it (app_input)."""
    metadata = mlmodel.user_defined_metadata
    out = np.zeros((len(sequences), len(labels)), dtype=np.float32)
    for i, seq in enumerate(sequences):
        probs = mlmodel.predict({COREML_INPUT: app_input(seq, metadata)})[PROBS_OUTPUT]
        out[i] = [probs[label] for label in labels]
    return out


def bucket_parity(executor, sequences: Sequence[Sequence[int]], reference: np.ndarray,
                  lengths: Sequence[int], pad_id: int) -> dict[str, float]:
    """Each sequence padded with ``pad_id`` to every one of ``lengths`` that holds it (and
    run unpadded when the program takes any length), run by ``executor``
    (mil_executor.Executor), against ``reference`` [n, labels]: the unpadded PyTorch
    model's probabilities.

    Returns bucket_cases (sequence x length runs), bucket_nonfinite (runs with a NaN or
    infinite probability), against PyTorch bucket_max_abs_prob_diff and
    bucket_label_agreement (share of runs with PyTorch's label; weight compression alone
    flips near ties), and what padding alone does, against the same sequence in the same
    program at its shortest length: padding_max_abs_prob_diff and padding_label_changes."""
    diffs, agree, spread, changes, nonfinite = [], [], [0.0], 0, 0
    takes_any = not executor.input_shapes.get(COREML_INPUT)
    for seq, ref in zip(sequences, reference, strict=True):
        targets = sorted({n for n in lengths if n >= len(seq)}
                         | ({len(seq)} if takes_any else set()))
        shortest = None
        for n in targets:
            probs = executor.probabilities(pad_to(seq, n, pad_id))
            if not np.isfinite(probs).all():
                nonfinite += 1
                continue
            diffs.append(float(np.abs(probs - ref).max()))
            agree.append(int(probs.argmax()) == int(np.argmax(ref)))
            if shortest is None:
                shortest = probs
            spread.append(float(np.abs(probs - shortest).max()))
            changes += int(probs.argmax() != shortest.argmax())
    runs = len(diffs) + nonfinite
    if not runs:
        raise ValueError("bucket_parity: no sequence fits any of the lengths")
    return {"bucket_cases": runs,
            "bucket_nonfinite": nonfinite,
            "bucket_max_abs_prob_diff": max(diffs, default=float("inf")),
            "bucket_label_agreement": float(np.sum(agree)) / runs,
            "padding_max_abs_prob_diff": max(spread),
            "padding_label_changes": changes}
