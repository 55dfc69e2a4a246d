"""The `pocketbert` console command.

    pocketbert predict "Please note that the lift is out of order."
    pocketbert predict --file sentences.txt --json
    cat sentences.txt | pocketbert predict --model models/export/teacher/model.onnx

`predict` runs an exported ONNX model (the export stage's output) the way the device app does:
the model's own WordPiece tokenizer, onnxruntime, and every label's probability. It starts fast
because it never imports torch or transformers: only tokenizers, onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pocketbert import __version__

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = Path("models/export/student/model.int8.onnx")
DEFAULT_MAX_LENGTH = 128
"tokenize.max_length's default; used when ./params.yaml is absent or does not set it"
BATCH_SIZE = 32
"texts per onnxruntime call; padding is per batch, so long batches only cost memory"
TEXT_WIDTH = 48
"characters of each text shown in the table (--json shows the whole text)"


class CliError(Exception):
    """Bad input the user can fix: printed as one 'error:' line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


# --- input -------------------------------------------------------------------------------------


def non_blank(lines: Sequence[str]) -> list[str]:
    """Lines without their line ending; blank lines dropped."""
    return [line.rstrip("\r") for line in lines if line.strip()]


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
        texts = non_blank(raw.split("\n"))
    elif not args.texts or args.texts == ["-"]:
        source = "standard input"
        texts = non_blank(read_stdin().split("\n"))
    else:
        source = "the arguments"
        texts = [t for t in args.texts if t.strip()]
    if not texts:
        fail(f"no texts to classify: {source} held none (blank lines are skipped)")
    return texts


def default_max_length(params_file: Path = Path("params.yaml")) -> int:
    """tokenize.max_length from ./params.yaml, the length the model was trained and tested at."""
    if not params_file.is_file():
        return DEFAULT_MAX_LENGTH
    from pocketbert import params
    from pocketbert.errors import PocketbertError

    try:
        return int(params.load_key(params_file, "tokenize.max_length"))
    except PocketbertError as exc:
        fail(f"{exc} (or pass --max-length to skip params.yaml)")


# --- model -------------------------------------------------------------------------------------


def dvc_target(path: Path) -> str | None:
    """The `dvc repro` target that writes a file under models/export/<teacher|student>/."""
    parts = path.absolute().parts
    for part, item in zip(parts, parts[1:], strict=False):
        if part == "export" and item in ("teacher", "student"):
            return f"export@{item}"
    return None


def missing(path: Path, what: str, model: Path) -> NoReturn:
    target = dvc_target(model)
    hint = (f"build it with `dvc repro {target}`" if target
            else "pass --model with an exported model (a folder written by the export stage)")
    if what == "model" and model.name == "model.int8.onnx" and model.with_name(
            "model.onnx").is_file():
        hint = (f"the int8 model was not written (export.int8: false in params.yaml?); use "
                f"--model {model.with_name('model.onnx')} for fp32, or set export.int8: true "
                + (f"and run `dvc repro {target}`" if target else "and export again"))
    fail(f"{path}: {what} not found; {hint}")


@dataclass
class Classifier:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    labels: list[str]
    pad_id: int

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits [n, labels] in input order; length-sorted batches padded per batch."""
        import numpy as np

        encodings = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        for lo in range(0, len(order), BATCH_SIZE):
            idx = order[lo: lo + BATCH_SIZE]
            longest = max(len(encodings[i]) for i in idx)
            ids = np.full((len(idx), longest), self.pad_id, dtype=np.int64)  # [batch, seq]
            mask = np.zeros((len(idx), longest), dtype=np.int64)  # [batch, seq]
            for row, i in enumerate(idx):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1
            arrays = {"input_ids": ids, "attention_mask": mask,
                      "token_type_ids": np.zeros_like(ids)}
            feed = {name: arrays[name].astype(np.int32 if kind == "tensor(int32)" else np.int64)
                    for name, kind in inputs.items()}
            try:
                out[idx] = self.session.run(None, feed)[0]
            except Exception as exc:  # onnxruntime raises its own untyped errors
                fail(f"the model failed on {len(idx)} text(s) of up to {longest} tokens "
                     f"({str(exc).splitlines()[0]}); if max_length exceeds the model's "
                     "position table, pass a smaller --max-length")
        return out


def load_classifier(model: Path, max_length: int) -> Classifier:
    """The ONNX model, and the tokenizer and labels.json from the model file's folder."""
    if model.is_dir():
        model = model / "model.int8.onnx"
    if not model.is_file():
        missing(model, "model", model)
    folder = model.parent
    for name in ("tokenizer.json", "labels.json"):
        if not (folder / name).is_file():
            missing(folder / name, f"{name} (written beside the model by the export stage)",
                    model)

    try:
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))["labels"]
        assert isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        fail(f"{folder / 'labels.json'}: expected {{\"labels\": [name, ...]}}; export again")

    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        fail(f"{folder / 'tokenizer.json'}: cannot load it ({exc})")
    # the saved file may carry the truncation or padding state it was saved with: set ours
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)

    import onnxruntime as ort

    options = ort.SessionOptions()
    # fatal only: load warnings are noise, and run errors come back as exceptions we report
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's load errors share no useful base class
        fail(f"{model}: cannot load the ONNX model ({str(exc).splitlines()[0]})")
    names = {i.name for i in session.get_inputs()}
    unknown = names - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown or "input_ids" not in names:
        fail(f"{model}: unexpected model inputs {sorted(names)}; expected input_ids and "
             "attention_mask (the export stage's model)")
    outputs = session.get_outputs()[0].shape
    if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] != len(labels):
        fail(f"{model}: {outputs[1]} outputs, but {folder / 'labels.json'} names {len(labels)} "
             "labels; the folder mixes two exports, export again")
    return Classifier(session, tokenizer, labels, pad_token_id(folder, tokenizer))


