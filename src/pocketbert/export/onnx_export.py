"""ONNX export with parity checks, onnxruntime's transformer fusions, and int8 dynamic
quantization with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pocketbert.core import contract
from pocketbert.core.errors import PocketbertError
from pocketbert.runtime.torch_runner import pad_batch
from pocketbert.training.modeling import DeviceClassifier, device_step


class ParityError(PocketbertError):
    """An exported model's outputs differ from PyTorch's beyond the tolerance."""


def export(model, path: Path, opset: int) -> None:
    """One self-contained .onnx file with the device contract's inputs (int64 [batch,
    sequence], both axes dynamic) and its logits output [batch, labels].

    Raises modeling.UnsupportedArchitectureError (one line) when the architecture does not
    export."""
    wrapper = DeviceClassifier(model)
    # token ids below 5 exist in every vocabulary, trimmed or tiny: [2, 4]
    example = pad_batch([[2, 3, 4, 1], [2, 1]], 0)
    dims = {axis: torch.export.Dim(name) for axis, name in contract.DYNAMIC_AXES.items()}
    shapes = {name: dict(dims) for name in contract.INPUT_NAMES}
    # the exporter narrates every step
    with contextlib.redirect_stdout(io.StringIO()), device_step("ONNX export", model):
        program = torch.onnx.export(
            wrapper, (example["input_ids"], example["attention_mask"]), dynamo=True,
            input_names=list(contract.INPUT_NAMES), output_names=[contract.LOGITS_OUTPUT],
            dynamic_shapes=shapes,
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


def quantize_int8(source: Path, target: Path, per_channel: bool, reduce_range: bool) -> None:
    """Dynamic int8 quantization: weights int8 (per output channel when ``per_channel``),
    activations uint8 with scales computed per call at run time.

    ``reduce_range``: weights in 7 bits ([-64, 63]). On x86 CPUs without VNNI onnxruntime
    multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds pairs of products
    in int16 and saturates (255 * 127 * 2 > 32767); 7-bit weights keep every pair sum in range
    (255 * 64 * 2 = 32640), so the CPUs with and without VNNI compute the same integers
    (onnxruntime's quantization docs on reduce_range and U8S8 saturation). Measured on the
    fine-tuned MiniLM teacher, 212 test texts, one text per call: int8 top-1 agreement with
    fp32 0.9906 (VNNI) vs 0.9953 (AVX2 only, emulated), labels of the two CPUs 0.9858 equal;
    with reduce_range 1.0000 on both, labels identical, logits within 0.009."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # symbolic shape inference fails on the exporter's dynamic dims; it is not needed here
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8)


def int8_model(fp32: Path, int8: Path, *, config, fuse: bool, per_channel: bool,
               reduce_range: bool,
               check_fused: Callable[[Path], None] | None = None) -> dict[str, object]:
    """Write ``int8`` from the fp32 export ``fp32`` as every int8 student and teacher is made:
    with ``fuse``, first through fuse_transformer (SkipLayerNormalization only where the
    sessions keep its optimizer, onnx_runner.DISABLED_OPTIMIZERS; ``config``: the model config,
    for num_attention_heads and hidden_size), then quantize_int8 with ``per_channel`` and
    ``reduce_range``. ``check_fused(path)``, when given, raises where the fused fp32 graph at
    ``path`` must not be shipped (the export stage compares its logits with the unfused
    graph's). Where the fusions or that check fail, the graph is quantized unfused, with one
    warning. The fused intermediate file is removed, whether quantization succeeds or raises.

    Returns {"int8.fused": bool, "int8.fused.<op>": count per op of FUSED_OPS (when fused)}.
    Raises onnxruntime's errors from the quantization itself."""
    from pocketbert.runtime.onnx_runner import DISABLED_OPTIMIZERS

    fused = int8.with_name("fused.fp32.onnx")
    report: dict[str, object] = {"int8.fused": False}
    source = fp32
    if fuse:
        try:
            counts = fuse_transformer(
                fp32, fused, num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
                skip_layer_norm="SkipLayerNormFusion" not in DISABLED_OPTIMIZERS)
            if check_fused is not None:
                check_fused(fused)
            report = {"int8.fused": True, **{f"int8.fused.{op}": n for op, n in counts.items()}}
            source = fused
        except Exception as exc:  # onnxruntime's optimizer raises many types on unknown graphs
            fused.unlink(missing_ok=True)
            warnings.warn(f"transformer fusions failed ({type(exc).__name__}: {exc}); the int8 "
                          "model is quantized unfused (export.fuse: false skips the attempt)",
                          stacklevel=2)
    try:
        quantize_int8(source, int8, per_channel, reduce_range)
    finally:
        fused.unlink(missing_ok=True)
    return report


FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu", "LayerNormalization")
"fused op types counted by fuse_transformer (onnxruntime's contrib ops and LayerNormalization)"


def fuse_transformer(source: Path, target: Path, *, num_heads: int, hidden_size: int,
                     skip_layer_norm: bool = True) -> dict[str, int]:
    """Write ``target``: ``source`` (an fp32 export of ``export``) through onnxruntime's
    transformer optimizer, model_type bert, opt_level 0 (its pattern fusions only, no runtime
    optimizations baked into the file): attention blocks -> ``Attention`` (quantize_int8
    then writes ``QAttention``), residual add + LayerNorm -> ``SkipLayerNormalization`` (unless
    ``skip_layer_norm`` is False), bias + GELU -> ``BiasGelu``. Same function, same inputs and
    output. Returns the count of each op type in FUSED_OPS in the result.

    Two rewrites first, each computing the same values, because the attention pattern of
    onnxruntime's fusion_attention.py (1.32) misses this exporter's graph: the additive mask
    is built by one Unsqueeze with axes [1, 2] where the pattern expects two single-axis
    Unsqueezes, and the scores are scaled by a Mul with 1/sqrt(head size) where, with the
    mask Add's first Mul parent taken as the mask, the pattern needs a Div; the Mul becomes a
    Div by sqrt(head size). ``num_heads``/``hidden_size``: the model config's
    num_attention_heads and hidden_size. Raises onnxruntime's or onnx's own errors."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    proto = onnx.load(str(source))
    graph = proto.graph
    constants = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_inputs = {value.name for value in graph.input}
    reciprocals: set[str] = set()  # one Div constant per shared scale constant
    nodes = []
    for node in graph.node:
        constant = _constant(constants, node.input[1]) if len(node.input) > 1 else None
        if (node.op_type == "Unsqueeze" and node.input[0] in graph_inputs
                and constant is not None and constant.size > 1):  # constant: the axes
            step = node.input[0]
            for i, axis in enumerate(constant.tolist()):
                name = f"{node.name or node.output[0]}_axis{i}"
                graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64),
                                                                 name))
                out = node.output[0] if i == constant.size - 1 else f"{name}_out"
                nodes.append(helper.make_node("Unsqueeze", [step, name], [out]))
                step = out
            continue
        parent = producers.get(node.input[0])
        if (node.op_type == "Mul" and constant is not None and constant.size == 1
                and parent is not None and parent.op_type == "MatMul"
                and _feeds_softmax(node, readers)):  # constant: the scale
            name = f"{node.input[1]}_reciprocal"
            if name not in reciprocals:
                reciprocals.add(name)
                graph.initializer.append(numpy_helper.from_array(
                    (1.0 / constant).astype(constant.dtype), name))
            nodes.append(helper.make_node("Div", [node.input[0], name], list(node.output),
                                          name=node.name))
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    with tempfile.TemporaryDirectory() as tmp:
        rewritten = Path(tmp) / "rewritten.onnx"
        onnx.save(proto, str(rewritten))
        with contextlib.redirect_stdout(io.StringIO()):
            fused = optimizer.optimize_model(str(rewritten), model_type="bert",
                                             num_heads=num_heads, hidden_size=hidden_size,
                                             optimization_options=options, opt_level=0)
    fused.save_model_to_file(str(target))
    ops = [node.op_type for node in fused.model.graph.node]
    return {op: ops.count(op) for op in FUSED_OPS}


def _constant(constants: dict, name: str) -> np.ndarray | None:
    """The value of initializer ``name``, or None when it is not one."""
    from onnx import numpy_helper

    return numpy_helper.to_array(constants[name]) if name in constants else None


def _feeds_softmax(node, readers: dict[str, list]) -> bool:
    """Whether a Softmax reads ``node``'s output directly or one node further down
    (``readers``: tensor name -> the nodes reading it)."""
    below = [r for out in node.output for r in readers.get(out, [])]
    below += [r for n in below for out in n.output for r in readers.get(out, [])]
    return any(n.op_type == "Softmax" for n in below)
