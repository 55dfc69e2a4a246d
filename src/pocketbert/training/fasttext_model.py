"""fastText supervised text classification: an alternative a user could ship instead of a
distilled student (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification").

Trained with fasttext-wheel (prebuilt bindings of fastText 0.9.2) on one thread, so that a
seed gives the same model every run. Predictions come from the bindings' C++ ``predict`` of one
line: the Python wrapper's ``predict`` fails under NumPy 2 (``np.array(probs, copy=False)``:
messense/fasttext-wheel issue 10); the fork fasttext-numpy2 0.10.4, which fixes that, gave NaN
losses at random on the same seeded data here, so it is not used. ``quantize`` is fastText's
own product quantization with ``cutoff`` rows kept and retraining (its tutorial's ``-qnorm
-retrain``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core.errors import ModelError

MODEL_FILE, QUANTIZED_FILE = "model.bin", "model.ftz"
"the plain and the quantized model in the fasttext stage's folder"
PARAMETERS_FILE = "parameters.json"
"{model file name: count_parameters} beside them (a quantized model does not say its rows)"
LABEL_PREFIX = "__label__"


def one_line(text: str) -> str:
    """``text`` as fastText reads a line: newlines and other whitespace runs made one space
    (fastText splits examples at newlines)."""
    return " ".join(text.split())


def _train_file(folder: Path, texts: Sequence[str], labels: Sequence[int]) -> Path:
    path = folder / "train.txt"
    path.write_text("".join(f"{LABEL_PREFIX}{label} {one_line(text)}\n"
                            for text, label in zip(texts, labels, strict=True)),
                    encoding="utf-8")
    return path


def train(texts: Sequence[str], labels: Sequence[int], params: Any, *,
          quantize: bool = False) -> Any:
    """A fastText supervised model trained on ``texts`` with label ids ``labels``
    (``params``: the fasttext section), quantized when ``quantize``. Raises ModelError when
    fastText cannot quantize (fewer rows than its product quantizer's 256 centroids)."""
    import fasttext

    with tempfile.TemporaryDirectory(prefix="pocketbert-fasttext-") as tmp:
        data = _train_file(Path(tmp), texts, labels)
        model = fasttext.train_supervised(
            input=str(data), epoch=params.epochs, lr=params.learning_rate, dim=params.dim,
            wordNgrams=params.word_ngrams, bucket=params.bucket, seed=params.seed, thread=1,
            verbose=0)
        if quantize:
            try:
                model.quantize(input=str(data), qnorm=True, retrain=True,
                               cutoff=params.quantize_cutoff, thread=1, verbose=0)
            except ValueError as exc:
                raise ModelError(f"fastText cannot quantize this model ({exc}); raise "
                                 "fasttext.bucket or train on more text") from None
    return model


def load(path: Path) -> Any:
    """The fastText model at ``path``. Raises ModelError naming the file when it is missing
    or not a fastText model."""
    import fasttext

    if not path.is_file():
        raise ModelError(f"{path}: not found; run `dvc repro fasttext`")
    try:
        return fasttext.load_model(str(path))
    except ValueError as exc:
        raise ModelError(f"{path}: not a fastText model ({exc}); run `dvc repro fasttext` "
                         "again") from None


def probabilities(model: Any, texts: Sequence[str], n_labels: int) -> np.ndarray:
    """Probabilities [len(texts), n_labels] float64 in label-id order (fastText's softmax over
    every label it was trained on; a label absent from training gets 0)."""
    out = np.zeros((len(texts), n_labels), dtype=np.float64)
    for row, text in enumerate(texts):
        # (probability, label) pairs for every label: k=-1, threshold 0
        for p, name in model.f.predict(one_line(text) + "\n", -1, 0.0, "strict"):
            out[row, int(name[len(LABEL_PREFIX):])] = p
    return out


def count_parameters(model: Any, params: Any) -> int:
    """Learned numbers: the input matrix (words and n-gram buckets, by dim) and the output
    matrix (labels, by dim). A quantized model counts the numbers its product-quantized input
    matrix stands for: the ``params.quantize_cutoff`` rows fastText keeps (all rows when there
    are fewer), by dim; its file holds them as 1-byte codes per ``dsub`` (2) numbers."""
    dim, labels = model.get_dimension(), len(model.get_labels())
    rows = len(model.get_words()) + params.bucket  # fastText allocates every hash row
    if model.is_quantized():
        rows = min(rows, params.quantize_cutoff)
    return int(rows * dim + labels * dim)
