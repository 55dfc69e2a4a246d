"""The `pocketbert` console command.

    pocketbert predict "Please note that the lift is out of order."
    pocketbert predict --file sentences.txt --json
    cat sentences.txt | pocketbert predict --model models/export/teacher/model.onnx
    pocketbert serve models/teacher --port 8000

`predict` runs an exported ONNX model (the export stage's output) the way the device app does:
the model's own WordPiece tokenizer, onnxruntime, and every label's probability. It starts fast
because it never imports torch or transformers: only tokenizers, onnxruntime and numpy.
`serve` answers HTTP requests from a PyTorch classifier folder (pocketbert.apps.serving).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pocketbert import __version__
from pocketbert.apps import cascade
from pocketbert.core import contract
from pocketbert.core.errors import PocketbertError, reported

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_LENGTH = 128
"tokenize.max_length's default; used when ./params.yaml is absent or does not set it"
BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
"errors of binding a listening socket that the user fixes with another --host or --port"
TEXT_WIDTH = 48
"characters of each text shown in the table (--json shows the whole text)"


class CliError(PocketbertError):
    """Bad input the user can fix: printed as one 'error:' line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


# --- input -------------------------------------------------------------------------------------


def non_blank(lines: Sequence[str], source: str, unit: str = "line") -> list[str]:
    """Lines without their line ending; blank lines dropped.

    Raises CliError naming ``source`` and the 1-based ``unit`` number ("line" of a file,
    "argument" of the command line) when a line is not UTF-8 (an argument Python decoded with
    surrogateescape), or when a line that is not blank holds no character the tokenizer keeps
    (zero-width or control characters only: dataset.blank_reason), since it would be
    classified from [CLS] [SEP] alone."""
    from pocketbert.data import dataset
    from pocketbert.runtime import onnx_runner

    texts = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        problem = onnx_runner.undecodable(line)
        if problem is not None:
            fail(f"{source} {unit} {number}: not UTF-8 text ({problem}); pass UTF-8 text "
                 "(check the terminal's encoding: LANG, LC_ALL)")
        if not line.strip():
            continue
        reason = dataset.blank_reason(line)
        if reason is not None:
            fail(f"{source} {unit} {number}: the text is empty after normalisation: it holds "
                 f"{reason}; write a sentence or delete the {unit}")
        texts.append(line)
    return texts


def read_text_file(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: a BOM from Windows editors is no text
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except IsADirectoryError:
        fail(f"{path}: is a directory, not a text file (one text per line)")
    except PermissionError:
        fail(f"{path}: permission denied")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8")
    except OSError as exc:
        fail(f"{path}: cannot read it ({exc.strerror or exc})")


def read_stdin() -> str:
    if sys.stdin is None:
        fail("no texts given and no standard input to read them from")
    if sys.stdin.isatty():
        print("reading texts from standard input, one per line; end with Ctrl-D",
              file=sys.stderr, flush=True)
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a replaced sys.stdin (StringIO) has decoded text already
        return sys.stdin.read()
    try:
        return buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"standard input: not UTF-8 text (byte {exc.start}: {exc.reason})")


