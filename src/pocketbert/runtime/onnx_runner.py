"""Running an exported ONNX classifier: one session factory, one batched predictor.

Shared by the export stage (parity and int8 checks), the benchmark and ``pocketbert predict``.
Torch-free: only onnxruntime, onnx, tokenizers and numpy, imported inside the functions that
need them, so that ``pocketbert predict`` starts without loading torch.

A dynamically quantized (int8) model runs one text per call, as the device app runs it:
onnxruntime's DynamicQuantizeLinear computes each activation's scale and zero point from the
whole tensor of that call, so a text's logits change with the other texts (and the padding)
in its batch: a reported sentence scored 0.99412 alone and 0.99385 beside 31 long texts, and
on the fine-tuned MiniLM teacher's 212 test texts batches of 32 changed probabilities by up to
0.57 and flipped 2 labels against one text per call. fp32 models are batched: padding is
masked, rows do not interact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core import batching, contract
from pocketbert.core.errors import ModelError

BATCH_SIZE = 32
"texts per call for float models; padding is per batch, so long batches only cost memory"
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul"})
"""ops that quantize activations with scales computed per call (onnxruntime's quantize_dynamic
writes DynamicQuantizeLinear; its graph optimizer fuses it with MatMulInteger into the other)"""


class PredictError(ModelError):
    """A model file cannot be loaded, or fails on the given texts."""


DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""onnxruntime graph optimizers every session here turns off. SkipLayerNormFusion merges each
residual Add with its LayerNormalization into the contrib op SkipLayerNormalization, whose CPU
kernel (onnxruntime 1.32) is slower than the two ops it replaces at batch 1: measured by the
latency stage (docs/experiments.md, student latency candidates) on the int8 student, one
thread."""

OPTIMIZATION_LEVELS = ("basic", "extended", "all")
"onnxruntime's graph optimization levels, by name (GraphOptimizationLevel.ORT_ENABLE_*)"


def session(path: str | Path, *, threads: int = 0, log_severity: int = 3,
            optimization_level: str = "all",
            disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
            memory_arena: bool = True, optimized_model_path: str | Path | None = None) -> Any:
    """An onnxruntime InferenceSession on the CPU.

    ``threads``: intra-op threads (0 = onnxruntime's default, all cores). ``log_severity``: 3
    (errors) keeps load warnings about unused initializers out of the logs; 4 (fatal only) for
    the predict command, which reports run errors itself. ``optimization_level``: one of
    OPTIMIZATION_LEVELS; ``disabled_optimizers``: onnxruntime optimizer names left out;
    ``memory_arena``: onnxruntime's CPU memory arena; ``optimized_model_path``: where to write
    the graph as it runs after the optimizations (to see which ops run). Raises ValueError on
    an unknown level, and onnxruntime's own errors."""
    import onnxruntime as ort

    if optimization_level not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization_level {optimization_level!r}: use one of "
                         f"{', '.join(OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = log_severity
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization_level.upper()}")
    options.enable_cpu_mem_arena = memory_arena
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def texts_per_call(path: str | Path) -> int:
    """Texts per call that give every text the logits it gets alone: 1 for a model with
    dynamic (per-call) activation quantization, else BATCH_SIZE.

    Reads the graph of the .onnx file at ``path`` (not its weights' external data). Raises
    onnx's own errors on a file that is not an ONNX model."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    return 1 if ops & DYNAMIC_QUANT_OPS else BATCH_SIZE


def _cpuinfo_field(cpuinfo: Path, key: str) -> str | None:
    """The value of the first ``key : value`` line of ``cpuinfo``; None where the file is
    absent or unreadable, or has no such line."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's ``model name`` from ``cpuinfo``; None where that file is absent, unreadable
    or has no such line (not Linux, some ARM kernels)."""
    return _cpuinfo_field(cpuinfo, "model name")


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, bool | None]:
    """The x86 features that select onnxruntime's int8 matrix kernels, as metrics:
    ``cpu.avx2``, ``cpu.avx512f``, ``cpu.avx512_vnni``, ``cpu.avx_vnni``, ``cpu.amx_int8`` and
    ``cpu.vnni`` (any of the last three: int8 dot products into int32, no int16 step),
    True/False from the flags of ``cpuinfo``; all None where that file is absent or
    unreadable (not Linux), since unknown is not False.

    Why they matter: onnxruntime's MLAS picks its u8 x s8 kernel by CPU; without VNNI (plain
    AVX2/AVX-512BW) it multiplies with VPMADDUBSW, whose int16 pair sums saturate when 8-bit
    weights meet large activations, so int8 logits can differ from a VNNI CPU's (onnxruntime
    quantization docs, "reduce_range"; onnxruntime issues on int8 BERT accuracy per CPU)."""
    names = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    flags = set((_cpuinfo_field(cpuinfo, "flags") or "").split())
    if not flags:
        return {f"cpu.{name}": None for name in (*names, "vnni")}
    found: dict[str, bool | None] = {f"cpu.{name}": name in flags for name in names}
    found["cpu.vnni"] = any(found[f"cpu.{n}"] for n in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return found


def feed(sess: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The session's inputs from int64 [batch, seq] arrays: each cast to the integer type the
    model declares (int32 or int64); ``token_type_ids``, where a model takes it, is zeros."""
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask,
              "token_type_ids": np.zeros_like(input_ids)}
    return {i.name: arrays[i.name].astype(np.int32 if i.type == "tensor(int32)" else np.int64)
            for i in sess.get_inputs()}


