"""A reference executor for converted Core ML ML programs: numpy, on CPU, op by op.

Core ML predicts only on macOS. To measure what the fp32 / fp16 / int8 / palettized variants
do to the probabilities on Linux, this module runs the program stored in a .mlpackage exactly
as it is written: the same ops in the same order, each op's result held in the dtype the
program declares for it (fp16 tensors stay numpy float16, int32 stays int32), constexpr
weights decompressed as the op definitions state.

    executor = Executor("models/convert/student/palette4.mlpackage")
    executor.predict(input_ids)  # {"classLabel": ..., "classLabel_probs": {...}}

pocketbert's programs take ``input_ids`` alone (the mask is computed inside the program); a
program that also declares ``attention_mask`` is fed one with ``predict(input_ids, mask)``.

Reading is coremltools' own: ``MLModel(path, skip_model_load=True).get_spec()`` for the MIL
proto, and coremltools' milproto loader (``_load_value``, which reads ``weights/weight.bin``
through the native ``libmilstoragepython._BlobStorageReader``) for every constant.

Op semantics follow coremltools' op definitions (converters/mil/mil/ops/defs/iOS15..iOS17).
Precision: an op's result is rounded once to the op's output dtype. Element-wise ops compute
directly in that dtype (numpy's float16 arithmetic is the correctly rounded IEEE half result).
Ops that are one fused kernel on device -- matmul, linear, layer_norm, softmax, gelu -- keep
their inner sums and statistics in float32 and round the result, as numpy's own float16 matmul
does and as Core ML's fp16 kernels accumulate in wider precision; an fp16 tensor in between
two ops is always exactly representable in fp16. On-device kernels may still differ from this
reference in the last fp16 bit (order of summation, hardware transcendental functions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core.contract import LABEL_OUTPUT, PROBS_OUTPUT
from pocketbert.core.errors import ModelError, PocketbertError


class UnsupportedOpError(PocketbertError):
    """The program contains an op this executor does not implement."""

    def __init__(self, op_type: str, op_name: str) -> None:
        super().__init__(
            f"MIL op '{op_type}' (op '{op_name}') is not implemented in "
            "pocketbert.export.mil_executor; add it to OPS following its definition in "
            "coremltools' converters/mil/mil/ops/defs")
        self.op_type, self.op_name = op_type, op_name


class ExecutionError(PocketbertError):
    """An input does not fit the program, or an op's result contradicts its declared type."""


# --- op implementations --------------------------------------------------------------------
# Each takes the op's inputs by parameter name (numpy arrays, numpy scalars, str, or a list for
# tuple inputs) and returns its output, or a tuple of outputs. Defaults are the op definitions'.

OPS: dict[str, Callable[..., Any]] = {}


def _op(*names: str):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn

    return register


def _wide(x: np.ndarray) -> np.ndarray:
    """Inner precision of a fused op: float32 for fp16 and fp32 tensors."""
    return np.asarray(x, dtype=np.float32)


def _axis(axis, rank: int) -> int:
    axis = int(axis)
    return axis + rank if axis < 0 else axis


@_op("const")
def op_const(val):
    return val


@_op("add")
def op_add(x, y):
    return np.add(x, y)


@_op("sub")
def op_sub(x, y):
    return np.subtract(x, y)


@_op("mul")
def op_mul(x, y):
    return np.multiply(x, y)


@_op("real_div")
def op_real_div(x, y):
    """x / y. For int32 operands the quotient is truncated toward zero (a C cast to int32)."""
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(x.dtype, np.integer):
        return np.trunc(np.true_divide(x, y)).astype(np.result_type(x, y))
    return np.true_divide(x, y)


@_op("equal")
def op_equal(x, y):
    return np.equal(x, y)


@_op("not_equal")
def op_not_equal(x, y):
    return np.not_equal(x, y)


@_op("select")
def op_select(cond, a, b):
    return np.where(cond, a, b)


@_op("tanh")
def op_tanh(x):
    return np.tanh(x)


# Ops of other encoder families (tests/training/test_architectures.py runs each family's program):
# RoBERTa and MPNet count positions with cumsum; MPNet buckets relative positions with abs,
# less, log, minimum, fill_like and range_1d; DeBERTa-v2 uses logical_not and squeeze;
# DistilBERT's feed-forward uses relu.