def gather_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments, from --file, or from standard input (no texts, or '-')."""
    if args.texts and args.file is not None:
        fail("give texts as arguments or with --file, not both")
    if args.file is not None:
        source = "standard input" if args.file == "-" else str(args.file)
        raw = read_stdin() if args.file == "-" else read_text_file(Path(args.file))
        texts = non_blank(raw.split("\n"), source)
    elif not args.texts or args.texts == ["-"]:
        source = "standard input"
        texts = non_blank(read_stdin().split("\n"), source)
    else:
        source = "the arguments"
        texts = non_blank(args.texts, "the command line", "argument")
    if not texts:
        fail(f"no texts to classify: {source} held none (blank lines are skipped)")
    return texts


def default_max_length(params_file: Path = Path("params.yaml")) -> int:
    """tokenize.max_length from ./params.yaml, the length the model was trained and tested at."""
    if not params_file.is_file():
        return DEFAULT_MAX_LENGTH
    from pocketbert.core import params

    try:
        return int(params.load_key(params_file, "tokenize.max_length"))
    except PocketbertError as exc:
        fail(f"{exc} (or pass --max-length to skip params.yaml)")


# --- output ------------------------------------------------------------------------------------


def results(texts: list[str], labels: list[str], probs: np.ndarray,
            truncated: Sequence[bool]) -> list[dict[str, Any]]:
    """One row per text: its label, confidence, every label's probability, and whether the
    text was cut to max_length tokens before the model saw it."""
    out = []
    for text, p, cut in zip(texts, probs, truncated, strict=True):
        best = int(p.argmax())
        out.append({"text": text, "label": labels[best], "confidence": float(p[best]),
                    "probabilities": {name: float(v) for name, v in zip(labels, p, strict=True)},
                    "truncated": bool(cut)})
    return out


def truncation_note(truncated: Sequence[bool], max_length: int) -> str | None:
    """The stderr line saying how many texts were cut to ``max_length`` tokens; None if none."""
    cut = sum(truncated)
    if not cut:
        return None
    return (f"note: {cut} of {len(truncated)} text{'s' if len(truncated) > 1 else ''} "
            f"{'was' if cut == 1 else 'were'} longer than {max_length} tokens and "
            f"{'was' if cut == 1 else 'were'} cut to {max_length} (the model sees only the "
            "start; --max-length sets the limit)")


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    text = " ".join(text.split())  # tabs and newlines would break the columns
    return text if len(text) <= width else text[: width - 1] + "…"


def shown_probabilities(row: dict[str, Any]) -> dict[str, float]:
    """The table's probabilities: the student's calibrated ones where deferral settings apply
    (what its decision is made on), the teacher's where --fallback answered, else the
    model's. (--json gives both the model's and the calibrated ones.)"""
    if "calibrated_probabilities" in row and row["answered_by"] != cascade.TEACHER:
        return row["calibrated_probabilities"]
    return row["probabilities"]


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """Rows as aligned columns: text, label, confidence, every label's probability (the
    calibrated ones where deferral settings apply: shown_probabilities) and, when deferral
    settings were applied, who answered (``answered_by``)."""
    deferral = bool(rows) and "answered_by" in rows[0]
    header = ["text", "label", "confidence", *labels, *(["answered by"] if deferral else [])]
    shown = [shown_probabilities(r) for r in rows]
    body = [[shorten(r["text"]), r["label"], f"{max(p.values()):.4f}",
             *(f"{p[name]:.4f}" for name in labels),
             *([r["answered_by"]] if deferral else [])]
            for r, p in zip(rows, shown, strict=True)]
    widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        # text, label and who answers left-aligned, numbers right-aligned
        return "  ".join(cell.ljust(w) if c < 2 or c == 3 + len(labels) else cell.rjust(w)
                         for c, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join(line(cells) for cells in [header, *body])


# --- commands ----------------------------------------------------------------------------------


def max_length_arg(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 3:
        raise argparse.ArgumentTypeError(
            f"{number} is too small: [CLS] and [SEP] take two tokens, use at least 3")
    return number


def threshold_arg(value: str) -> float:
    """`pocketbert predict --threshold`: a finite number."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{value} is not a threshold: use a finite number")
    return number


def budget_arg(value: str) -> float:
    """`pocketbert choose` budgets: a finite number >= 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a budget: use a finite number >= 0")
    return number


def agreement_arg(value: str) -> float:
    """`pocketbert choose --min-agreement`: a share, 0 to 1."""
    number = budget_arg(value)
    if number > 1:
        raise argparse.ArgumentTypeError(f"{value}: agreement is a share, 0 to 1 (e.g. 0.97)")
    return number


def port_arg(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a TCP port: use 0 to 65535")
    return number


def timeout_arg(value: str) -> float:
    """`pocketbert serve --timeout`: seconds, a finite number > 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a timeout: use seconds above 0")
    return number


