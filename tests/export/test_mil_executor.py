"""The numpy MIL executor: each op against a numpy / PyTorch reference, whole converted tiny
programs against PyTorch, constexpr decompression against coremltools' own."""

from __future__ import annotations

import math
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LABELS, PADDING_TOLERANCE, tiny_classifier, tiny_tokenizer

from pocketbert.core.errors import PocketbertError
from pocketbert.export import coreml, mil_executor
from pocketbert.export.mil_executor import (
    OPS,
    ExecutionError,
    Executor,
    UnsupportedOpError,
    run_op,
)

MAX_LENGTH = 32
# fp32 program vs PyTorch fp32: same arithmetic up to summation order, so float32 roundoff.
FP32_TOLERANCE = 1e-4
# fp16 program: every tensor is rounded to fp16 (unit roundoff 2**-11 ~ 4.9e-4) after each of
# ~25 ops per layer; logits carry a few 1e-3 of error and probabilities ~1e-3 (measured 1.2e-3
# on this model). 1e-2 leaves room for other inputs, while a wrong op or a broken mask moves
# probabilities by 0.1 or more on this deliberately sharp model (initializer_range 0.3).
FP16_TOLERANCE = 1e-2
# Compressed weights: what compression costs on this random tiny model, loose enough for other
# inputs, tight enough that a broken decompression (probabilities off by ~0.5) fails; the
# convert stage reports the real model's figures (<variant>.bucket_max_abs_prob_diff).
TOLERANCE = {"fp32": FP32_TOLERANCE, "fp16": FP16_TOLERANCE, "int8": 0.02, "palette6": 0.05,
             "palette4": 0.15}
BUCKETS = (8, 16, MAX_LENGTH)  # enumerated input lengths of the test programs
PAD = 0  # tiny_tokenizer's [PAD] id


# --- per-op unit tests, through the dispatcher ----------------------------------------------

def _op(op_type: str, **inputs):
    return run_op(op_type, inputs, name=f"test_{op_type}")


def _fp16_close(got: np.ndarray, ref: np.ndarray, rtol: float = 2e-3, atol: float = 1e-3) -> None:
    """fp16 results: the declared dtype, within a couple of fp16 ulps of a float64 reference."""
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=rtol, atol=atol)


RNG = np.random.default_rng(0)


def _rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def test_const() -> None:
    value = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert _op("const", val=value) is value


@pytest.mark.parametrize("op_type,ref", [("add", np.add), ("sub", np.subtract),
                                          ("mul", np.multiply), ("real_div", np.divide)])
def test_elementwise_binary_broadcasts_in_the_operand_dtype(op_type, ref) -> None:
    x, y = _rand(2, 1, 4), _rand(3, 1) + 3.0  # y away from 0 for real_div
    np.testing.assert_allclose(_op(op_type, x=x, y=y), ref(x, y), rtol=1e-6)
    got = _op(op_type, x=x.astype(np.float16), y=y.astype(np.float16))
    _fp16_close(got, ref(x.astype(np.float16).astype(np.float64),
                         y.astype(np.float16).astype(np.float64)))
    scalar = _op(op_type, x=np.float16(2.0), y=x.astype(np.float16))  # fp16 scalar const
    assert scalar.dtype == np.float16 and scalar.shape == x.shape


def test_int32_arithmetic_stays_int32() -> None:
    x, y = np.array([7, -7, 6, 32], np.int32), np.array([2, 2, 3, 32], np.int32)
    assert _op("add", x=x, y=y).dtype == np.int32
    div = _op("real_div", x=x, y=y)
    assert div.dtype == np.int32
    assert div.tolist() == [3, -3, 2, 1]  # truncated toward zero


def test_equal_and_select() -> None:
    x = np.array([1, 0, 3], np.int32)
    cond = _op("equal", x=x, y=np.int32(0))
    assert cond.dtype == np.bool_ and cond.tolist() == [False, True, False]
    a, b = np.array([10, 20, 30], np.int32), np.array([-1, -2, -3], np.int32)
    assert _op("select", cond=cond, a=a, b=b).tolist() == [-1, 20, -3]
    assert _op("select", cond=np.array([[True], [False]]), a=a, b=b).shape == (2, 3)


def test_not_equal() -> None:  # the in-graph attention mask: input_ids != [PAD]
    got = _op("not_equal", x=np.array([[2, 7, 0, 0]], np.int32), y=np.int32(0))
    assert got.dtype == np.bool_ and got.tolist() == [[True, True, False, False]]