@_op("cumsum")
def op_cumsum(x, axis=0, exclusive=False, reverse=False):
    x = np.asarray(x)
    axis = _axis(axis, x.ndim)
    y = np.flip(x, axis) if reverse else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if exclusive:
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)),
                              np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis) if reverse else out


@_op("abs")
def op_abs(x):
    return np.abs(x)


@_op("relu")
def op_relu(x):
    return np.maximum(x, np.zeros((), dtype=np.asarray(x).dtype))


@_op("log")
def op_log(x, epsilon=None):
    """log(x + epsilon); epsilon defaults to 1e-45 in x's dtype (0 in fp16)."""
    x = np.asarray(x)
    eps = x.dtype.type(1e-45) if epsilon is None else epsilon
    return np.log(x + eps)


@_op("less")
def op_less(x, y):
    return np.less(x, y)


@_op("minimum")
def op_minimum(x, y):
    return np.minimum(x, y)


@_op("logical_not")
def op_logical_not(x):
    return np.logical_not(x)


@_op("fill_like")
def op_fill_like(ref_tensor, value=0.0):
    """ref_tensor's shape, filled with value (in value's dtype)."""
    value = np.asarray(value)
    return np.full(np.shape(ref_tensor), value, dtype=value.dtype)


@_op("range_1d")
def op_range_1d(end, start, step):
    start = np.asarray(start)
    return np.arange(start, np.asarray(end), np.asarray(step), dtype=start.dtype)


@_op("squeeze")
def op_squeeze(x, axes=None):
    x = np.asarray(x)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_axis(a, x.ndim) for a in np.atleast_1d(axes)))


@_op("cast")
def op_cast(x, dtype):
    """dtype: 'int32', 'fp16', 'fp32', 'bool' (iOS15); float to int truncates toward zero."""
    names = {"int32": np.int32, "fp16": np.float16, "fp32": np.float32, "bool": np.bool_,
             "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}
    if dtype not in names:
        raise ExecutionError(f"cast: unknown dtype '{dtype}'")
    return np.asarray(x).astype(names[dtype])


@_op("shape")
def op_shape(x):
    return np.asarray(np.shape(x), dtype=np.int32)


@_op("expand_dims")
def op_expand_dims(x, axes):
    """Insert a 1 at each of ``axes``, counted in the output rank (negative from the end)."""
    x = np.asarray(x)
    out_rank = x.ndim + np.size(axes)
    shape = list(x.shape)
    for axis in sorted(_axis(a, out_rank) for a in np.atleast_1d(axes)):
        shape.insert(axis, 1)
    return x.reshape(shape)


@_op("reshape")
def op_reshape(x, shape):
    """-1 is inferred; 0 copies the matching dimension of x, counted from the right (iOS17's
    rule, which equals iOS15/16's rule wherever that one is defined: len(shape) == rank(x))."""
    x = np.asarray(x)
    shape = [int(s) for s in np.atleast_1d(shape)]
    offset = x.ndim - len(shape)
    for i, s in enumerate(shape):
        if s == 0:
            j = i + offset
            shape[i] = x.shape[j] if 0 <= j < x.ndim else 1
    return x.reshape(shape)


@_op("transpose")
def op_transpose(x, perm):
    return np.transpose(x, [int(p) for p in np.atleast_1d(perm)])


@_op("tile")
def op_tile(x, reps):
    return np.tile(x, [int(r) for r in np.atleast_1d(reps)])


@_op("concat")
def op_concat(values, axis, interleave=False):
    """Rank-0 values are stacked (the converter concatenates scalar dims into a shape vector)."""
    values = [np.asarray(v) for v in (values if isinstance(values, list) else [values])]
    if values[0].ndim == 0:
        return np.stack(values, axis=0)
    axis = _axis(axis, values[0].ndim)
    if not interleave:
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1)  # [..., d_axis, n, ...]: value index varies fastest
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@_op("slice_by_index")
def op_slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None,
                      squeeze_mask=None):
    """x[begin:end:stride] per axis; a mask ignores begin / end; squeeze_mask indexes begin."""
    x = np.asarray(x)
    rank = x.ndim
    stride = [1] * rank if stride is None else [int(s) for s in np.atleast_1d(stride)]
    begin_mask = [False] * rank if begin_mask is None else list(np.atleast_1d(begin_mask))
    end_mask = [False] * rank if end_mask is None else list(np.atleast_1d(end_mask))
    squeeze_mask = [False] * rank if squeeze_mask is None else list(np.atleast_1d(squeeze_mask))
    begin, end = np.atleast_1d(begin), np.atleast_1d(end)
    index: list[Any] = []
    for i in range(rank):
        b = None if begin_mask[i] else int(begin[i])
        if squeeze_mask[i]:
            index.append(0 if b is None else b)
            continue
        e = None if end_mask[i] else int(end[i])
        index.append(slice(b, e, stride[i]))
    return x[tuple(index)]


