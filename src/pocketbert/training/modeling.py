"""Teacher and student classifiers: loading any sequence classifier, matching its labels by name,
student initialisation, and the device wrapper that ONNX export and Core ML conversion trace.

Architectures: anything ``AutoModelForSequenceClassification`` loads from a local folder.
The device wrapper is checked (tests/training/test_architectures.py) on BERT, RoBERTa, MPNet,
DeBERTa-v2, ELECTRA and DistilBERT; inputs are always (input_ids, attention_mask), so
token_type_ids are never fed (every family above defaults them to zeros or has none).
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from pocketbert.core import contract
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.core.errors import ModelError, ParamsError, PocketbertError
from pocketbert.core.model_folders import ORIGIN, read_config


def label_maps(labels: tuple[str, ...]) -> dict:
    """id2label / label2id keyword arguments of a transformers config for ``labels``."""
    return {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}


EMBEDDING_ROWS = "pocketbert_embedding_rows"
"""config.json key of a student whose word embeddings are a RemappedEmbedding: its row count."""
EMBEDDING_RANK = "pocketbert_embedding_rank"
"""config.json key of a RemappedEmbedding factorised to this rank (absent: full rows)."""


class RemappedEmbedding(torch.nn.Module):
    """Word embeddings whose token ids go through a lookup table first: ``table(remap[ids])``.

    ``remap``: int32 [vocab], the row of each token id (a buffer, saved with the weights);
    ``table``: nn.Embedding [rows, hidden], rows <= vocab. Many ids may share one row
    (vocabulary.cluster_rows), so the tokenizer keeps the whole vocabulary while the matrix
    stays small. With ``rank``, the table is [rows, rank] and a bias-free linear map
    ``project`` [rank -> hidden] follows: the factorised embedding of ALBERT (Lan et al. 2020,
    "ALBERT: A Lite BERT", section 3.1), rows x rank + rank x hidden numbers instead of
    rows x hidden. ONNX export and Core ML conversion see two gathers (and a matmul)."""

    def __init__(self, remap: torch.Tensor, rows: int, hidden: int,
                 padding_idx: int | None = None, rank: int | None = None) -> None:
        super().__init__()
        self.register_buffer("remap", remap.to(torch.int32))
        self.table = torch.nn.Embedding(rows, rank or hidden, padding_idx=padding_idx)
        self.project = torch.nn.Linear(rank, hidden, bias=False) if rank else None
        self.hidden = hidden

    @property
    def weight(self) -> torch.Tensor:
        """The [rows, hidden] matrix (what nn.Embedding's ``weight`` is to callers); with a
        rank, the product of the two factors."""
        if self.project is None:
            return self.table.weight
        return self.project(self.table.weight)

    @property
    def embedding_dim(self) -> int:
        return self.hidden

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] token ids -> [batch, seq, hidden]."""
        rows = self.table(self.remap[input_ids].long())
        return rows if self.project is None else self.project(rows)


def factorise(rows: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-``rank`` factors of ``rows`` [n, hidden] in the least-squares sense
    (truncated SVD, Eckart-Young): (table [n, rank], projection weight [hidden, rank]) with
    ``table @ projection.T`` closest to ``rows``. Raises ParamsError unless the factors hold
    fewer numbers than the rows, rank x (n + hidden) < n x hidden (a larger rank would make the
    student bigger, not smaller)."""
    n, hidden = rows.shape
    largest = (n * hidden - 1) // (n + hidden)
    if not 1 <= rank <= largest:
        raise ParamsError(f"'train_student.embedding_rank' is {rank}, but the embedding "
                          f"matrix is {n} x {hidden}, so factors of that rank are no smaller "
                          f"than it; use a rank from 1 to {largest}, or null to keep the rows "
                          "whole", key="train_student.embedding_rank", source="params.yaml")
    u, s, vh = torch.linalg.svd(rows.double(), full_matrices=False)
    return (u[:, :rank] * s[:rank]).float(), vh[:rank].T.contiguous().float()


def _remapped_module(config, remap: torch.Tensor, rows: int, hidden: int,
                     rank: int | None) -> RemappedEmbedding:
    """An untrained RemappedEmbedding for a model of ``config``: the padding row is the
    pad token's row, remap[config.pad_token_id] (none without a pad token)."""
    pad = getattr(config, "pad_token_id", None)
    return RemappedEmbedding(remap, rows, hidden, int(remap[pad]) if pad is not None else None,
                             rank)


def install_remapped_embedding(model, remap: torch.Tensor, rows: torch.Tensor,
                               rank: int | None = None) -> None:
    """Replace ``model``'s word embeddings by RemappedEmbedding(remap, rows) and record the
    row count (EMBEDDING_ROWS) and rank (EMBEDDING_RANK) in its config, so that loading
    rebuilds the same module. ``remap`` int [vocab]; ``rows`` float [rows, hidden];
    ``rank``: None keeps the rows whole, else they start as their truncated SVD (factorise).
    config.vocab_size stays the tokenizer's vocabulary; pad_token_id keeps its token id (its
    row is remap[pad]). Raises ParamsError (factorise)."""
    module = _remapped_module(model.config, remap, rows.shape[0], rows.shape[1], rank)
    with torch.no_grad():
        if rank is None:
            module.table.weight.copy_(rows)
        else:
            table, projection = factorise(rows, rank)
            module.table.weight.copy_(table)
            module.project.weight.copy_(projection)
    model.set_input_embeddings(module)
    model.config.vocab_size = int(remap.shape[0])
    setattr(model.config, EMBEDDING_ROWS, int(rows.shape[0]))
    if rank is not None:
        setattr(model.config, EMBEDDING_RANK, int(rank))


def _remapped_from_pretrained(folder: Path, origin: str):
    """A student saved with a RemappedEmbedding: the config's model with that module in place,
    then every tensor of model.safetensors loaded strictly. Raises ModelError."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    weights = folder / contract.WEIGHTS_FILE
    try:
        config = AutoConfig.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_config(config)
        state = load_file(str(weights))
        remap_key = next(k for k in state if k.endswith("word_embeddings.remap"))
        model.set_input_embeddings(_remapped_module(
            config, state[remap_key], getattr(config, EMBEDDING_ROWS), config.hidden_size,
            getattr(config, EMBEDDING_RANK, None)))
        model.load_state_dict(state, strict=True)
    except (OSError, ValueError, RuntimeError, KeyError, StopIteration) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{folder}: config.json has {EMBEDDING_ROWS} but {weights.name} does "
                         f"not hold a matching remapped embedding ({first}); {origin} must "
                         "name a folder saved by the train_student stage") from exc
    return model.eval()


def _from_pretrained(folder: Path, origin: str, trust_remote_code: bool, **kwargs):
    """AutoModelForSequenceClassification.from_pretrained, weights-only, errors as ModelError.

    ``weights_only=True`` makes transformers read a pickle (pytorch_model.bin) through
    torch.load's weights-only unpickler, which refuses any object but tensors and plain
    containers (PyTorch's documented defence against code in pickles); safetensors has no code.
    """
    from transformers import AutoModelForSequenceClassification

    if EMBEDDING_ROWS in read_config(folder, origin, trust_remote_code) and not kwargs:
        return _remapped_from_pretrained(Path(folder), origin)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(folder), trust_remote_code=trust_remote_code, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{folder}: the pickled weights hold more than tensors and were not "
                         "loaded (weights-only loading); convert them to model.safetensors "
                         "with the code that saved them") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{folder}: transformers cannot load a sequence classifier from it "
                         f"({first}); {origin} must name a folder saved by save_pretrained"
                         ) from exc


def new_classifier(backbone: Path, labels: tuple[str, ...], origin: str = ORIGIN,
                   trust_remote_code: bool = False):
    """A sequence classifier on ``backbone`` (any architecture) with a new head for ``labels``.

    An existing head of another size is replaced (ignore_mismatched_sizes). Raises ModelError
    (see checkpoints.read_config and _from_pretrained)."""
    read_config(backbone, origin, trust_remote_code)
    return _from_pretrained(backbone, origin, trust_remote_code, num_labels=len(labels),
                            ignore_mismatched_sizes=True, **label_maps(labels))


_GENERIC = re.compile(r"LABEL_\d+")


def label_order(config: dict, labels: tuple[str, ...], config_file: Path,
                label_names: tuple[str, ...] = ()) -> list[int]:
    """For each of ``labels`` (the pipeline's order), the classifier output id of that label.

    The classifier's names come from config.json's ``id2label`` (label2id is not read:
    transformers names outputs by id2label), or from ``label_names`` (params
    'teacher.label_names', in id order) when config.json has transformers' generic LABEL_0..
    names. Every defect of the map raises ModelError naming ``config_file`` and the fix: no
    id2label, ids that are not integers, gaps or repeats among the ids, generic names without
    teacher.label_names, a label_names list of the wrong length, repeated names, names not in
    split.labels, or a different number of labels."""
    raw = config.get("id2label")
    where = f"{config_file}: id2label"
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{where} is missing; add \"id2label\": {{\"0\": \"<first label>\", "
                         "...}} to config.json, naming the classifier's outputs in id order")
    ids: dict[int, str] = {}
    for key, name in raw.items():
        try:
            idx = int(key)
        except (TypeError, ValueError):
            raise ModelError(f"{where} has the key {key!r}, not an integer id; the keys must "
                             "be the output ids 0..n-1") from None
        if idx in ids:
            raise ModelError(f"{where} lists id {idx} twice; give each output id once")
        ids[idx] = str(name)
    missing = sorted(set(range(len(ids))) - set(ids))
    if missing:
        raise ModelError(
            f"{where} has ids {sorted(ids)}: ids {missing} are missing; the ids must be "
            f"0..{len(ids) - 1} with no gaps (renumber them to match the classifier's outputs)")
    names = [ids[i] for i in range(len(ids))]
    if label_names:
        if len(label_names) != len(names):
            raise ModelError(
                f"{where} has {len(names)} outputs but the params key 'teacher.label_names' lists "
                f"{len(label_names)} names; list one name per output, in id order")
        names = list(label_names)
        where = "the params key 'teacher.label_names'"
    elif all(_GENERIC.fullmatch(n) for n in names):
        raise ModelError(
            f"{where} has only generic names {names}; set the params key teacher.label_names "
            f"to the label names in id order (from {list(labels)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ModelError(f"{where} names {repeated} more than once; each output needs its own "
                         "label name")
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ModelError(
            f"{where} has names {unknown} that are not in split.labels {list(labels)}; rename "
            "them in config.json (or teacher.label_names), or change split.labels")
    if len(names) != len(labels):
        raise ModelError(
            f"{where} has {len(names)} labels {names}, split.labels has {len(labels)} "
            f"{list(labels)}; give a classifier trained on exactly these labels, or change "
            "split.labels to its labels")
    return [names.index(label) for label in labels]


def _head(model) -> torch.nn.Linear:
    """The classifier's last Linear layer (its outputs are the logits)."""
    n = model.config.num_labels
    heads = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
             and m.out_features == n and name.split(".")[0] in ("classifier", "score",
                                                                "logits_proj")]
    if not heads:
        raise ModelError(f"{type(model).__name__}: no classifier layer with {n} outputs found; "
                         "give a standard transformers sequence classifier")
    return heads[-1]


def reorder_outputs(model, order: list[int], labels: tuple[str, ...]) -> None:
    """Permute the head's rows so that output i is the old output ``order[i]``; the config
    then names ``labels`` in that order. Logits change order only, not value."""
    if order != list(range(len(order))):
        head = _head(model)
        index = torch.tensor(order, dtype=torch.long)
        with torch.no_grad():
            head.weight.copy_(head.weight[index])  # [labels, hidden]
            if head.bias is not None:
                head.bias.copy_(head.bias[index])
    for key, value in label_maps(labels).items():
        setattr(model.config, key, value)


def load_classifier(folder: Path, labels: tuple[str, ...], origin: str = ORIGIN,
                    label_names: tuple[str, ...] = (), trust_remote_code: bool = False):
    """A fine-tuned classifier whose outputs are ``labels`` in that order.

    Its own labels are matched by name (label_order) and its head reordered into the
    pipeline's order, so every later step sees logits in split.labels order. The mapping is
    at ``model.pocketbert_label_order`` (pipeline label i = the checkpoint's output id
    order[i]). Raises ModelError (label_order, checkpoints.read_config, _from_pretrained)."""
    folder = Path(folder)
    config = read_config(folder, origin, trust_remote_code)
    order = label_order(config, labels, folder / "config.json", label_names)
    model = _from_pretrained(folder, origin, trust_remote_code)
    if model.config.num_labels != len(order):
        raise ModelError(f"{folder / 'config.json'}: id2label has {len(order)} labels but the "
                         f"classifier has {model.config.num_labels} outputs; fix id2label")
    reorder_outputs(model, order, labels)
    model.pocketbert_label_order = order
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def _layer_list(model) -> torch.nn.ModuleList:
    """The encoder's list of transformer layers (encoder.layer, transformer.layer, ...)."""
    n = model.config.num_hidden_layers
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ModelError(f"{type(model).__name__}: no list of {n} transformer layers found; "
                     "layer selection needs a standard encoder")


_PROJECTIONS = (("query", "key", "value"), ("q", "k", "v"), ("q_lin", "k_lin", "v_lin"),
                ("query_proj", "key_proj", "value_proj"))
"names of the self-attention input projections: BERT/RoBERTa/ELECTRA, MPNet, DistilBERT, DeBERTa"


def attention_projections(model, layer: int) -> tuple[torch.nn.Linear, ...]:
    """The query, key and value Linear modules of encoder layer ``layer`` (negative: from the
    end) of ``model``. Raises ModelError for an architecture whose layer holds no such trio."""
    block = _layer_list(model)[layer]
    linears = {name.rsplit(".", 1)[-1]: module for name, module in block.named_modules()
               if isinstance(module, torch.nn.Linear)}
    for names in _PROJECTIONS:
        if all(n in linears for n in names):
            return tuple(linears[n] for n in names)
    raise ModelError(f"{type(model).__name__}: layer {layer} has no query, key and value "
                     "projections by a known name; attention relations need a BERT-like layer "
                     "(set train_student.relation_weight to 0)")


@contextlib.contextmanager
def recorded_outputs(modules: tuple[torch.nn.Module, ...]) -> Iterator[list]:
    """A list, one slot per module of ``modules`` in that order, that receives the module's
    first output inside the block (None until it runs); the hooks are removed on leaving it.
    A later call of the same module is not recorded: DeBERTa-v2 runs ``query_proj`` and
    ``key_proj`` a second time on its relative position embeddings (``share_att_key``), and its
    first call is the one on the tokens."""
    first: list = [None] * len(modules)

    def hook(index: int):
        def record(_module, _args, out) -> None:
            if first[index] is None:
                first[index] = out
        return record

    hooks = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield first
    finally:
        for handle in hooks:
            handle.remove()


def keep_layers(model, layers: tuple[int, ...], key: str = "train_student.copy_layers"):
    """A copy of ``model`` with only encoder ``layers`` (in that order); embeddings, pooler and
    head are kept. Works for any architecture whose encoder holds its layers in one
    ModuleList (BERT, RoBERTa, MPNet, DeBERTa-v2, ELECTRA, DistilBERT). Raises ParamsError
    naming ``key`` for an index out of range."""
    n = model.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ParamsError(f"'{key}': layer index {bad[0]} is out of range; the model has "
                          f"layers 0..{n - 1}", key=key, source="params.yaml")
    student = copy.deepcopy(model)
    kept = _layer_list(student)
    chosen = [kept[i] for i in layers]
    for i in range(len(kept) - 1, -1, -1):
        del kept[i]
    kept.extend(chosen)
    student.config.num_hidden_layers = len(layers)
    for new, layer in enumerate(kept):  # attention caches index layers by their number
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    return student


def student_from_layers(teacher, layers: tuple[int, ...]):
    """DistilBERT-style student: embeddings, the chosen teacher layers, pooler and head."""
    return keep_layers(teacher, layers)


def fresh_student(teacher, hidden_size: int | None, num_layers: int, num_heads: int,
                  intermediate_size: int | None, seed: int):
    """A randomly initialised student of the teacher's architecture, vocabulary and labels.
    Raises ParamsError when ``num_heads`` does not divide the hidden size."""
    from transformers import AutoModelForSequenceClassification

    hidden = hidden_size or teacher.config.hidden_size
    if hidden % num_heads:
        raise ParamsError(f"'train_student.num_heads': {num_heads} does not divide hidden size "
                          f"{hidden}; pick a divisor", key="train_student.num_heads",
                          source="params.yaml")
    config = copy.deepcopy(teacher.config)
    config.hidden_size = hidden
    config.num_hidden_layers = num_layers
    config.num_attention_heads = num_heads
    config.intermediate_size = intermediate_size or 4 * hidden
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


def save_classifier(folder: Path, model, tokenizer, labels: tuple[str, ...], section: str,
                    params: object) -> None:
    """Weights, tokenizer, labels.json and the resolved params of the run, side by side."""
    import yaml

    from pocketbert.core.params import as_dict
    from pocketbert.data.dataset import write_labels

    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    write_labels(folder / contract.LABELS_FILE, labels)
    (folder / "params.yaml").write_text(
        yaml.safe_dump({section: as_dict(params)}, sort_keys=False), encoding="utf-8")


class UnsupportedArchitectureError(ModelError):
    """A device format step (ONNX export, Core ML conversion) cannot take this architecture.

    ``step`` ("ONNX export"), ``model_type`` (config.json's) and ``reason`` (the exporter's
    exception type and first line) are kept apart for the teacher's record
    (skip_teacher_step)."""

    def __init__(self, message: str, *, step: str, model_type: str, reason: str) -> None:
        super().__init__(message)
        self.step, self.model_type, self.reason = step, model_type, reason


TESTED_FAMILIES = ("bert", "roberta", "mpnet", "deberta-v2", "electra", "distilbert")


@contextlib.contextmanager
def device_step(step: str, model) -> Iterator[None]:
    """Turn an exporter's or converter's failure into one line naming the step and model_type.

    The exporters fail with arbitrary exception types (NotImplementedError for a missing
    op, RuntimeError, ValueError, AssertionError), hence the broad catch; pocketbert's own
    errors pass through unchanged. Raises UnsupportedArchitectureError."""
    try:
        yield
    except PocketbertError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        model_type = model.config.model_type
        reason = f"{type(exc).__name__}: {detail[0][:200] if detail else 'no message'}"
        raise UnsupportedArchitectureError(
            f"{step} does not support model_type {model_type!r} ({reason}); the student does "
            "not need the teacher's device files: use a student of a tested family "
            f"({', '.join(TESTED_FAMILIES)})",
            step=step, model_type=model_type, reason=reason) from exc


TEACHER = "teacher"
"""The teacher's model folder name (dvc.yaml's ``models/${item}``): export@ and convert@ record,
rather than fail, a device step its architecture cannot take."""
UNSUPPORTED_FILE = "unsupported.json"
"""In an export@/convert@ output folder: the record of a step the teacher could not take."""


def skip_teacher_step(error: UnsupportedArchitectureError, model_dir: Path, out: Path,
                      stage_name: str) -> dict:
    """Record a device step the teacher's architecture cannot take, instead of failing.

    For the teacher (``model_dir`` named TEACHER) writes ``out`` (atomically) holding only
    UNSUPPORTED_FILE ({step, model_type, reason}), prints one warning line on stderr naming the
    stage, the step, the model_type and the reason, and returns the metrics
    ``{"supported": False}``; the student side (which never needs the teacher's device files)
    then still runs. Any other model re-raises ``error``: the student must export."""
    if model_dir.name != TEACHER:
        raise error
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / UNSUPPORTED_FILE, {"step": error.step, "model_type": error.model_type,
                                            "reason": error.reason})
    print(f"warning: {stage_name}@{TEACHER}: {error.step} does not support model_type "
          f"{error.model_type!r} ({error.reason}); skipped and recorded in "
          f"{out / UNSUPPORTED_FILE}, the student side still runs",
          file=sys.stderr, flush=True)
    return {"supported": False}


def teacher_step_supported(out: Path) -> bool:
    """False when an export@/convert@ output folder ``out`` holds UNSUPPORTED_FILE (the
    teacher's architecture could not take that step), True otherwise."""
    return not (out / UNSUPPORTED_FILE).is_file()


# A large negative number rather than -inf or float32's minimum: it survives the cast to fp16
# (max 65504) in Core ML's fp16 programs, and exp(-10000) is exactly 0 in both precisions.
MASKED = -10_000.0

# Families whose attention builds its own mask from the 0/1 padding mask (DeBERTa-v2/v3 adds
# it to relative-position scores itself); every other family takes the additive 4D mask.
OWN_MASK = ("deberta-v2", "deberta")


class DeviceClassifier(torch.nn.Module):
    """A classifier for export: (input_ids, attention_mask) [batch, seq] -> logits [batch, labels].

    transformers' own mask helpers use ops the Core ML converter does not support (``new_ones``
    in BERT's masking code), so the additive attention mask [batch, 1, 1, seq] is built here
    and handed to the model, which then uses it as it is; families in OWN_MASK get the 0/1
    mask. Eager attention: plain matmul + softmax ops in the exported graph. No token_type_ids
    are fed. ``probabilities=True`` appends a softmax (Core ML classifiers report
    probabilities). Parity with the model's own forward pass is tested per family.
    """

    def __init__(self, model, probabilities: bool = False) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        model.set_attn_implementation("eager")
        self.model = model
        self.own_mask = model.config.model_type in OWN_MASK
        self.probabilities = probabilities
        self.eval()  # nothing here trains; exporters warn about modules in training mode

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.own_mask:
            mask = attention_mask.long()  # [batch, seq]
        else:
            keep = attention_mask[:, None, None, :].to(torch.float32)  # [batch, 1, 1, seq]
            mask = (1.0 - keep) * MASKED
        logits = self.model(input_ids=input_ids.long(), attention_mask=mask).logits
        return torch.softmax(logits, dim=-1) if self.probabilities else logits