def test_tanh() -> None:
    x = _rand(4, 5) * 3
    np.testing.assert_allclose(_op("tanh", x=x), torch.tanh(torch.from_numpy(x)).numpy(),
                               rtol=1e-6)
    _fp16_close(_op("tanh", x=x.astype(np.float16)),
                np.tanh(x.astype(np.float16).astype(np.float64)))


def test_cast() -> None:
    x = np.array([[0, 1, 2]], np.int32)
    assert _op("cast", x=x, dtype="fp16").dtype == np.float16
    assert _op("cast", x=x, dtype="fp32").tolist() == [[0.0, 1.0, 2.0]]
    assert _op("cast", x=np.array([-1.7, 2.9], np.float32), dtype="int32").tolist() == [-1, 2]
    assert _op("cast", x=x, dtype="bool").tolist() == [[False, True, True]]
    with pytest.raises(ExecutionError, match="unknown dtype"):
        _op("cast", x=x, dtype="complex64")


def test_shape() -> None:
    got = _op("shape", x=np.zeros((1, 7, 3), np.float16))
    assert got.dtype == np.int32 and got.tolist() == [1, 7, 3]


def test_expand_dims() -> None:
    x = np.zeros((1, 5), np.int32)
    assert _op("expand_dims", x=x, axes=np.array([1], np.int32)).shape == (1, 1, 5)
    assert _op("expand_dims", x=x, axes=np.array([-1, 0], np.int32)).shape == (1, 1, 5, 1)
    assert _op("expand_dims", x=x, axes=np.array([1, 2], np.int32)).shape == (1, 1, 1, 5)


def test_reshape() -> None:
    x = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    got = _op("reshape", x=x, shape=np.array([2, 3, 2, -1], np.int32))
    np.testing.assert_array_equal(got, x.reshape(2, 3, 2, 2))
    assert _op("reshape", x=x, shape=np.array([0, -1, 2], np.int32)).shape == (2, 6, 2)
    # 0s match x's dims counted from the right; one with no match is 1 (iOS17's rule)
    assert _op("reshape", x=x.reshape(6, 4), shape=np.array([1, 0, -1, 0], np.int32)).shape \
        == (1, 1, 6, 4)


def test_transpose() -> None:
    x = _rand(2, 3, 4, 5)
    perm = np.array([0, 2, 1, 3], np.int32)
    np.testing.assert_array_equal(_op("transpose", x=x, perm=perm),
                                  torch.from_numpy(x).permute(0, 2, 1, 3).numpy())


def test_tile() -> None:
    x = np.array([[1, 2]], np.int32)
    got = _op("tile", x=x, reps=np.array([3, 2], np.int32))
    np.testing.assert_array_equal(got, torch.from_numpy(x).repeat(3, 2).numpy())


def test_concat() -> None:
    a, b = np.array([[1, 2], [3, 4], [5, 6]]), np.array([[7, 8], [9, 10], [11, 12]])
    assert _op("concat", values=[a, b], axis=np.int32(0)).tolist() == \
        [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]
    # the op definition's own interleave example
    assert _op("concat", values=[a, b], axis=np.int32(0), interleave=True).tolist() == \
        [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]]
    assert _op("concat", values=[a, b], axis=np.int32(-1)).shape == (3, 4)
    assert _op("concat", values=[a, b], axis=np.int32(1), interleave=True)[0].tolist() == \
        [1, 7, 2, 8]
    # scalar dims, as the converter builds shape vectors
    got = _op("concat", values=[np.int32(1), np.int32(9), np.int32(2)], axis=np.int32(0))
    assert got.dtype == np.int32 and got.tolist() == [1, 9, 2]


def test_slice_by_index() -> None:
    x = np.arange(2 * 5 * 4).reshape(2, 5, 4)
    i32, b = (lambda *v: np.array(v, np.int32)), (lambda *v: np.array(v, bool))
    got = _op("slice_by_index", x=x, begin=i32(0, 1, 0), end=i32(2, 4, 4))
    np.testing.assert_array_equal(got, x[0:2, 1:4, 0:4])
    got = _op("slice_by_index", x=x, begin=i32(9, -4, 3), end=i32(1, 0, 0),
              stride=i32(1, 2, -1), begin_mask=b(True, False, False),
              end_mask=b(False, True, True))
    np.testing.assert_array_equal(got, x[:1, -4::2, 3::-1])
    # BERT's pooler input: hidden[:, 0] via squeeze_mask
    got = _op("slice_by_index", x=x, begin=i32(0, 0, 0), end=i32(2, 1, 4),
              end_mask=b(True, False, True), squeeze_mask=b(False, True, False))
    np.testing.assert_array_equal(got, x[:, 0])
    got = _op("slice_by_index", x=x, begin=i32(1, -1, 0), end=i32(0, 0, 0),
              squeeze_mask=b(True, True, False), end_mask=b(False, False, True))
    np.testing.assert_array_equal(got, x[1, -1, :])