def predict_logits(sess: Any, sequences: Sequence[Sequence[int]], pad_id: int, *,
                   batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Logits [n, labels] float32 in input order, from length-sorted batches padded per batch.

    Raises onnxruntime's own errors (callers that face users wrap them)."""
    out: np.ndarray | None = None
    for idx, ids, mask in batching.length_sorted_batches(sequences, batch_size, pad_id):
        logits = sess.run(None, feed(sess, ids, mask))[0]  # [batch, labels]
        if out is None:
            out = np.zeros((len(sequences), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    if out is None:
        raise ValueError("predict_logits: no sequences")
    return out


@dataclass
class Classifier:
    """An exported model with its tokenizer and labels: texts in, logits out."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer, truncating at max_length, no padding
    labels: list[str]
    pad_id: int
    batch_size: int = BATCH_SIZE
    "texts per call: 1 for dynamic int8 (texts_per_call), so no result depends on its batch"

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text, cut to max_length, and whether each text was cut.

        Raises PredictError naming the first text that is not valid Unicode (a lone surrogate:
        Python's stand-in for an undecodable byte), which the tokenizer cannot take."""
        for number, text in enumerate(texts, start=1):
            problem = undecodable(text)
            if problem is not None:
                raise PredictError(f"text {number} is not UTF-8 text ({problem})")
        encodings = self.tokenizer.encode_batch(list(texts))
        # truncation moves the cut tokens into overflowing encodings (stride 0)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits [n, labels] in input order for token ids from ``encode``.

        Raises PredictError when the model fails."""
        try:
            return predict_logits(self.session, sequences, self.pad_id,
                                  batch_size=self.batch_size)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            longest = max(len(e) for e in sequences)
            raise PredictError(
                f"the model failed on {len(sequences)} text(s) of up to {longest} tokens "
                f"({str(exc).splitlines()[0]}); if max_length exceeds the model's position "
                "table, pass a smaller --max-length") from None

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits [n, labels] in input order. Raises PredictError when the model fails."""
        return self.run(self.encode(texts)[0])


def undecodable(text: str) -> str | None:
    """None for text that encodes to UTF-8, else where it does not: the byte that was not
    UTF-8 where Python decoded it with surrogateescape (command line arguments, file names),
    else the lone surrogate's position."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        first = exc.start
    try:
        text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte {exc.start}: {exc.reason}"
    except UnicodeEncodeError:
        pass
    return f"character {first + 1} is U+{ord(text[first]):04X}, a lone surrogate"


def load_classifier(model: Path, max_length: int, *,
                    disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS) -> Classifier:
    """The ONNX model, and the tokenizer and labels.json from the model file's folder.

    ``model``: an .onnx file, or an export folder (its int8 model). ``disabled_optimizers``:
    passed to ``session`` (the web page's reference keeps every optimizer, as the page does).
    Raises PredictError naming the file and the fix when something is missing or
    malformed."""
    if model.is_dir():
        model = model / contract.ONNX_INT8_FILE
    if not model.is_file():
        _missing(model, "model", model)
    folder = model.parent
    for name in (contract.TOKENIZER_FILES[0], contract.LABELS_FILE):
        if not (folder / name).is_file():
            _missing(folder / name, f"{name} (written beside the model by the export stage)",
                     model)
    labels_file = folder / contract.LABELS_FILE
    try:
        labels = json.loads(labels_file.read_text(encoding="utf-8"))["labels"]
        assert isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise PredictError(f"{labels_file}: expected {{\"labels\": [name, ...]}}; "
                           "export again") from None

    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / contract.TOKENIZER_FILES[0]))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise PredictError(f"{folder / contract.TOKENIZER_FILES[0]}: cannot load it "
                           f"({exc})") from None
    # the saved file may carry the truncation or padding state it was saved with: set ours
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)

    try:
        sess = session(model, log_severity=4, disabled_optimizers=disabled_optimizers)
    except Exception as exc:  # onnxruntime's load errors share no useful base class
        raise PredictError(f"{model}: cannot load the ONNX model "
                           f"({str(exc).splitlines()[0]})") from None
    names = {i.name for i in sess.get_inputs()}
    unknown = names - {*contract.INPUT_NAMES, "token_type_ids"}
    if unknown or contract.INPUT_NAMES[0] not in names:
        raise PredictError(f"{model}: unexpected model inputs {sorted(names)}; expected "
                           f"{' and '.join(contract.INPUT_NAMES)} (the export stage's model)")
    outputs = sess.get_outputs()[0].shape
    if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] != len(labels):
        raise PredictError(f"{model}: {outputs[1]} outputs, but {labels_file} names "
                           f"{len(labels)} labels; the folder mixes two exports, export again")
    return Classifier(sess, tokenizer, labels, pad_token_id(folder, tokenizer),
                      texts_per_call(model))


def pad_token_id(folder: Path, tokenizer: Any) -> int:
    """The pad id: tokenizer_config.json's pad_token, else the tokenizer's own, else [PAD]."""
    name: Any = None
    config = folder / contract.TOKENIZER_FILES[1]
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, dict):  # older transformers save AddedToken as a dict
            name = name.get("content")
    for candidate in (name, "[PAD]"):
        if isinstance(candidate, str) and tokenizer.token_to_id(candidate) is not None:
            return int(tokenizer.token_to_id(candidate))
    # padded positions are masked out, so any id gives the same logits
    return 0


DEFAULT_MODEL = Path("models/export/student") / contract.ONNX_INT8_FILE
"the int8 student, relative to a checkout (a folder holding dvc.yaml)"


def project_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds dvc.yaml (a checkout of this
    project), or None."""
    for folder in [path, *path.parents]:
        if (folder / "dvc.yaml").is_file():
            return folder
    return None


CHECKOUT = project_root(Path(__file__).resolve().parent)
"""The checkout this package runs from (src/pocketbert in an editable install, as `make setup`
installs it), or None where no folder above the package holds dvc.yaml (a wheel install)."""


def default_model(cwd: Path | None = None) -> Path:
    """The model `pocketbert predict` runs without --model, as an absolute path: DEFAULT_MODEL
    under ``cwd`` (default: the current folder) when that folder holds one, else under
    CHECKOUT (the checkout this package is installed from), so that predict finds the
    pipeline's student from any folder.

    A folder that holds only the fp32 model is returned too (load_classifier then says how to
    get the int8 one). Raises PredictError naming every folder looked in when neither has
    the model."""
    checkout = CHECKOUT
    candidates = [(cwd or Path.cwd()).absolute() / DEFAULT_MODEL]
    if checkout is not None and checkout.absolute() / DEFAULT_MODEL != candidates[0]:
        candidates.append(checkout.absolute() / DEFAULT_MODEL)
    for fallback in (False, True):
        for model in candidates:
            if model.is_file() or (fallback and model.with_name(contract.ONNX_FP32_FILE).is_file()):
                return model
    where = " nor ".join(str(m.parent) for m in candidates)
    build = f"`dvc repro export@student` in {checkout.absolute()}" if checkout else (
        "`dvc repro export@student` in a pocketbert checkout")
    raise PredictError(f"no {contract.ONNX_INT8_FILE} in {where}; build it with {build}, "
                       "or pass --model PATH")


def model_max_length(model: Path) -> int:
    """The length ``model`` was trained, tested and exported at: the max_length its export
    folder records (contract.LENGTH_FILE, beside the model), else tokenize.max_length of the
    checkout that holds it (the params.yaml beside the dvc.yaml nearest above the model's
    folder), else TokenizeParams' default (128). The current folder is never read.

    Raises PredictError when the recorded length or that params.yaml is malformed or invalid."""
    from pocketbert.core import params
    from pocketbert.core.errors import PocketbertError

    folder = model.absolute() if model.is_dir() else model.absolute().parent
    recorded = folder / contract.LENGTH_FILE
    if recorded.is_file():
        try:
            value = json.loads(recorded.read_text(encoding="utf-8"))["max_length"]
            if not (isinstance(value, int) and value >= 3):
                raise ValueError(f"{value!r} is not a whole number of at least 3")
            return value
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PredictError(f"{recorded}: expected {{\"max_length\": n}} ({exc}); export "
                               "again, or pass --max-length") from None
    root = project_root(folder)
    params_file = root / "params.yaml" if root is not None else None
    if params_file is None or not params_file.is_file():
        return params.TokenizeParams().max_length
    try:
        return int(params.load_key(params_file, "tokenize.max_length"))
    except PocketbertError as exc:
        raise PredictError(f"{exc} (the params.yaml of the model's checkout; pass "
                           "--max-length to skip it)") from None


def dvc_target(path: Path) -> str | None:
    """The `dvc repro` target that writes a file under models/export/<teacher|student>/."""
    parts = path.absolute().parts
    for part, item in zip(parts, parts[1:], strict=False):
        if part == "export" and item in ("teacher", "student"):
            return f"export@{item}"
    return None


def _missing(path: Path, what: str, model: Path) -> None:
    target = dvc_target(model)
    root = project_root(model.absolute().parent)
    where = f" in {root}" if root is not None else ""
    hint = (f"build it with `dvc repro {target}`{where}, or pass --model PATH for another model"
            if target else
            "pass --model with an exported model (a folder written by the export stage)")
    fp32 = model.with_name(contract.ONNX_FP32_FILE)
    if what == "model" and model.name == contract.ONNX_INT8_FILE and fp32.is_file():
        hint = (f"the int8 model was not written (export.int8: false in params.yaml?); use "
                f"--model {fp32} for fp32, or set export.int8: true "
                + (f"and run `dvc repro {target}`{where}" if target else "and export again"))
    raise PredictError(f"{path.absolute()}: {what} not found; {hint}")
