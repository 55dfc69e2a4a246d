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

The teacher is made as the teacher stage starts it (teacher.model with a new head for the
split's labels, or with teacher.mode given the folder's own classifier, teacher.label_names and
teacher.trust_remote_code applied) and the length as the tokenize stage chooses it
(tokenize.length_percentile). With teacher.mode api there are no teacher weights to weigh: the
ratio is None. The int8 file is weighed whether or not export.int8 ships one.
The shared rows are the k-means groups of the vocabulary's other rows that some token joins
(``data.vocabulary.cluster_rows``): here the backbone's rows are grouped, in the stage the
fine-tuned teacher's, so a trained student can end a few rows apart, hidden-size (or
embedding_rank) int8 bytes each (election tweets: 7,936 rows and 7.160871 MB here, 15 rows
and 5,760 bytes fewer trained).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pocketbert.core import contract, model_folders, params
from pocketbert.core.artifacts import size_mb, write_json
from pocketbert.core.errors import DataError, ParamsError, reported
from pocketbert.data import dataset, tokenization

SECTIONS = ("teacher", "train_student", "tokenize", "export", "benchmark")


def written_train(split: Path) -> tuple[list[str], tuple[str, ...]]:
    """The written train texts and the labels of the split stage's folder ``split``
    (train.csv, labels.json). Raises DataError naming the missing file, or a train.csv without
    the split stage's columns, and the command that writes them."""
    missing = [name for name in ("train.csv", contract.LABELS_FILE) if not (split / name).is_file()]
    if missing:
        raise DataError(f"{split}: no {', '.join(missing)}; run `dvc repro split` first, or "
                        "pass --split with the split stage's output folder")
    try:
        rows = dataset.read_examples(split / "train.csv")
    except (KeyError, ValueError) as exc:
        raise DataError(f"{split / 'train.csv'}: not a split stage output (columns text, label, "
                        f"line, augmentation; {type(exc).__name__}: {exc}); pass --split with "
                        "the folder `dvc repro split` writes (data/split)") from None
    return [r.text for r in rows], dataset.read_labels(split / contract.LABELS_FILE)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Print ``what`` to stderr as it starts and its wall time as it ends (each step takes
    seconds to a few minutes on 2 cores)."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    yield
    print(f"{what}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def distinct_weights(model, seed: int) -> None:
    """Add seeded noise (standard deviation 1e-3) to every weight of ``model`` in place. The
    ONNX exporter stores equal constant tensors once, and an untrained student has many (a new
    label head's zero bias; a fresh model's zero biases and unit LayerNorm weights); a trained
    student has none, so without this the file weighed here would be smaller than the one the
    export stage writes."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(1e-3 * torch.randn(weight.shape, generator=generator,
                                           dtype=weight.dtype))


def int8_file(model, work: Path, p) -> Path:
    """The int8 ONNX file of ``model`` in folder ``work``, built as the export stage builds it
    (``p``: ExportParams): fp32 export at export.opset, then onnx_export.int8_model (the
    transformer fusions with export.fuse, unfused with one warning where they fail; int8 with
    export.per_channel and export.reduce_range). The stage's check of the fused graph against
    the unfused one on the test split is not repeated: where that check fails the stage ships
    the unfused int8 file (about 15 KB larger on the embedded student: the latency stage's
    `fused` and `dynamic` candidates, metrics/latency.json)."""
    from pocketbert.export import onnx_export

    source = work / "fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, as the stage
        onnx_export.export(model, source, p.opset)
    onnx_export.int8_model(source, work / "int8.onnx", config=model.config, fuse=p.fuse,
                           per_channel=p.per_channel, reduce_range=p.reduce_range)
    return work / "int8.onnx"


def measure(split: Path, params_file: Path) -> dict:
    """The untrained student's figures for the split folder ``split`` at ``params_file``'s
    params: {'labels', 'train_texts', 'max_length', 'student.embedding_rows',
    'student.vocab_size', 'student_int8_mb', 'teacher_fp32_mb' (None for an API teacher),
    'size_ratio' (int8 / teacher fp32, None without a teacher size), 'target_size_ratio',
    'meets_target', 'seconds'}. Sizes in MB of 10^6 bytes (artifacts.size_mb). The teacher and
    the length come as the teacher and tokenize stages make them
    (teachers.teacher.starting_classifier, tokenization.max_length_for). Raises ParamsError,
    DataError, ModelError as the stages it mirrors."""
    from pocketbert.teachers import teacher as teachers
    from pocketbert.training import student

    start = time.monotonic()
    p = {name: params.load(params_file, name) for name in SECTIONS}
    texts, labels = written_train(split)
    tokenizer = tokenization.load_tokenizer(
        model_folders.tokenizer_folder(p["teacher"], p["train_student"].backbone))
    max_length = tokenization.max_length_for(tokenizer, texts, p["tokenize"].max_length,
                                             p["tokenize"].length_percentile)
    teacher = None
    if p["teacher"].mode != "api":
        with step(f"the teacher ({p['teacher'].model}, {len(labels)} labels)"):
            teacher = teachers.starting_classifier(p["teacher"], labels)
    with step(f"the student for {len(texts):,} train texts (vocabulary, shared rows)"):
        model, _, figures = student.build(p["train_student"], teacher,
                                          None if teacher is None else tokenizer, labels, texts,
                                          max_length)
    model.eval()
    distinct_weights(model, p["train_student"].seed)
    with tempfile.TemporaryDirectory(prefix="pocketbert-size-") as tmp:
        work = Path(tmp)
        teacher_mb = None
        if teacher is not None:
            teacher.save_pretrained(str(work / "teacher"))
            teacher_mb = size_mb(work / "teacher" / contract.WEIGHTS_FILE)
        with step("ONNX export, transformer fusions, int8"):
            int8_mb = size_mb(int8_file(model, work, p["export"]))
    ratio = None if not teacher_mb else int8_mb / teacher_mb
    target = p["benchmark"].target_size_ratio
    return {"labels": len(labels), "train_texts": len(texts), "max_length": max_length,
            "student.embedding_rows": figures["student.embedding_rows"],
            "student.vocab_size": figures["student.vocab_size"],
            "student_int8_mb": int8_mb, "teacher_fp32_mb": teacher_mb, "size_ratio": ratio,
            "target_size_ratio": target,
            "meets_target": None if ratio is None else ratio <= target,
            "seconds": round(time.monotonic() - start, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runs.size_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, default=Path("data/split"),
                        help="the split stage's output folder (train.csv, labels.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    # the library's load report ("newly initialized ... consider training") and save bars:
    # an untrained head is what this check builds
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with reported():
        try:
            result = measure(args.split, args.params)
        except ParamsError as exc:  # raised while building: name the file given, as stages do
            raise exc.read_from(args.params) from None
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