def test_gather() -> None:
    x = _rand(4, 3, 5)
    idx = np.array([[3, 0], [-1, 2]], np.int32)  # negative counts from the end
    t = torch.from_numpy(x)
    flat = torch.from_numpy(idx % 4).long()
    np.testing.assert_array_equal(_op("gather", x=x, indices=idx),
                                  t[flat].numpy())  # axis 0 by default
    got = _op("gather", x=x, indices=np.array([4, 1], np.int32), axis=np.int32(-1),
              batch_dims=np.int32(0))
    np.testing.assert_array_equal(got, t[..., [4, 1]].numpy())
    scalar = _op("gather", x=np.array([1, 9, 32], np.int32), indices=np.int32(1),
                 axis=np.int32(0))
    assert np.asarray(scalar).shape == () and int(scalar) == 9  # a shape dim, as converted
    # batch_dims=1 (tf.gather): out[b, j, k] = x[b, indices[b, j], k]
    bidx = np.array([[2, 0, 2], [1, 1, 0], [0, 2, 1], [2, 2, 2]], np.int32)
    got = _op("gather", x=x, indices=bidx, axis=np.int32(1), batch_dims=np.int32(1))
    ref = np.empty((4, 3, 5), np.float32)
    for bb in range(4):
        for j in range(3):
            ref[bb, j] = x[bb, bidx[bb, j]]
    np.testing.assert_array_equal(got, ref)


def test_gather_along_axis() -> None:
    x = _rand(2, 3, 4)
    idx = RNG.integers(0, 3, size=(2, 5, 4)).astype(np.int32)
    got = _op("gather_along_axis", x=x, indices=idx, axis=np.int32(1))
    ref = torch.gather(torch.from_numpy(x), 1, torch.from_numpy(idx).long()).numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("tx,ty", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul(tx: bool, ty: bool) -> None:
    x = _rand(1, 2, 5, 4) if tx else _rand(1, 2, 4, 5)
    y = _rand(2, 3, 5) if ty else _rand(2, 5, 3)  # broadcast over the leading batch dim
    tx_t = torch.from_numpy(x).transpose(-1, -2) if tx else torch.from_numpy(x)
    ty_t = torch.from_numpy(y).transpose(-1, -2) if ty else torch.from_numpy(y)
    ref = torch.matmul(tx_t, ty_t).numpy()
    got = _op("matmul", x=x, y=y, transpose_x=tx, transpose_y=ty)
    assert got.shape == (1, 2, 4, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    got16 = _op("matmul", x=x16, y=y16, transpose_x=tx, transpose_y=ty)
    a, b = x16.astype(np.float64), y16.astype(np.float64)
    ref16 = a.swapaxes(-1, -2) if tx else a
    ref16 = ref16 @ (b.swapaxes(-1, -2) if ty else b)
    _fp16_close(got16, ref16)


def test_matmul_vectors() -> None:
    v, m = _rand(4), _rand(3, 4, 2)
    np.testing.assert_allclose(_op("matmul", x=v, y=m),
                               torch.matmul(torch.from_numpy(v), torch.from_numpy(m)).numpy(),
                               rtol=1e-5)
    assert _op("matmul", x=v, y=v).shape == ()


def test_linear() -> None:
    x, w, b = _rand(1, 6, 8), _rand(5, 8), _rand(5)
    ref = torch.nn.functional.linear(*map(torch.from_numpy, (x, w, b))).numpy()
    np.testing.assert_allclose(_op("linear", x=x, weight=w, bias=b), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_op("linear", x=x, weight=w), x @ w.T, rtol=1e-5, atol=1e-6)
    x16, w16, b16 = (a.astype(np.float16) for a in (x, w, b))
    _fp16_close(_op("linear", x=x16, weight=w16, bias=b16),
                x16.astype(np.float64) @ w16.astype(np.float64).T + b16.astype(np.float64))


def test_layer_norm() -> None:
    x, gamma, beta = _rand(1, 6, 8) * 4 + 1, _rand(8), _rand(8)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (8,), torch.from_numpy(gamma),
                                         torch.from_numpy(beta), eps=1e-12).numpy()
    got = _op("layer_norm", x=x, axes=np.array([-1], np.int32), gamma=gamma, beta=beta,
              epsilon=np.float32(1e-12))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    x2 = _rand(2, 3, 4)  # two axes, default gamma / beta / epsilon
    ref2 = torch.nn.functional.layer_norm(torch.from_numpy(x2), (3, 4), eps=1e-5).numpy()
    got2 = _op("layer_norm", x=x2, axes=np.array([1, 2], np.int32))
    np.testing.assert_allclose(got2, ref2, rtol=1e-5, atol=1e-5)
    x16, g16, b16 = (a.astype(np.float16) for a in (x, gamma, beta))
    ref16 = torch.nn.functional.layer_norm(
        torch.from_numpy(x16.astype(np.float64)), (8,),
        torch.from_numpy(g16.astype(np.float64)), torch.from_numpy(b16.astype(np.float64)),
        eps=0.0).numpy()
    _fp16_close(_op("layer_norm", x=x16, axes=np.array([-1], np.int32), gamma=g16, beta=b16,
                    epsilon=np.float16(1e-12)), ref16)  # 1e-12 is 0 in fp16


def test_softmax() -> None:
    x = _rand(2, 3, 7) * 5
    x[0, 0, :3] = -10_000.0  # masked positions, as the attention mask adds them
    ref = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    np.testing.assert_allclose(_op("softmax", x=x), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_op("softmax", x=x, axis=np.int32(1)),
                               torch.softmax(torch.from_numpy(x), dim=1).numpy(), rtol=1e-5)
    x16 = x.astype(np.float16)
    _fp16_close(_op("softmax", x=x16, axis=np.int32(-1)),
                torch.softmax(torch.from_numpy(x16.astype(np.float64)), dim=-1).numpy())


@pytest.mark.parametrize("mode,approximate", [("EXACT", "none"),
                                              ("TANH_APPROXIMATION", "tanh")])
def test_gelu(mode: str, approximate: str) -> None:
    x = _rand(3, 50) * 4
    ref = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float64)),
                                   approximate=approximate).numpy()
    got = _op("gelu", x=x, mode=mode)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    x16 = x.astype(np.float16)
    _fp16_close(_op("gelu", x=x16, mode=mode),
                torch.nn.functional.gelu(torch.from_numpy(x16.astype(np.float64)),
                                         approximate=approximate).numpy())


