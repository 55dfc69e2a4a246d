"""The fastText alternative: training, the quantized model, probabilities in label-id order."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import LABELS, TINY_FASTTEXT, sentences

from pocketbert.core import params
from pocketbert.core.errors import ModelError
from pocketbert.training import fasttext_model

PARAMS = SimpleNamespace(**{**dataclasses.asdict(params.FastTextParams()), **TINY_FASTTEXT})


def _rows() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for i, label in enumerate(LABELS):
        for text in sentences(label, 8):
            texts.append(text)
            labels.append(i)
    return texts, labels


def test_probabilities_follow_the_label_ids_and_the_model_is_seeded(tmp_path) -> None:
    texts, labels = _rows()
    model = fasttext_model.train(texts, labels, PARAMS)
    probs = fasttext_model.probabilities(model, texts, len(LABELS))
    assert probs.shape == (len(texts), len(LABELS))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)  # fastText's softmax, float32
    # probability i belongs to label id i: fastText's own top label names the same id
    top = [model.f.predict(fasttext_model.one_line(t) + "\n", 1, 0.0, "strict")[0][1]
           for t in texts]
    assert probs.argmax(1).tolist() == [int(name[len("__label__"):]) for name in top]
    again = fasttext_model.train(texts, labels, PARAMS)  # one thread, one seed: same model
    np.testing.assert_array_equal(fasttext_model.probabilities(again, texts, len(LABELS)), probs)
    # a label absent from training gets probability 0
    assert (fasttext_model.probabilities(model, texts[:2], 6)[:, 4:] == 0).all()
    model.save_model(str(tmp_path / "m.bin"))
    loaded = fasttext_model.load(tmp_path / "m.bin")
    np.testing.assert_array_equal(fasttext_model.probabilities(loaded, texts, 4), probs)


def test_the_quantized_model_is_smaller_and_keeps_its_labels(tmp_path) -> None:
    texts, labels = _rows()
    plain = fasttext_model.train(texts, labels, PARAMS)
    quantized = fasttext_model.train(texts, labels, PARAMS, quantize=True)
    assert quantized.is_quantized() and not plain.is_quantized()
    plain.save_model(str(tmp_path / "m.bin"))
    quantized.save_model(str(tmp_path / "m.ftz"))
    assert (tmp_path / "m.ftz").stat().st_size < (tmp_path / "m.bin").stat().st_size
    # the rows kept stand for TINY_FASTTEXT's cutoff of 300 rows, out of words + 1000 hash rows
    words, dim = len(plain.get_words()), plain.get_dimension()
    assert fasttext_model.count_parameters(plain, PARAMS) == (
        plain.get_input_matrix().size + plain.get_output_matrix().size) == (words + 1000 + 4) * dim
    assert fasttext_model.count_parameters(quantized, PARAMS) == (300 + 4) * dim
    assert fasttext_model.probabilities(quantized, texts, 4).shape == (len(texts), 4)


def test_texts_become_one_line_and_bad_files_are_named(tmp_path) -> None:
    assert fasttext_model.one_line("two\nlines\t here ") == "two lines here"
    with pytest.raises(ModelError, match=r"none\.bin: not found; run `dvc repro fasttext`"):
        fasttext_model.load(tmp_path / "none.bin")
    (tmp_path / "bad.bin").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"bad\.bin: not a fastText model"):
        fasttext_model.load(tmp_path / "bad.bin")