def serve_command(args: argparse.Namespace) -> int:
    """`pocketbert serve`: serving.serve until Ctrl-C or SIGTERM (exit status 0); a port
    that cannot be bound is one error line (exit status 2)."""
    from pocketbert.apps import serving
    from pocketbert.runtime import onnx_runner

    model = Path(args.model_dir)
    max_length = args.max_length or (onnx_runner.model_max_length(model)
                                     if serving.is_onnx(model) else default_max_length())
    try:
        serving.serve(model, args.host, args.port, max_length,
                      serving.TIMEOUT_S if args.timeout is None else args.timeout,
                      calibration=args.calibration, threshold=args.threshold,
                      fallback=args.fallback)
    except OSError as exc:  # the model loads first: an OSError here is from binding the port
        if not isinstance(exc, socket.gaierror) and exc.errno not in BIND_ERRORS:
            raise
        fail(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another "
             "--port, or stop the program that holds it")
    return 0


def add_routes(rows: list[dict[str, Any]], routed, labels: list[str]) -> None:
    """Put the cascade's decisions (cascade.Routed) into predict's rows: calibrated
    probabilities, ``deferred``, ``answered_by``, and the teacher's label, confidence and
    probabilities where it answered."""
    for i, row in enumerate(rows):
        row["calibrated_probabilities"] = dict(zip(labels, routed.calibrated[i].tolist(),
                                                   strict=True))
        row["deferred"], row["answered_by"] = routed.deferred[i], routed.answered_by[i]
        if row["answered_by"] == cascade.TEACHER:
            p = routed.probabilities[i]
            best = int(p.argmax())
            row.update({"label": labels[best], "confidence": float(p[best]),
                        "probabilities": dict(zip(labels, map(float, p), strict=True))})


def predict(args: argparse.Namespace) -> int:
    """`pocketbert predict`: the table (or JSON) of labels and probabilities on stdout; notes
    on stderr when texts were truncated or deferred."""
    from pocketbert.core import evaluation
    from pocketbert.runtime import onnx_runner

    texts = gather_texts(args)
    model = Path(args.model) if args.model is not None else onnx_runner.default_model()
    max_length = args.max_length or onnx_runner.model_max_length(model)
    classifier = onnx_runner.load_classifier(model, max_length)
    settings = cascade.settings_for(model, args.calibration,
                                    classifier.session.get_modelmeta().custom_metadata_map)
    if settings is None and (args.threshold is not None or args.fallback is not None):
        fail(f"{'--threshold' if args.threshold is not None else '--fallback'} needs deferral "
             f"settings: none found for {model} (run `dvc repro calibrate`, or pass "
             "--calibration PATH)")
    ids, truncated = classifier.encode(texts)
    probs = evaluation.softmax(classifier.run(ids))  # [n, labels]
    rows = results(texts, classifier.labels, probs, truncated)
    notes = [truncation_note(truncated, max_length)]
    if settings is not None:
        if args.threshold is not None:
            cascade.set_threshold(settings, args.threshold, len(classifier.labels))
        fallback = (None if args.fallback is None
                    else cascade.teacher_params(model, args.fallback))  # (params, source)
        routed = cascade.Cascade(settings, classifier.labels, fallback).route(texts, probs)
        deferred = sum(routed.deferred)
        notes.append(f"note: {deferred or 'no'} of {len(rows)} text(s) deferred (not sure: "
                     f"would ask the server; {cascade.rule_note(settings)}; "
                     f"{settings['path']})")
        if routed.note is not None:
            notes.append(f"{'warning' if routed.failed else 'note'}: {routed.note}")
        add_routes(rows, routed, classifier.labels)
    for note in notes:
        if note is not None:
            print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print(table(rows, classifier.labels))
    return 0