def test_gelu_default_and_sigmoid_mode() -> None:
    x = _rand(20) * 3
    np.testing.assert_allclose(
        _op("gelu", x=x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=1e-5,
        atol=1e-6)
    np.testing.assert_allclose(_op("gelu", x=x, mode="SIGMOID_APPROXIMATION"),
                               x * torch.sigmoid(torch.from_numpy(1.702 * x)).numpy(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ExecutionError, match="unknown mode"):
        _op("gelu", x=x, mode="CUBIC")


def test_classify() -> None:
    probs = np.array([[0.1, 0.6, 0.2, 0.1]], np.float32)
    label, table = _op("classify", probabilities=probs, classes=list(LABELS))
    assert label == LABELS[1]
    assert list(table) == list(LABELS)
    assert table[LABELS[2]] == pytest.approx(0.2)
    with pytest.raises(ExecutionError, match="3 classes"):
        _op("classify", probabilities=probs, classes=list(LABELS[:3]))


def test_constexpr_lut_to_dense_unpacks_the_documented_bit_order() -> None:
    # the op definition's example: n_bits = 2, shape (5,), M = 2 bytes, LSB first
    i = [0, 3, 2, 1, 3]
    packed = np.array([i[0] | i[1] << 2 | i[2] << 4 | i[3] << 6, i[4]], np.uint8)
    lut = np.array([10.0, 20.0, 30.0, 40.0], np.float16)
    got = _op("constexpr_lut_to_dense", indices=packed, lut=lut, shape=np.array([5], np.uint32))
    assert got.dtype == np.float16 and got.tolist() == [10.0, 40.0, 30.0, 20.0, 40.0]


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_constexpr_lut_to_dense_matches_coremltools_packing(nbits: int) -> None:
    with coreml.quiet():
        from coremltools.optimize import _utils as optimize_utils
    shape = (7, 5)  # 35 elements: 6-bit fields cross byte boundaries, last byte partly used
    values = RNG.integers(0, 2**nbits, size=shape).astype(np.uint8)
    packed = optimize_utils.pack_elements_into_bits(values.reshape(-1), nbits)
    assert packed.size == math.ceil(nbits * values.size / 8)
    lut = RNG.standard_normal(2**nbits).astype(np.float16)
    got = _op("constexpr_lut_to_dense", indices=packed, lut=lut,
              shape=np.array(shape, np.uint32))
    np.testing.assert_array_equal(got, lut[values])


def test_constexpr_affine_dequantize() -> None:
    q = np.array([[1, -2, 3], [4, 5, -6]], np.int8)
    # per-channel along axis 0: scale[i] and zero_point[i] apply to row i
    got = _op("constexpr_affine_dequantize", quantized_data=q,
              zero_point=np.array([0, 1], np.int8), scale=np.array([0.5, 2.0], np.float16),
              axis=np.int32(0))
    assert got.dtype == np.float16
    assert got.tolist() == [[0.5, -1.0, 1.5], [6.0, 8.0, -14.0]]
    got = _op("constexpr_affine_dequantize", quantized_data=q.astype(np.uint8) & 7,
              zero_point=np.uint8(4), scale=np.float32(0.25), axis=np.int32(1))
    np.testing.assert_array_equal(got, ((q.astype(np.uint8) & 7).astype(np.float32) - 4) * 0.25)
    got = _op("constexpr_affine_dequantize", quantized_data=q,
              zero_point=np.array([0, 0, 1], np.int8),
              scale=np.array([1.0, 2.0, 4.0], np.float32), axis=np.int32(-1))
    assert got[1].tolist() == [4.0, 10.0, -28.0]



def test_cumsum_keeps_dtype_and_follows_exclusive_and_reverse() -> None:
    x = np.array([[1, 1, 0, 1]], np.int32)  # RoBERTa/MPNet position ids: cumsum of the mask
    got = _op("cumsum", x=x, axis=np.int32(1))
    assert got.dtype == np.int32 and got.tolist() == [[1, 2, 2, 3]]
    assert _op("cumsum", x=x, axis=np.int32(-1), exclusive=True).tolist() == [[0, 1, 2, 2]]
    assert _op("cumsum", x=x, axis=np.int32(1), reverse=True).tolist() == [[3, 2, 1, 1]]
    assert _op("cumsum", x=x, axis=np.int32(1), exclusive=True,
               reverse=True).tolist() == [[2, 1, 1, 0]]
    assert _op("cumsum", x=np.array([0.5, 0.25], np.float16)).dtype == np.float16


def test_elementwise_ops_of_other_families() -> None:
    x = np.array([-2.0, -0.5, 0.0, 3.0], np.float32)
    assert _op("abs", x=x).tolist() == [2.0, 0.5, 0.0, 3.0]
    assert _op("abs", x=np.array([-3, 4], np.int32)).dtype == np.int32
    relu = _op("relu", x=x.astype(np.float16))
    assert relu.dtype == np.float16 and relu.tolist() == [0.0, 0.0, 0.0, 3.0]
    y = np.array([1.0, 2.0, 4.0], np.float32)
    np.testing.assert_allclose(_op("log", x=y), np.log(y), rtol=1e-7)
    assert _op("log", x=y, epsilon=np.float32(1.0))[0] == pytest.approx(np.log(2.0))
    assert np.isneginf(_op("log", x=np.zeros(1, np.float16)))[0]  # epsilon 1e-45 is 0 in fp16
    assert _op("less", x=np.int32(3), y=np.array([2, 3, 4], np.int32)).tolist() == [
        False, False, True]
    got = _op("minimum", x=np.array([1, 9], np.int32), y=np.int32(5))
    assert got.dtype == np.int32 and got.tolist() == [1, 5]
    assert _op("logical_not", x=np.array([True, False])).tolist() == [False, True]


def test_fill_like_range_1d_and_squeeze() -> None:
    got = _op("fill_like", ref_tensor=np.zeros((2, 3), np.float16), value=np.int32(7))
    assert got.shape == (2, 3) and got.dtype == np.int32 and (got == 7).all()
    assert _op("fill_like", ref_tensor=np.zeros(2, np.int32)).tolist() == [0.0, 0.0]
    got = _op("range_1d", end=np.int32(7), start=np.int32(1), step=np.int32(2))
    assert got.dtype == np.int32 and got.tolist() == [1, 3, 5]
    x = np.zeros((1, 3, 1, 2), np.float32)
    assert _op("squeeze", x=x).shape == (3, 2)
    assert _op("squeeze", x=x, axes=np.array([-2], np.int32)).shape == (1, 3, 2)
    assert _op("squeeze", x=x, axes=np.array([0, 2], np.int32)).shape == (3, 2)


TESTED_OPS = {
    "const", "add", "sub", "mul", "real_div", "equal", "not_equal", "select", "tanh", "cast",
    "shape", "expand_dims", "reshape", "transpose", "tile", "concat", "slice_by_index", "gather",
    "gather_along_axis", "matmul", "linear", "layer_norm", "softmax", "gelu", "classify",
    "constexpr_lut_to_dense", "constexpr_affine_dequantize",
    # other encoder families (tests/training/test_architectures.py runs their whole programs)
    "cumsum", "abs", "relu", "log", "less", "minimum", "logical_not", "fill_like", "range_1d",
    "squeeze",
}


def test_every_implemented_op_has_a_unit_test() -> None:
    assert set(OPS) == TESTED_OPS


def test_an_unknown_op_type_raises_naming_type_and_op() -> None:
    with pytest.raises(UnsupportedOpError, match="'fancy_attention'.*'layer3_attn'") as exc:
        run_op("fancy_attention", {"x": np.zeros(2)}, name="layer3_attn")
    assert isinstance(exc.value, PocketbertError)
    assert (exc.value.op_type, exc.value.op_name) == ("fancy_attention", "layer3_attn")


# --- whole programs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict:
    """The tiny classifier converted once with enumerated input lengths BUCKETS: fp32, fp16 and
    the three compressed variants."""
    folder = tmp_path_factory.mktemp("mil_executor")
    tokenizer = tiny_tokenizer()
    model = tiny_classifier(len(tokenizer))
    paths = {}
    fp16 = None
    for precision in ("fp32", "fp16"):
        mlmodel = coreml.convert(model, labels=LABELS, max_length=MAX_LENGTH,
                                 precision=precision, target="iOS16", buckets=BUCKETS,
                                 pad_id=PAD)
        paths[precision] = folder / f"{precision}.mlpackage"
        mlmodel.save(str(paths[precision]))
        fp16 = mlmodel
    for variant in ("int8", "palette6", "palette4"):
        paths[variant] = folder / f"{variant}.mlpackage"
        coreml.compress(fp16, variant).save(str(paths[variant]))
    return {"paths": paths, "model": model, "vocab_size": len(tokenizer)}


@pytest.fixture(scope="module")
def executors(programs) -> dict[str, Executor]:
    return {variant: Executor(path) for variant, path in programs["paths"].items()}


def _sequences(vocab_size: int) -> list[list[int]]:
    """Token ids of lengths 1..32 ([CLS] first, never [PAD]), as a tokenizer gives them."""
    rng = np.random.default_rng(7)
    out = []
    for length in (1, 5, 8, 12, 20, 32):
        ids = rng.integers(5, vocab_size, size=length)
        ids[0] = 2  # [CLS]
        out.append(ids.tolist())
    return out


def _padded(ids: list[int], length: int | None = None) -> np.ndarray:
    """[1, length] int32: ``ids`` and [PAD] up to ``length`` (default: the next bucket)."""
    return coreml.pad_to(ids, length or coreml.next_bucket(len(ids), BUCKETS), PAD)


def _torch_probabilities(model, sequences: list[list[int]]) -> np.ndarray:
    """[n, labels] from the PyTorch model on the unpadded ids (no mask needed)."""
    with torch.no_grad():
        return np.stack([torch.softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
                         .numpy() for ids in sequences])


def _max_prob_diff(executor: Executor, programs: dict) -> float:
    sequences = _sequences(programs["vocab_size"])
    ref = _torch_probabilities(programs["model"], sequences)
    got = np.stack([executor.probabilities(_padded(ids)) for ids in sequences])
    return float(np.abs(got - ref).max())


def test_programs_contain_only_implemented_ops(executors) -> None:
    dense = {"add", "cast", "classify", "concat", "const", "equal", "expand_dims", "gather",
             "gather_along_axis", "gelu", "layer_norm", "linear", "matmul", "mul", "not_equal",
             "real_div", "reshape", "select", "shape", "slice_by_index", "softmax", "sub",
             "tanh", "tile", "transpose"}
    assert executors["fp32"].op_types == dense
    assert executors["fp16"].op_types == dense
    assert executors["int8"].op_types == dense | {"constexpr_affine_dequantize"}
    assert executors["palette6"].op_types == dense | {"constexpr_lut_to_dense"}
    assert executors["palette4"].op_types == dense | {"constexpr_lut_to_dense"}
    assert all(e.op_types <= set(OPS) for e in executors.values())


def test_programs_take_input_ids_alone_at_the_enumerated_lengths(executors) -> None:
    for executor in executors.values():
        assert list(executor.inputs) == ["input_ids"]
        assert executor.input_shapes["input_ids"] == [(1, b) for b in BUCKETS]


def test_fp32_program_matches_pytorch(executors, programs) -> None:
    assert _max_prob_diff(executors["fp32"], programs) <= FP32_TOLERANCE


def test_fp16_program_matches_pytorch_within_fp16_roundoff(executors, programs) -> None:
    diff = _max_prob_diff(executors["fp16"], programs)
    assert diff <= FP16_TOLERANCE
    assert diff > 0  # the fp16 program really ran in fp16


@pytest.mark.parametrize("variant", list(TOLERANCE))
def test_every_bucket_gives_the_unpadded_pytorch_label_and_probabilities(
        variant, executors, programs) -> None:
    sequences = _sequences(programs["vocab_size"])
    reference = _torch_probabilities(programs["model"], sequences)
    got = coreml.bucket_parity(executors[variant], sequences, reference, BUCKETS, PAD)
    # every sequence at every bucket that holds it: 3 + 3 + 3 + 2 + 1 + 1
    assert got["bucket_cases"] == 13 and got["bucket_nonfinite"] == 0
    assert got["bucket_max_abs_prob_diff"] <= TOLERANCE[variant]
    assert got["bucket_label_agreement"] == 1.0
    assert got["padding_label_changes"] == 0
    assert got["padding_max_abs_prob_diff"] <= PADDING_TOLERANCE[variant]
    # and the padding length itself changes nothing beyond the round-off of the program's dtype
    for ids in sequences[:3]:
        by_bucket = [executors[variant].probabilities(_padded(ids, b)) for b in BUCKETS]
        np.testing.assert_allclose(by_bucket[0], by_bucket[-1], atol=PADDING_TOLERANCE[variant])


def test_bucket_parity_counts_what_breaks(executors, programs) -> None:
    sequences = _sequences(programs["vocab_size"])[:2]
    wrong = _torch_probabilities(programs["model"], sequences)[:, ::-1]  # labels swapped
    got = coreml.bucket_parity(executors["fp32"], sequences, wrong, BUCKETS, PAD)
    assert got["bucket_max_abs_prob_diff"] > 0.1 and got["bucket_label_agreement"] < 1.0


def test_fp16_stays_finite_for_one_token_and_an_all_padding_tail(executors) -> None:
    for variant in ("fp16", "int8", "palette6", "palette4"):
        for ids in ([2], [2, 3], [2, 40, 3]):  # [CLS] alone, an empty text, a 1-token text
            for bucket in BUCKETS:  # up to 31 positions of [PAD] after the text
                probs = executors[variant].probabilities(_padded(ids, bucket))
                assert np.isfinite(probs).all(), (variant, ids, bucket)
                assert probs.sum() == pytest.approx(1.0, abs=1e-2)
        # nothing but [PAD]: every position masked, still a distribution and no NaN
        probs = executors[variant].probabilities(_padded([], BUCKETS[0]))
        assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0, abs=1e-2)


def test_predict_returns_what_core_ml_returns(executors) -> None:
    ids = _padded([2, 40, 41, 42, 3])
    out = executors["fp16"].predict(ids)
    assert set(out) == {"classLabel", "classLabel_probs"}
    probs = out["classLabel_probs"]
    assert list(probs) == list(LABELS) and all(isinstance(p, float) for p in probs.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-2)
    assert out["classLabel"] == max(probs, key=probs.get)
    vector = executors["fp16"].probabilities(ids)
    assert vector.shape == (len(LABELS),) and vector.tolist() == list(probs.values())
    assert executors["fp16"].labels == list(LABELS)


def test_padding_is_masked_out_inside_the_program(executors, programs) -> None:
    ids = [2, 40, 41, 42, 3]
    reference = _torch_probabilities(programs["model"], [ids])[0]
    for bucket in BUCKETS:
        got = executors["fp32"].probabilities(_padded(ids, bucket))
        np.testing.assert_allclose(got, reference, atol=FP32_TOLERANCE)
    # a [PAD] id is masked wherever it stands: the mask is input_ids != [PAD]
    unmasked = executors["fp32"].probabilities(_padded([2, 40, 41, 42, 3, 5, 5, 5]))
    assert np.abs(unmasked - reference).max() > 10 * FP32_TOLERANCE


def test_inputs_the_program_does_not_take_are_refused(executors) -> None:
    with pytest.raises(ExecutionError, match=r"input_ids.*\[1, 9\].*pad to the next one"):
        executors["fp32"].predict(np.ones((1, 9), np.int32))  # not one of the buckets
    with pytest.raises(ExecutionError, match="float32"):
        executors["fp32"].predict(np.ones((1, 8), np.float32))
    with pytest.raises(ExecutionError, match="takes no attention_mask"):
        executors["fp32"].predict(np.ones((1, 8), np.int32), np.ones((1, 8), np.int32))
    as_int64 = np.ones((1, 8), np.int64)  # other integer dtypes are converted to int32
    assert executors["fp32"].probabilities(as_int64).shape == (len(LABELS),)


def test_an_op_result_of_the_wrong_dtype_is_caught(programs, monkeypatch) -> None:
    monkeypatch.setitem(mil_executor.OPS, "tanh", lambda x: np.tanh(x.astype(np.float32)))
    executor = Executor(programs["paths"]["fp16"])
    with pytest.raises(ExecutionError, match=r"\(tanh\) produced float32.*declared float16"):
        executor.predict(_padded([2, 3]))


def test_an_unknown_op_in_a_program_raises_before_running(programs) -> None:
    with coreml.quiet():
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(programs["paths"]["fp16"]), skip_model_load=True)
    spec = mlmodel.get_spec()  # a copy: the package is untouched
    function = spec.mlProgram.functions["main"]
    ops = function.block_specializations[function.opset].operations
    tanh = next(op for op in ops if op.type == "tanh")
    tanh.type = "hardtanh_v2"
    with pytest.raises(UnsupportedOpError, match=f"'hardtanh_v2'.*'{tanh.outputs[0].name}'"):
        Executor(ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir,
                                   skip_model_load=True))