def pad_token_id(folder: Path, tokenizer: Any) -> int:
    """The pad id: tokenizer_config.json's pad_token, else the tokenizer's own, else [PAD]."""
    name: Any = None
    config = folder / "tokenizer_config.json"
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


# --- output ------------------------------------------------------------------------------------


def results(texts: list[str], labels: list[str], probs: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for text, p in zip(texts, probs, strict=True):
        best = int(p.argmax())
        out.append({"text": text, "label": labels[best], "confidence": float(p[best]),
                    "probabilities": {name: float(v) for name, v in zip(labels, p, strict=True)}})
    return out


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    text = " ".join(text.split())  # tabs and newlines would break the columns
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    header = ["text", "label", "confidence", *labels]
    body = [[shorten(r["text"]), r["label"], f"{r['confidence']:.4f}",
             *(f"{r['probabilities'][name]:.4f}" for name in labels)] for r in rows]
    widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        # text and label left-aligned, numbers right-aligned
        return "  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
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


def predict(args: argparse.Namespace) -> int:
    from pocketbert import evaluation  # numpy only

    texts = gather_texts(args)
    max_length = args.max_length or default_max_length()
    classifier = load_classifier(Path(args.model), max_length)
    probs = evaluation.softmax(classifier.logits(texts))  # [n, labels]
    rows = results(texts, classifier.labels, probs)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print(table(rows, classifier.labels))
    return 0


PREDICT_EPILOG = """\
input:
  Texts come from the arguments, from --file (one text per line), or from standard input when
  neither is given (or when the only argument is '-'). Blank lines are skipped.

examples:
  pocketbert predict "If the boiler starts to rattle, switch it off at once."
  pocketbert predict --file sentences.txt --json > predictions.json
  printf 'first text\\nsecond text\\n' | pocketbert predict
  pocketbert predict --model models/export/teacher/model.onnx "Please note: closed Friday."

The model folder must hold what the export stage writes beside the .onnx file: tokenizer.json,
tokenizer_config.json and labels.json. Build it with `dvc repro export@student` (or @teacher).
"""


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("-m", "--model", metavar="PATH", default=str(DEFAULT_MODEL),
                   help="the .onnx model; its folder holds tokenizer.json and labels.json "
                        "(default: %(default)s, the int8 student; model.onnx beside it is fp32; "
                        "a folder means its model.int8.onnx)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {text, label, confidence, probabilities} "
                        "instead of a table")
    p.add_argument("--max-length", type=max_length_arg, metavar="N",
                   help="tokens per text after truncation, [CLS] and [SEP] included (default: "
                        f"tokenize.max_length from ./params.yaml, else {DEFAULT_MAX_LENGTH})")
    p.set_defaults(handler=predict)

    r = commands.add_parser(
        "report", help="metrics and params diff between two git revisions (markdown)",
        description="Print `dvc metrics diff --md` and `dvc params diff --md` between two git "
                    "revisions, as a pull request comment shows them.")
    r.add_argument("a_rev", metavar="A", help="base revision (e.g. main)")
    r.add_argument("b_rev", metavar="B", nargs="?",
                   help="revision to compare (default: the workspace)")
    r.set_defaults(handler=report_command)

    t = commands.add_parser(
        "results", help="rewrite README's generated tables (results, params)",
        description="Regenerate README.md's results table from metrics/benchmark.json and its "
                    "params table from pocketbert.params (never typed by hand).")
    t.add_argument("--metrics", default="metrics/benchmark.json", metavar="PATH")
    t.add_argument("--readme", default="README.md", metavar="PATH")
    t.add_argument("--check", action="store_true",
                   help="exit 1 if README's tables are stale, change nothing")
    t.set_defaults(handler=results_command)
    return parser


def report_command(args: argparse.Namespace) -> int:
    from pocketbert import report

    try:
        print(report.diff_markdown(args.a_rev, args.b_rev))
    except (RuntimeError, FileNotFoundError) as exc:
        raise CliError(f"{exc}; run inside the repository with dvc installed") from None
    return 0


def results_command(args: argparse.Namespace) -> int:
    from pocketbert import report

    metrics_file = Path(args.metrics)
    if not metrics_file.is_file():
        raise CliError(f"{metrics_file} not found; run `dvc repro benchmark` first")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    readme = Path(args.readme)
    try:
        if args.check:
            same = report.readme_is_current(readme, metrics)
            print(f"{readme}: generated tables are {'up to date' if same else 'stale'}")
            return 0 if same else 1
        changed = report.update_readme(readme, metrics)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{readme}: generated tables {'updated' if changed else 'already up to date'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pocketbert` command; bad input exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        raise SystemExit(2)
    try:
        return args.handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # `pocketbert predict ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    sys.exit(main())