PREDICT_EPILOG = """\
input:
  Texts come from the arguments, from --file (one text per line), or from standard input when
  neither is given (or when the only argument is '-'). Blank lines are skipped; a line of
  only zero-width or control characters (empty to the tokenizer) is an error, and so is a
  text that is not UTF-8.

model and length:
  Without --model, predict runs models/export/student/model.int8.onnx of the current folder
  when it has one, else that of the checkout pocketbert is installed from (an editable
  install: `make setup`), so it works from any folder; the error names both folders when
  neither holds it. --model PATH picks another model.
  Without --max-length, texts are cut at the length the model was trained and exported at:
  the one its export folder records (max_length.json), else tokenize.max_length of the
  params.yaml in the model's own checkout (the nearest folder above the model that holds
  dvc.yaml); 128 for a model with neither. The current folder's params.yaml is not read.
  A note on standard error says how many texts were cut, and --json marks each one
  ("truncated": true).

deferral:
  With deferral settings (the calibrate stage's models/calibration/calibration.json, read for
  the checkout's own int8 student, or --calibration PATH), each text is answered on the device
  only when its calibrated confidence reaches the threshold the stage chose; the others
  are marked deferred ("not sure: would ask the server"). --threshold X sets another
  threshold. --fallback URL sends the deferred texts to a teacher endpoint and shows its
  answers instead; when the endpoint fails, they keep the student's answer, marked so, and a
  warning says how many.

examples:
  pocketbert predict "If the boiler starts to rattle, switch it off at once."
  pocketbert predict --file sentences.txt --json > predictions.json
  printf 'first text\\nsecond text\\n' | pocketbert predict
  pocketbert predict --model models/export/teacher/model.onnx "Please note: closed Friday."
  pocketbert predict --fallback http://127.0.0.1:8000/ --file sentences.txt

The model folder must hold what the export stage writes beside the .onnx file: tokenizer.json,
tokenizer_config.json and labels.json. Build it with `dvc repro export@student` (or @teacher).
"""