@pytest.mark.parametrize("variant", ["int8", "palette6", "palette4"])
def test_decompressed_weights_equal_coremltools_decompression(variant, programs,
                                                              executors) -> None:
    with coreml.quiet():
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        mlmodel = ct.models.MLModel(str(programs["paths"][variant]), skip_model_load=True)
        reference = Executor(cto.decompress_weights(mlmodel))  # constexpr ops folded to const
    assert not any(t.startswith("constexpr_") for t in reference.op_types)
    weights = decompressed_weights(programs["paths"][variant])
    assert weights  # the embedding table at least (smaller weights stay dense: < 2048 values)
    for name, dense in weights.items():
        assert dense.dtype == np.float16
        np.testing.assert_array_equal(dense, reference.constants[name], err_msg=name)
        assert not np.array_equal(dense, executors["fp16"].constants[name.rsplit("_", 1)[0]])
    # and the compressed program computes what the decompressed one does
    for ids in _sequences(programs["vocab_size"])[:3]:
        np.testing.assert_array_equal(executors[variant].probabilities(_padded(ids)),
                                      reference.probabilities(_padded(ids)))


@pytest.mark.parametrize("variant", ["int8", "palette6", "palette4"])
def test_compressed_variants_stay_near_pytorch(variant, executors, programs) -> None:
    assert _max_prob_diff(executors[variant], programs) <= TOLERANCE[variant]


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predicts only on macOS")
def test_matches_core_ml_itself(programs, executors) -> None:
    import coremltools as ct

    for variant, path in programs["paths"].items():
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        tolerance = FP32_TOLERANCE if variant == "fp32" else FP16_TOLERANCE
        for ids in map(_padded, _sequences(programs["vocab_size"])):
            probs = mlmodel.predict({"input_ids": ids})
            core_ml = np.array([probs["classLabel_probs"][label] for label in LABELS])
            got = executors[variant].probabilities(ids)
            assert np.abs(got - core_ml).max() <= tolerance, (variant, ids.shape)


def test_decompressed_weights_of_a_dense_program_are_empty(programs) -> None:
    assert decompressed_weights(Path(programs["paths"]["fp32"])) == {}


def decompressed_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The dense weight of every constexpr op (int8 / palettized variants), by output name."""
    executor = Executor(path)
    return {name: executor.constants[name] for name in executor.constexpr_names}
