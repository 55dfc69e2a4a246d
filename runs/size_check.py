"""How big will the student be on my data? Its int8 size before any training.

The shipped student's size depends on its shapes, not on its trained weights: the layers
train_student copies, its embedding rows (the vocabulary kept for the written train texts,
capped by train_student.vocab_max_rows, plus at most vocab_clusters shared rows) and the label
head. This check builds the untrained student as the train_student stage does
(``training.student.build``) from the split stage's train texts, exports it as the export stage
does (fp32 ONNX, the transformer fusions with export.fuse, then int8) and weighs the int8 file
and the teacher's fp32 weights, so the size target (benchmark.target_size_ratio) can be checked
in a few minutes instead of after hours of training:

    dvc repro split && python -m runs.size_check [--split data/split] [--out size.json]

The teacher is teacher.model with the split's labels (a packaged name or a local backbone,
given a new label head as the teacher stage would; with teacher.mode given, the folder's own
classifier). With teacher.mode api there are no teacher weights to weigh: the ratio is None.
The shared rows are the k-means groups of the vocabulary's other rows that some token joins
(``data.vocabulary.cluster_rows``): here the backbone's rows are grouped, in the stage the
fine-tuned teacher's, so the counts can differ by a few rows of int8 (hidden size bytes each).
On the election tweets this check gave 7,936 rows and 7.159 MB where the trained run had 7,921
rows and a 7.155 MB int8 file.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pocketbert.core import contract, model_folders, params
from pocketbert.core.artifacts import size_mb, write_json
from pocketbert.core.errors import DataError, reported
from pocketbert.data import dataset, tokenization

SECTIONS = ("teacher", "train_student", "tokenize", "export", "benchmark")


def written_train(split: Path) -> tuple[list[str], tuple[str, ...]]:
    """The train texts and the labels of the split stage's folder ``split`` (train.csv,
    labels.json). Raises DataError naming the missing file and the command that writes it."""
    missing = [name for name in ("train.csv", contract.LABELS_FILE) if not (split / name).is_file()]
    if missing:
        raise DataError(f"{split}: no {', '.join(missing)}; run `dvc repro split` first, or "
                        "pass --split with the split stage's output folder")
    with (split / "train.csv").open(newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts, dataset.read_labels(split / contract.LABELS_FILE)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Print ``what`` to stderr as it starts and its wall time as it ends (each step takes
    seconds to a minute or two on 2 cores)."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    yield
    print(f"{what}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def measure(split: Path, params_file: Path) -> dict:
    """The untrained student's figures for the split folder ``split`` at ``params_file``'s
    params: {'labels', 'train_texts', 'student.embedding_rows', 'student.vocab_size',
    'student_int8_mb', 'teacher_fp32_mb' (None for an API teacher), 'size_ratio' (int8 /
    teacher fp32, None without a teacher size), 'target_size_ratio', 'meets_target'}. Sizes in
    MB of 10^6 bytes (artifacts.size_mb). Raises ParamsError, DataError, ModelError as the
    stages it mirrors."""
    from pocketbert.export import onnx_export
    from pocketbert.runtime import onnx_runner
    from pocketbert.training import modeling, student

    p = {name: params.load(params_file, name) for name in SECTIONS}
    texts, labels = written_train(split)
    teacher, tokenizer = None, None
    if p["teacher"].mode != "api":
        origin = "the params key 'teacher.model'"
        folder = model_folders.resolve(p["teacher"].model, origin)
        teacher = (modeling.load_classifier(folder, labels, origin=origin)
                   if p["teacher"].mode == "given"
                   else modeling.new_classifier(folder, labels, origin))
        tokenizer = tokenization.load_tokenizer(folder)
    with step(f"the student for {len(texts):,} train texts (vocabulary, shared rows)"):
        model, _, figures = student.build(p["train_student"], teacher, tokenizer, labels, texts,
                                          p["tokenize"].max_length)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="pocketbert-size-") as tmp:
        work = Path(tmp)
        teacher_mb = None
        if teacher is not None:
            teacher.save_pretrained(str(work / "teacher"))
            teacher_mb = size_mb(work / "teacher" / contract.WEIGHTS_FILE)
        with step("ONNX export, transformer fusions, int8"):
            onnx_export.export(model, work / "fp32.onnx", p["export"].opset)
            source = work / "fp32.onnx"
            if p["export"].fuse:
                skip = "SkipLayerNormFusion" not in onnx_runner.DISABLED_OPTIMIZERS
                onnx_export.fuse_transformer(source, work / "fused.onnx",
                                             num_heads=model.config.num_attention_heads,
                                             hidden_size=model.config.hidden_size,
                                             skip_layer_norm=skip)
                source = work / "fused.onnx"
            onnx_export.quantize_int8(source, work / "int8.onnx", p["export"].per_channel,
                                      p["export"].reduce_range)
        int8_mb = size_mb(work / "int8.onnx")
    ratio = None if not teacher_mb else int8_mb / teacher_mb
    target = p["benchmark"].target_size_ratio
    return {"labels": len(labels), "train_texts": len(texts),
            "student.embedding_rows": figures["student.embedding_rows"],
            "student.vocab_size": figures["student.vocab_size"],
            "student_int8_mb": int8_mb, "teacher_fp32_mb": teacher_mb, "size_ratio": ratio,
            "target_size_ratio": target,
            "meets_target": None if ratio is None else ratio <= target}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runs.size_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, default=Path("data/split"),
                        help="the split stage's output folder (train.csv, labels.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    with reported():
        result = measure(args.split, args.params)
        ratio = result["size_ratio"]
        share = ("no teacher weights to compare (teacher.mode api)" if ratio is None else
                 f"1/{1 / ratio:.1f} of the teacher's fp32 {result['teacher_fp32_mb']:.2f} MB "
                 f"(target 1/{1 / result['target_size_ratio']:.1f}: "
                 f"{'met' if result['meets_target'] else 'not met'})")
        print(f"student int8 {result['student_int8_mb']:.2f} MB, "
              f"{result['student.embedding_rows']:,} embedding rows, {result['labels']} labels, "
              f"{result['train_texts']:,} train texts: {share}")
        if args.out:
            write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