def build_parser() -> argparse.ArgumentParser:
    from pocketbert.benchmarks import frontier

    parser = argparse.ArgumentParser(
        prog="pocketbert",
        description="pocketbert: a BERT text classifier distilled into a small on-device "
                    "student. The training pipeline runs with `dvc repro`; this command uses "
                    "its outputs.",
        epilog="Run `pocketbert COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    p = commands.add_parser(
        "predict", help="classify texts with an exported ONNX model",
        description="Classify texts with an exported ONNX model and show each text's label,\n"
                    "its confidence and every label's probability.",
        epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", metavar="TEXT",
                   help="texts to classify (quote each one); '-' or none: read standard input")
    p.add_argument("-f", "--file", metavar="PATH",
                   help="read texts from a UTF-8 file, one per line ('-': standard input)")
    p.add_argument("-m", "--model", metavar="PATH",
                   help="the .onnx model; its folder holds tokenizer.json and labels.json "
                        "(default: models/export/student/model.int8.onnx, the int8 student, "
                        "of the current folder, else of pocketbert's checkout: see below; "
                        "model.onnx beside it is fp32; a folder means its model.int8.onnx)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {text, label, confidence, probabilities, "
                        "truncated} (with deferral settings also calibrated_probabilities, "
                        "deferred, answered_by) instead of a table")
    p.add_argument("--max-length", type=max_length_arg, metavar="N",
                   help="tokens per text after truncation, [CLS] and [SEP] included (default: "
                        "the export folder's max_length.json, else tokenize.max_length from the "
                        f"params.yaml of the model's checkout, else {DEFAULT_MAX_LENGTH}; never "
                        "./params.yaml)")
    p.add_argument("--calibration", metavar="PATH",
                   help="deferral settings (the calibrate stage's calibration.json; default: "
                        "those the model carries in its metadata, as the web stage ships it, "
                        f"else {cascade.CALIBRATION} of the model's checkout, for its int8 "
                        "student only)")
    p.add_argument("--threshold", type=threshold_arg, metavar="X",
                   help="answer on the device only when the calibrated confidence is at least X, "
                        "on the scale of the calibration's score: top probability [1/labels, 1], "
                        "top-two margin [0, 1], negative entropy [-ln(labels), 0] (default: the "
                        "calibration's, chosen by the calibrate stage)")
    p.add_argument("--fallback", metavar="URL",
                   help="send the deferred texts to this teacher endpoint (e.g. `pocketbert "
                        "serve`) and answer them with its labels; the API client's settings "
                        "come from the teacher section of the model's checkout's params.yaml")

    v = commands.add_parser(
        "serve", help="answer classifier requests over HTTP from a model folder",
        description="Serve a sequence classifier folder (config.json, weights, tokenizer; e.g. "
                    "models/teacher) or an exported ONNX model (e.g. models/export/student) "
                    "over HTTP: POST {\"texts\": [...]} is answered with labels, logits and "
                    "probabilities (the endpoint teacher.mode: api reads). With deferral "
                    "settings, each text also gets deferred and answered_by, and --fallback "
                    "URL sends the unsure ones to the teacher's endpoint. One access-log line "
                    "per request on stderr. Ctrl-C or SIGTERM stops it.",
        epilog="example, the student in front of the teacher:\n"
               "  pocketbert serve models/teacher --port 8001\n"
               "  pocketbert serve models/export/student --fallback http://127.0.0.1:8001/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("model_dir", metavar="MODEL_DIR",
                   help="the classifier folder, or .onnx model (or export folder), to serve")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    v.add_argument("--port", type=port_arg, default=8000,
                   help="TCP port (default: %(default)s; 0 picks a free one, printed at start)")
    v.add_argument("--max-length", type=max_length_arg, metavar="N",
                   help="tokens per text after truncation, [CLS] and [SEP] included (default: "
                        "for an ONNX model as for predict: its folder's max_length.json, else "
                        "the params.yaml of its checkout; "
                        f"else tokenize.max_length from ./params.yaml, else {DEFAULT_MAX_LENGTH})")
    v.add_argument("--timeout", type=timeout_arg, metavar="SECONDS",
                   help="cut off a client silent this long: before its request head is "
                        "complete, between body chunks, or idle between requests (default: 30, "
                        "pocketbert.apps.serving.TIMEOUT_S)")
    v.add_argument("--calibration", metavar="PATH",
                   help="deferral settings (default: as for predict, the checkout's "
                        f"{cascade.CALIBRATION} when MODEL_DIR is its int8 student)")
    v.add_argument("--threshold", type=threshold_arg, metavar="X",
                   help="answer here only when the calibrated confidence is at least X (the "
                        "score's scale: see `pocketbert predict --help`)")
    v.add_argument("--fallback", metavar="URL",
                   help="send the deferred texts to this teacher endpoint and answer them with "
                        "its probabilities; the API client's settings come from the teacher "
                        "section of the model's checkout's params.yaml")

    r = commands.add_parser(
        "report", help="metrics and params diff between two git revisions (markdown)",
        description="Print `dvc metrics diff --md` and `dvc params diff --md` between two git "
                    "revisions, as a pull request comment shows them.")
    r.add_argument("a_rev", metavar="A", help="base revision (e.g. main)")
    r.add_argument("b_rev", metavar="B", nargs="?",
                   help="revision to compare (default: the workspace)")

    t = commands.add_parser(
        "results", help="rewrite the generated tables (README results and public sets, docs "
                        "params, recipe and latency candidates)",
        description="Regenerate README.md's results table from metrics/benchmark.json, its "
                    "public-sets table from the run files in metrics/runs/public and its "
                    "deferral table from metrics/calibrate.json, docs/experiments.md's recipe "
                    "candidates table from the run files in metrics/runs/variants and its "
                    "latency candidates table from metrics/latency.json "
                    "and docs/reference.md's params table from params.yaml and the field docs "
                    "in pocketbert.core.params (never typed by hand); the docs files are found "
                    "beside --readme.")
    t.add_argument("--metrics", default="metrics/benchmark.json", metavar="PATH")
    t.add_argument("--latency", default="metrics/latency.json", metavar="PATH",
                   help="the latency stage's metrics (its table is left alone when absent)")
    t.add_argument("--calibrate", default="metrics/calibrate.json", metavar="PATH",
                   help="the calibrate stage's metrics (README's deferral table; left alone "
                        "when absent)")
    t.add_argument("--readme", default="README.md", metavar="PATH")
    t.add_argument("--params", default="params.yaml", metavar="PATH",
                   help="the params file whose values the params table shows")
    t.add_argument("--public-runs", default="metrics/runs/public", metavar="FOLDER",
                   help="recipe-check result files of the public sets (README's public-sets "
                        "table; left alone when the folder is absent)")
    t.add_argument("--variant-runs", default="metrics/runs/variants", metavar="FOLDER",
                   help="recipe-check result files of the derived variants (docs/experiments.md's "
                        "candidates table; left alone when the folder is absent)")
    t.add_argument("--check", action="store_true",
                   help="exit 1 if a generated table is stale, change nothing")

    c = commands.add_parser(
        "choose", help="name the measured model a size, latency and agreement budget allows",
        description="Name the model to ship for a budget, among the variants the benchmark "
                    "stage measured on the test split (metrics/benchmark.json): at most "
                    "--max-mb MB, at most --max-ms ms p50 (batch 1; Core ML is not timed here, "
                    "so it never passes a latency budget), at least --min-agreement with the "
                    "teacher; the highest agreement wins, then the smallest, then the fastest. "
                    "Prints it, where the pipeline writes it and how to build it, then the "
                    "frontier (the points no other beats on both size and agreement). Exit "
                    "status 1 when nothing fits.",
        epilog="example: pocketbert choose --max-mb 5 --min-agreement 0.97")
    c.add_argument("--max-mb", type=budget_arg, metavar="MB",
                   help="largest size on disk (10^6 bytes)")
    c.add_argument("--max-ms", type=budget_arg, metavar="MS",
                   help="largest p50 latency, batch 1, in milliseconds, as the benchmark "
                        "measured it (on the machine of that run)")
    c.add_argument("--min-agreement", type=agreement_arg, metavar="A",
                   help="least top-1 agreement with the teacher on the test split, 0..1")
    c.add_argument("--runtime", choices=sorted(frontier.RUNTIMES), metavar="RUNTIME",
                   help="only models that run in it: "
                        f"{', '.join(sorted(frontier.RUNTIMES))} (default: any)")
    c.add_argument("--metrics", metavar="PATH",
                   help="the benchmark's metrics (default: metrics/benchmark.json of the "
                        "current folder, else of the checkout pocketbert is installed from)")
    return parser


