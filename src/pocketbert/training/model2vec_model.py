"""Model2Vec static embeddings with a linear head: an alternative a user could ship instead of a
distilled student (MinishLab/model2vec, MIT; Tulkens and van Dongen 2024, "Model2Vec: Fast
State-of-the-Art Static Embeddings").

``distill`` runs model2vec's own distillation on a local model folder (never a hub download):
every token of the folder's vocabulary goes once through the transformer, the output vectors
are reduced by PCA, weighted by SIF (Arora et al. 2017) and stored; a text is then the mean of
its tokens' vectors, with no transformer at inference. The head is scikit-learn's logistic
regression on those text vectors (``fit_head``), with ``C`` picked on validation as the
baseline stage picks it, saved in model2vec's own pipeline format (``StaticModelPipeline``:
model.safetensors, tokenizer.json, config.json, head.safetensors), which model2vec loads and
runs with numpy alone. Soft targets (the teacher's probabilities) are fitted exactly by
repeating each text once per label with the probability as its sample weight: the weighted
log-loss is then the cross-entropy against the soft target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core.errors import ModelError

PLAIN, DISTILLED = "plain", "distilled"
"""the model2vec stage's two pipelines: the head fitted on the written train rows' labels, or on
the teacher's soft labels of every transfer text"""
HEAD_FILE = "head.safetensors"
"model2vec's file of the head's weights: a pipeline folder holds it"


def distill(folder: Path, params: Any) -> Any:
    """A ``model2vec.StaticModel`` distilled from the transformer in the local ``folder`` (a
    Hugging Face model folder with its tokenizer) with ``params`` (the model2vec section:
    pca_dims, quantize_to, vocabulary_quantization). Costs one forward pass per vocabulary
    token: one to two minutes for MiniLM's 30,522 on two shared cores (metrics/model2vec.json
    ``distill_seconds``). Raises ModelError naming the folder and the params key when it holds
    no loadable model or tokenizer."""
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"'model2vec.backbone': {folder} holds no model and tokenizer "
                         f"to distil Model2Vec from ({reason}); set it to a local Hugging Face "
                         "model folder (config.json, weights, tokenizer files)") from None
    return distill_from_model(model=model, tokenizer=tokenizer, device="cpu",
                              pca_dims=params.pca_dims, quantize_to=params.quantize_to,
                              vocabulary_quantization=params.vocabulary_quantization)


def encode(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Text vectors [len(texts), dim] float32: the mean of each text's token vectors (model2vec's
    ``encode``, its default truncation at 512 tokens)."""
    return np.asarray(model.encode(list(texts), show_progress_bar=False), dtype=np.float32)


def fit_head(features: np.ndarray, targets: np.ndarray, validation: np.ndarray,
             score: Callable[[np.ndarray], float], params: Any, n_labels: int) -> tuple[Any, float]:
    """A softmax head [n_labels] over text vectors, and its C.

    ``features``: [rows, dim] train vectors; ``targets``: label ids [rows] (hard) or
    probabilities [rows, n_labels] (soft, fitted by per-label sample weights); ``validation``:
    [v, dim] vectors whose predicted label ids ``score`` rates (higher is better). One logistic
    regression per ``params.c_values``; the best validation score wins, the first on a tie.
    Returns (model2vec ``MLPHead`` with one linear layer and softmax, C). A label absent from
    the targets gets weight 0 and bias -1e4 (probability 0)."""
    from sklearn.linear_model import LogisticRegression

    if targets.ndim == 2:  # soft: every text once per label, weighted by its probability
        rows, k = targets.shape
        x, y = np.repeat(features, k, axis=0), np.tile(np.arange(k), rows)
        weight: np.ndarray | None = targets.reshape(-1)
    else:
        x, y, weight = features, targets, None
    best: tuple[float, Any, float] | None = None
    for c in params.c_values:
        model = LogisticRegression(C=c, max_iter=params.max_iter)
        model.fit(x, y, sample_weight=weight)
        head = _head(model, n_labels)
        rated = score(head.predict_proba(validation).argmax(1))
        if best is None or rated > best[0]:
            best = (rated, head, c)
    assert best is not None
    return best[1], best[2]


def _head(model: Any, n_labels: int) -> Any:
    """A fitted LogisticRegression as a model2vec softmax MLPHead over all ``n_labels``."""
    from model2vec.inference.mlp import Activation, Layer, MLPHead

    coef, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # one logit z: softmax([0, z]) is its sigmoid
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, bias[0]])
    weight = np.zeros((n_labels, coef.shape[1]), dtype=np.float32)
    full = np.full(n_labels, -1e4, dtype=np.float32)
    weight[model.classes_], full[model.classes_] = coef, bias
    return MLPHead([Layer(weight=weight, bias=full)], Activation.SOFTMAX,
                   classes=np.arange(n_labels))


def save(model: Any, head: Any, folder: Path) -> None:
    """``model`` with ``head`` as a model2vec pipeline folder (``StaticModelPipeline``), without
    the model card model2vec writes for the Hugging Face hub (README.md: its links and loading
    example point at the hub, and nothing is published there)."""
    from model2vec.inference import StaticModelPipeline

    StaticModelPipeline(model, head).save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)


def load(folder: Path) -> Any:
    """The model2vec pipeline in ``folder``. Raises ModelError naming the folder when it is
    missing or not a pipeline."""
    from model2vec.inference import StaticModelPipeline

    if not (folder / HEAD_FILE).is_file():
        raise ModelError(f"{folder}: no Model2Vec pipeline ({HEAD_FILE} missing); run "
                         "`dvc repro model2vec`")
    try:
        return StaticModelPipeline.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder}: not a Model2Vec pipeline ({exc}); run `dvc repro "
                         "model2vec` again") from None


def probabilities(pipeline: Any, texts: Sequence[str]) -> np.ndarray:
    """Probabilities [len(texts), labels] float64 in label-id order."""
    return np.asarray(pipeline.predict_proba(list(texts)), dtype=np.float64)


def count_parameters(pipeline: Any) -> int:
    """Stored numbers: the token vectors (rows by dim; with vocabulary quantization, the
    clusters' vectors plus one weight per token), and the head's weights and biases."""
    model = pipeline.model
    count = model.embedding.size + (0 if model.weights is None else model.weights.size)
    return int(count + sum(layer.weight.size + layer.bias.size for layer in pipeline.head.layers))