@_op("gather")
def op_gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """tf.gather: output shape x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis+1:];
    negative indices count from the end."""
    x, indices = np.asarray(x), np.asarray(indices)
    axis, batch_dims = _axis(axis, x.ndim), _axis(batch_dims, indices.ndim)
    if batch_dims == 0:
        return np.take(x, indices.astype(np.int64), axis=axis)
    return np.stack([op_gather(x[i], indices[i], axis - 1, batch_dims - 1)
                     for i in range(x.shape[0])])


@_op("gather_along_axis")
def op_gather_along_axis(x, indices, axis=0, validate_indices=False):
    x = np.asarray(x)
    return np.take_along_axis(x, np.asarray(indices).astype(np.int64), axis=_axis(axis, x.ndim))


@_op("matmul")
def op_matmul(x, y, transpose_x=False, transpose_y=False):
    """numpy matmul broadcasting; transpose_* swap the last two axes of a rank >= 2 operand."""
    x, y = np.asarray(x), np.asarray(y)
    if transpose_x and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    dtype = np.result_type(x, y)
    if np.issubdtype(dtype, np.floating):
        return np.matmul(_wide(x), _wide(y)).astype(dtype)
    return np.matmul(x, y)


@_op("linear")
def op_linear(x, weight, bias=None):
    """x @ weight.T + bias; weight [out, in], bias [out] (default zeros)."""
    x, weight = np.asarray(x), np.asarray(weight)
    out = np.matmul(_wide(x), _wide(weight).T)
    if bias is not None:
        out = out + _wide(bias)
    return out.astype(x.dtype)


@_op("layer_norm")
def op_layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """gamma * (x - mean) / sqrt(var + epsilon) + beta over ``axes`` (all axes by default)."""
    x = np.asarray(x)
    rank = x.ndim
    axes = tuple(range(rank)) if axes is None else tuple(
        _axis(a, rank) for a in np.atleast_1d(axes))
    shape = [x.shape[i] if i in axes else 1 for i in range(rank)]
    wide = _wide(x)
    centred = wide - wide.mean(axis=axes, keepdims=True)
    var = np.square(centred).mean(axis=axes, keepdims=True)
    out = centred / np.sqrt(var + np.float32(epsilon))
    if gamma is not None:
        out = out * _wide(gamma).reshape(shape)
    if beta is not None:
        out = out + _wide(beta).reshape(shape)
    return out.astype(x.dtype)


@_op("softmax")
def op_softmax(x, axis=-1):
    x = np.asarray(x)
    wide = _wide(x)
    e = np.exp(wide - wide.max(axis=int(axis), keepdims=True))
    return (e / e.sum(axis=int(axis), keepdims=True)).astype(x.dtype)


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # scipy is not a dependency; math.erf is exact but slower
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return erf(x)


@_op("gelu")
def op_gelu(x, mode="EXACT"):
    """EXACT: 0.5x(1 + erf(x/sqrt2)); TANH_APPROXIMATION: 0.5x(1 + tanh(sqrt(2/pi)(x +
    0.044715x^3))); SIGMOID_APPROXIMATION: x sigmoid(1.702x)."""
    x = np.asarray(x)
    w = x.astype(np.float64)  # erf / tanh in double, rounded once to the output dtype
    if mode == "EXACT":
        out = 0.5 * w * (1.0 + _erf(w / math.sqrt(2.0)))
    elif mode == "TANH_APPROXIMATION":
        out = 0.5 * w * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (w + 0.044715 * w**3)))
    elif mode == "SIGMOID_APPROXIMATION":
        out = w / (1.0 + np.exp(-1.702 * w))
    else:
        raise ExecutionError(f"gelu: unknown mode '{mode}'")
    return out.astype(x.dtype)