def report_command(args: argparse.Namespace) -> int:
    from pocketbert.apps import results

    try:
        print(results.diff_markdown(args.a_rev, args.b_rev))
    except (RuntimeError, FileNotFoundError) as exc:
        raise CliError(f"{exc}; run inside the repository with dvc installed") from None
    return 0


def results_command(args: argparse.Namespace) -> int:
    from pocketbert.apps import results

    metrics_file = Path(args.metrics)
    if not metrics_file.is_file():
        raise CliError(f"{metrics_file} not found; run `dvc repro benchmark` first")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    latency_file = Path(args.latency)
    latency = (json.loads(latency_file.read_text(encoding="utf-8"))
               if latency_file.is_file() else None)
    public = (results.read_runs(args.public_runs) if Path(args.public_runs).is_dir()
              else None)
    candidates = (results.read_runs(args.variant_runs) if Path(args.variant_runs).is_dir()
                  else None)
    calibrate_file = Path(args.calibrate)
    deferral = (json.loads(calibrate_file.read_text(encoding="utf-8"))
                if calibrate_file.is_file() else None)
    readme = Path(args.readme)
    try:
        if args.check:
            stale = results.stale_files(readme, metrics, args.params, latency, public,
                                        deferral, candidates)
            for path in stale:
                print(f"{path}: generated tables are stale; run `pocketbert results`")
            if not stale:
                print(f"{readme} and its docs: generated tables are up to date")
            return 1 if stale else 0
        changed = results.update_readme(readme, metrics, args.params, latency, public,
                                        deferral, candidates)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{readme}: generated tables {'updated' if changed else 'already up to date'}")
    return 0


