"""ONNX export with parity checks, and int8 dynamic quantization with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pocketbert.errors import PocketbertError
from pocketbert.inference import pad_batch
from pocketbert.modeling import DeviceClassifier

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"


class ParityError(PocketbertError):
    """An exported model's outputs differ from PyTorch's beyond the tolerance."""


def export(model, path: Path, opset: int) -> None:
    """One self-contained .onnx file; dynamic batch and sequence axes; int64 inputs."""
    wrapper = DeviceClassifier(model)
    # token ids below 5 exist in every vocabulary, trimmed or tiny: [2, 4]
    example = pad_batch([[2, 3, 4, 1], [2, 1]], 0)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {name: {0: batch, 1: seq} for name in INPUTS}
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every step
        program = torch.onnx.export(
            wrapper, (example["input_ids"], example["attention_mask"]), dynamo=True,
            input_names=list(INPUTS), output_names=[OUTPUT], dynamic_shapes=shapes,
            opset_version=opset, external_data=False, verbose=False)
        program.save(str(path), external_data=False)
    assert not path.with_name(path.name + ".data").exists()
    _strip_trace_metadata(path)


def _strip_trace_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces with this checkout's
    file paths), so the same model exports to the same bytes wherever it is built."""
    import onnx

    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
    for value in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output):
        del value.metadata_props[:]
    onnx.save(proto, str(path))


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batches(sess, sequences: list[list[int]], pad_id: int, batch_size: int = 32,
                ) -> np.ndarray:
    """ONNX logits [n, labels] in input order, batches padded per batch (length-sorted)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out: np.ndarray | None = None
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        batch = pad_batch([sequences[i] for i in idx], pad_id)
        logits = sess.run([OUTPUT], {k: batch[k].numpy() for k in INPUTS})[0]
        if out is None:
            out = np.zeros((len(sequences), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    assert out is not None
    return out


@dataclass
class Parity:
    max_abs_diff: float
    top1_agreement: float
    worst: list[int]
    "indices of the examples with the largest difference, worst first"


def parity(reference: np.ndarray, candidate: np.ndarray, n_worst: int = 3) -> Parity:
    diff = np.abs(reference - candidate).max(axis=1)  # [n]
    return Parity(
        max_abs_diff=float(diff.max()),
        top1_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()),
        worst=[int(i) for i in np.argsort(-diff)[:n_worst]],
    )


def check_parity(result: Parity, atol: float, texts: list[str], what: str) -> None:
    """Raise ParityError naming the worst examples when fp32 export and PyTorch disagree."""
    if result.max_abs_diff <= atol and result.top1_agreement == 1.0:
        return
    worst = "; ".join(f"#{i} {texts[i][:50]!r}" for i in result.worst)
    raise ParityError(
        f"{what}: max |logit difference| {result.max_abs_diff:.2e} (export.atol {atol:.0e}), "
        f"top-1 agreement {result.top1_agreement:.4f}; worst examples: {worst}. The export is "
        "wrong: check the model wrapper, or raise export.atol in params.yaml if the "
        "difference is expected"
    )


def quantize_int8(source: Path, target: Path, per_channel: bool) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # symbolic shape inference fails on the exporter's dynamic dims; it is not needed here
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), per_channel=per_channel,
                         weight_type=QuantType.QInt8)