@_op("classify")
def op_classify(probabilities, classes):
    """(label of the largest probability, {label: probability}) for a batch-1 probability row."""
    probs = np.asarray(probabilities).reshape(-1)
    if probs.size != len(classes):
        raise ExecutionError(f"classify: {probs.size} probabilities for {len(classes)} classes")
    labels = [c if isinstance(c, str) else int(c) for c in classes]
    return labels[int(np.argmax(probs))], {c: float(p) for c, p in zip(labels, probs, strict=True)}


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned nbits-wide fields, packed from each byte's LSB upward, in row-major
    order; a field may span two bytes (constexpr_lut_to_dense's packing, iOS16)."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    fields = bits[: count * nbits].reshape(count, nbits).astype(np.int64)
    return fields @ (1 << np.arange(nbits, dtype=np.int64))


@_op("constexpr_lut_to_dense")
def op_constexpr_lut_to_dense(indices, lut, shape):
    """lut[index] for each packed index; NUM_PALETTES = lut.size = 2**nbits."""
    lut = np.asarray(lut)
    nbits = int(round(math.log2(lut.size)))
    if 2**nbits != lut.size:
        raise ExecutionError(f"constexpr_lut_to_dense: lut size {lut.size} is not 2**nbits")
    shape = [int(s) for s in np.atleast_1d(shape)]
    return lut[_unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape)


@_op("constexpr_affine_dequantize")
def op_constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """scale * (quantized_data - zero_point); a vector scale / zero_point runs along ``axis``;
    computed in float32, returned in scale's dtype."""
    data = np.asarray(quantized_data)
    axis = _axis(axis, data.ndim)

    def along_axis(param):
        param = np.asarray(param)
        if param.ndim == 0:
            return param.astype(np.float32)
        shape = [1] * data.ndim
        shape[axis] = param.size
        return param.astype(np.float32).reshape(shape)

    scale = np.asarray(scale)
    out = (data.astype(np.float32) - along_axis(zero_point)) * along_axis(scale)
    return out.astype(scale.dtype)


def run_op(op_type: str, inputs: Mapping[str, Any], name: str = "?") -> Any:
    """The dispatcher: run one op on already-evaluated inputs."""
    fn = OPS.get(op_type)
    if fn is None:
        raise UnsupportedOpError(op_type, name)
    return fn(**inputs)


# --- the program ----------------------------------------------------------------------------


class Executor:
    """Runs the ``main`` function of a Core ML ML program, given as a .mlpackage path or an
    MLModel (as loaded with ``skip_model_load=True``)."""

    def __init__(self, model: str | Path | Any) -> None:
        from pocketbert.export.coreml import quiet

        with quiet():
            import coremltools as ct

            if isinstance(model, str | Path):
                path = Path(model)
                if not path.exists():
                    raise ModelError(f"{path}: no such Core ML package")
                model = ct.models.MLModel(str(path), skip_model_load=True)
            spec, weights_dir = model.get_spec(), model.weights_dir
        self._load(spec, weights_dir)

    # loading ------------------------------------------------------------------------------

    def _load(self, spec, weights_dir: str | None) -> None:
        from pocketbert.export.coreml import quiet

        with quiet():
            from coremltools.converters.mil.frontend.milproto import load as milproto

        if milproto.BlobReader is None:
            # coremltools ships libmilstoragepython for macOS and Linux x86_64; without it no
            # blobFileValue can be read, and re-implementing its reader is not this module's job.
            raise ModelError("coremltools' native weight reader (libmilstoragepython) is not "
                             "available on this platform; the executor cannot read weight.bin")
        TranscriptionContext, _load_value = milproto.TranscriptionContext, milproto._load_value

        if spec.WhichOneof("Type") != "mlProgram":
            raise ModelError("not an ML program (mlprogram); the executor runs ML programs only")
        function = spec.mlProgram.functions.get("main")
        if function is None:
            raise ModelError("the ML program has no 'main' function")
        block = function.block_specializations[function.opset]
        self.opset = function.opset
        context = TranscriptionContext(weights_dir or "")
        self._read = lambda value: _load_value(context, value)

        self.op_types: set[str] = {op.type for op in block.operations}
        for op in block.operations:  # fail before running anything
            if op.type not in OPS:
                raise UnsupportedOpError(op.type, _op_name(op))

        self.inputs = {i.name: i for i in function.inputs}
        self.input_ranges = {
            f.name: [(r.lowerBound, r.upperBound)
                     for r in f.type.multiArrayType.shapeRange.sizeRanges]
            for f in spec.description.input}
        self.input_shapes = {
            f.name: sorted(tuple(s.shape) for s in f.type.multiArrayType.enumeratedShapes.shapes)
            for f in spec.description.input}
        self.output_names = list(block.outputs)
        self.constants: dict[str, Any] = {}
        self.constexpr_names: list[str] = []
        self._plan: list[tuple[Any, dict[str, Any], list[_Output]]] = []
        for op in block.operations:
            outputs = [_Output(o) for o in op.outputs]
            if op.type == "const" or op.type.startswith("constexpr_"):
                # const takes its value from attributes; iOS16 constexpr ops too, iOS18 ones
                # from inputs. Both are evaluated once, here.
                args = {k: _Immediate(self._read(v)) for k, v in op.attributes.items()
                        if k != "name"}
                args.update({k: self._argument(a) for k, a in op.inputs.items()})
                args = {k: self._resolve(v, self.constants) for k, v in args.items()}
                self._store(op, outputs, run_op(op.type, args, _op_name(op)), self.constants)
                if op.type != "const":
                    self.constexpr_names.extend(o.name for o in op.outputs)
            else:
                self._plan.append(
                    (op, {k: self._argument(a) for k, a in op.inputs.items()}, outputs))
        classify = [op for op, _, _ in self._plan if op.type == "classify"]
        self.labels: list[Any] = []
        if classify:
            self.labels = list(self._resolve(self._argument(classify[0].inputs["classes"]),
                                             self.constants))

    def _argument(self, argument):
        """An op input: a reference to a named value, an immediate value, or a tuple of them."""
        items = []
        for arg in argument.arguments:
            if arg.HasField("value"):
                kind = arg.value.type.WhichOneof("type")
                if kind == "listType":  # e.g. classify's classes; _load_value has no lists
                    items.append(_Immediate([self._read(v)
                                             for v in arg.value.immediateValue.list.values]))
                else:
                    items.append(_Immediate(self._read(arg.value)))
            else:
                items.append(_Ref(arg.name))
        return items[0] if len(items) == 1 else items

    @staticmethod
    def _resolve(item, values: Mapping[str, Any]):
        if isinstance(item, list):
            return [Executor._resolve(i, values) for i in item]
        if isinstance(item, _Immediate):
            return item.value
        return values[item.name]

    @staticmethod
    def _store(op, outputs: list[_Output], result, values: dict[str, Any]) -> None:
        """Check each output against its declared type and record it under its name."""
        results = result if len(outputs) > 1 else (result,)
        for declared, value in zip(outputs, results, strict=True):
            values[declared.name] = declared.check(value, op)

    # running ------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """All block outputs for the named inputs.

        BLAS runs on one thread: the same summation order on every machine, and batch-1
        matrices are too small to share (OpenBLAS's threads made a 6-layer program ~10x slower
        on a busy 2-core machine)."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        values = dict(self.constants)
        for name, declared in self.inputs.items():
            if name not in feeds:
                raise ExecutionError(f"input '{name}' missing; the program takes "
                                     f"{sorted(self.inputs)}")
            values[name] = self._input(name, declared, feeds[name])
        for op, args, outputs in self._plan:
            resolved = {k: self._resolve(v, values) for k, v in args.items()}
            self._store(op, outputs, run_op(op.type, resolved, _op_name(op)), values)
        return {name: values[name] for name in self.output_names}

    def _input(self, name: str, declared, value) -> np.ndarray:
        value = np.asarray(value)
        dtype = _np_dtype(declared.type)
        if value.dtype != dtype:
            if not (np.issubdtype(value.dtype, np.integer) and np.issubdtype(dtype, np.integer)):
                raise ExecutionError(f"input '{name}' is {value.dtype}; the program takes "
                                     f"{np.dtype(dtype).name}")
            value = value.astype(dtype)
        ranges = self.input_ranges.get(name) or []
        if ranges and (value.ndim != len(ranges) or any(
                not lo <= n <= (hi if hi >= 0 else n)
                for n, (lo, hi) in zip(value.shape, ranges, strict=True))):
            raise ExecutionError(f"input '{name}' has shape {list(value.shape)}; the program "
                                 f"takes sizes {ranges} (lower, upper) per dimension")
        shapes = self.input_shapes.get(name) or []
        if shapes and tuple(value.shape) not in shapes:
            raise ExecutionError(f"input '{name}' has shape {list(value.shape)}; the program "
                                 f"takes only the shapes {[list(s) for s in shapes]} (pad to "
                                 "the next one)")
        return value

    def predict(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                ) -> dict[str, Any]:
        """What Core ML returns: {'classLabel': label, 'classLabel_probs': {label: p}}.

        ``attention_mask`` only for a program that declares it (ExecutionError otherwise, and
        when such a program gets none)."""
        feeds = {"input_ids": input_ids}
        if attention_mask is not None:
            if "attention_mask" not in self.inputs:
                raise ExecutionError("the program takes no attention_mask (it computes the "
                                     "mask from input_ids != [PAD]); pass input_ids alone")
            feeds["attention_mask"] = attention_mask
        out = self.run(feeds)
        if LABEL_OUTPUT not in out or PROBS_OUTPUT not in out:
            raise ModelError(f"the program's outputs are {self.output_names}, not "
                             f"{[LABEL_OUTPUT, PROBS_OUTPUT]}")
        return {LABEL_OUTPUT: out[LABEL_OUTPUT], PROBS_OUTPUT: out[PROBS_OUTPUT]}

    def probabilities(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                      ) -> np.ndarray:
        """[labels] probabilities in the classify op's label order (arguments as predict's)."""
        probs = self.predict(input_ids, attention_mask)[PROBS_OUTPUT]
        return np.asarray([probs[label] for label in self.labels], dtype=np.float64)


class _Ref:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Immediate:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _op_name(op) -> str:
    attr = op.attributes.get("name")
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return attr.immediateValue.tensor.strings.values[0]
    return op.outputs[0].name if op.outputs else "?"


def _np_dtype(value_type):
    from coremltools.converters.mil.frontend.milproto.helper import proto_to_types
    from coremltools.converters.mil.mil import types

    builtin = proto_to_types(value_type)
    if types.is_tensor(builtin):
        builtin = builtin.get_primitive()
    return types.nptype_from_builtin(builtin)


class _Output:
    """An op output's declared name, dtype and shape (None for a dimension known only at run
    time); ``check`` raises if an op produced something else."""

    def __init__(self, declared) -> None:
        self.name = declared.name
        self.dtype = None  # not checked: dictionaries (classify's probabilities) and strings
        if declared.type.WhichOneof("type") == "tensorType":
            dtype = _np_dtype(declared.type)
            self.dtype = None if dtype is np.str_ else np.dtype(dtype)
        tensor = declared.type.tensorType
        self.shape = [d.constant.size if d.WhichOneof("dimension") == "constant" else None
                      for d in tensor.dimensions] if tensor.rank >= 0 else None

    def check(self, value, op):
        if self.dtype is None:
            return value
        value = np.asarray(value)
        if value.dtype != self.dtype:
            raise ExecutionError(f"op '{_op_name(op)}' ({op.type}) produced {value.dtype} for "
                                 f"'{self.name}', declared {self.dtype.name}")
        if self.shape is not None and (value.ndim != len(self.shape) or any(
                e is not None and e != n for e, n in zip(self.shape, value.shape, strict=True))):
            raise ExecutionError(f"op '{_op_name(op)}' ({op.type}) produced shape "
                                 f"{list(value.shape)} for '{self.name}', declared {self.shape}")
        return value