BENCHMARK_METRICS = Path("metrics/benchmark.json")
"the benchmark stage's metrics, relative to a checkout (dvc.yaml's metrics)"


def _point_line(p, test_rows: Any) -> str:
    interval = (f" ({p.agreement_low:.3f}–{p.agreement_high:.3f})"
                if p.agreement_low is not None and p.agreement_high is not None else "")
    latency = (f"p50 {p.p50_ms:.2f} ms" if p.p50_ms is not None
               else f"p50 {contract.NOT_MEASURED_NOTE} ({p.runtime})")
    return (f"{p.variant}: {p.size_mb:.2f} MB, agrees with the teacher on {p.agreement:.3f}"
            f"{interval} of {test_rows} test texts, macro-F1 {p.macro_f1:.3f}, {latency}")


def choose_command(args: argparse.Namespace) -> int:
    """`pocketbert choose`: the point frontier.choose picks on stdout, with where it is and
    how to build it, and the size frontier; exit status 1 when no point fits the budget."""
    from pocketbert.benchmarks import frontier
    from pocketbert.runtime import onnx_runner

    metrics_file = Path(args.metrics or BENCHMARK_METRICS)
    if args.metrics is None and not metrics_file.is_file() and onnx_runner.CHECKOUT:
        metrics_file = onnx_runner.CHECKOUT / BENCHMARK_METRICS
    if not metrics_file.is_file():
        fail(f"{metrics_file} not found; run `dvc repro benchmark` first, or pass --metrics")
    benchmark = json.loads(metrics_file.read_text(encoding="utf-8"))
    candidates = [p for p in frontier.points(benchmark)
                  if args.runtime is None or p.runtime == frontier.RUNTIMES[args.runtime]]
    rows = benchmark.get("test_rows", "the")
    best = frontier.choose(candidates, max_mb=args.max_mb, max_ms=args.max_ms,
                           min_agreement=args.min_agreement)
    if best is not None:
        print(_point_line(best, rows))
        print(f"  where: {best.artifact} ({best.runtime})")
        print(f"  build: {frontier.how_to_build(best)}")
    else:
        asked = ", ".join(f"--{name.replace('_', '-')} {value:g}" for name, value in
                          (("max_mb", args.max_mb), ("max_ms", args.max_ms),
                           ("min_agreement", args.min_agreement)) if value is not None)
        if args.runtime is not None:
            asked += f"{', ' if asked else ''}--runtime {args.runtime}"
        print(f"no measured model fits {asked or 'the budget'}", file=sys.stderr)
    print(f"\nthe size frontier{'' if args.runtime is None else ' in ' + args.runtime} "
          f"({metrics_file}):")
    for point in frontier.front(candidates, "size_mb"):
        print(f"  {_point_line(point, rows)}")
    return 0 if best is not None else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "predict": predict,
    "serve": serve_command,
    "report": report_command,
    "results": results_command,
    "choose": choose_command,
}
"""Every `pocketbert` verb and the function that runs it (build_parser gives each its options;
a test checks that the two name the same verbs)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pocketbert` command; bad input exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    try:
        with reported():  # CliError, and the runtime's errors
            return COMMANDS[args.command](args)
    except BrokenPipeError:  # `pocketbert predict ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    sys.exit(main())
