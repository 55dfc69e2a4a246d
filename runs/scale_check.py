"""A BERT-large-sized run: the whole pipeline with a big given teacher, measured per stage.

``python -m runs.scale_check [--workdir DIR]`` (``make bert-large-run``) builds a
BERT-large-shaped classifier (24 layers, hidden 1024, 16 heads, FFN 4096: 335 M parameters,
random weights, seeded; the packaged MiniLM's tokenizer files), takes it as a given teacher
with a pre-trained MiniLM-backbone student, and runs every pipeline stage in a scratch copy of
the repository (a git clone plus the working tree's uncommitted files), one
``dvc repro --single-item <stage>`` at a time. Per stage it records wall time and peak
resident memory, and writes ``scale_check.json`` and ``scale_check.md`` in the work folder.
The machinery, not the accuracy, is under test: the teacher's weights are random.

``--layers/--hidden/--heads/--intermediate`` shrink the teacher for a quick check of the
machinery; ``--set section.key=value`` changes any other key of the scratch params.yaml.
``--teacher NAME`` builds nothing: the pipeline fine-tunes ``NAME`` (a packaged model such as
``all-mpnet-base-v2``, or a model folder) as its teacher, the same real case with real weights
(``make mpnet-run``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pocketbert.core import model_folders, params
from pocketbert.core.artifacts import read_json, write_json
from pocketbert.core.errors import ParamsError, reported
from runs import workspace

# The seed's blog post (/work/shared/seed): its BERT-large converted directly to Core ML.
SEED_COREML_MB = 670.1
MEMORY_LIMIT_GIB = 16.0
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")
REPORT_JSON = "scale_check.json"
REPORT_MD = "scale_check.md"


def build_teacher(folder: Path, labels: Sequence[str], *, layers: int, hidden: int, heads: int,
                  intermediate: int, seed: int) -> int:
    """Write a randomly initialised BertForSequenceClassification to ``folder``.

    Shape: ``layers`` x ``hidden`` with ``heads`` attention heads and an ``intermediate``-wide
    feed-forward layer (BERT-large: 24, 1024, 16, 4096; Devlin et al. 2019, table of model
    sizes), 512 positions, ``id2label`` = ``labels`` in order, the packaged MiniLM's
    uncased WordPiece vocabulary and tokenizer files. Weights are fp32 safetensors, seeded by
    ``seed``. Returns the parameter count. Raises ParamsError when ``hidden`` is not a multiple
    of ``heads``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if hidden % heads:
        raise ParamsError(f"--hidden {hidden} is not a multiple of --heads {heads}; "
                          "pick sizes where it is (BERT-large: 1024 and 16)")
    backbone = model_folders.resolve(params.PACKAGED_BACKBONE)
    vocab = (backbone / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=512, type_vocab_size=2,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(backbone / name, folder / name)
    return sum(p.numel() for p in model.parameters())


def configure(repo: Path, teacher: Path | str, overrides: dict[tuple[str, str], object], *,
              mode: str = "given") -> None:
    """Set the scratch params.yaml: ``teacher`` as the teacher, a pre-trained student.

    teacher.mode ``mode`` (given, or fine_tune), teacher.model ``teacher``, train_student.init
    pretrained on the packaged MiniLM backbone, then ``overrides``. Comments and order are kept
    (ruamel)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    path = repo / "params.yaml"
    doc = yaml.load(path.read_text(encoding="utf-8"))
    settings = {("teacher", "mode"): mode, ("teacher", "model"): str(teacher),
                ("train_student", "init"): "pretrained",
                ("train_student", "backbone"): params.PACKAGED_BACKBONE, **overrides}
    for (section, key), value in settings.items():
        doc[section][key] = value
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)


def stage_order(repo: Path) -> list[str]:
    """Every stage of ``repo``'s dvc.yaml (foreach items expanded), dependencies first."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        # DVC's graph points from a stage to the stages it depends on
        return [stage.name for stage in nx.dfs_postorder_nodes(dvc_repo.index.graph)]


def markdown(report: dict) -> str:
    """The report as a markdown table per stage plus the Core ML size line."""
    shape = report["teacher"]
    teacher = (f"Teacher: {shape['model']}, fine-tuned by the teacher stage." if "model" in shape
               else f"Teacher: {shape['layers']} layers x hidden {shape['hidden']}, "
                    f"{shape['heads']} heads, FFN {shape['intermediate']}, "
                    f"{shape['parameters']:,} parameters (random weights, built in "
                    f"{report['build_s']} s).")
    lines = [teacher, "",
             "| stage | wall time (s) | peak RSS (GiB) | |", "|---|---:|---:|---|"]
    for row in report["stages"]:
        flag = "failed" if row["returncode"] else ("over 16 GiB" if row["over_limit"] else "")
        lines.append(f"| {row['stage']} | {row['wall_s']} | {row['peak_rss_gib']} | {flag} |")
    lines.append(f"| total | {report['total_s']} | {report['peak_rss_gib']} | |")
    fp16 = report.get("teacher_coreml_fp16_mb")
    if fp16 is not None:
        lines += ["", f"Teacher Core ML fp16: {fp16:.1f} MB (the seed's direct BERT-large "
                      f"conversion: {SEED_COREML_MB} MB)."]
    return "\n".join(lines) + "\n"


def run(workdir: Path, *, source: Path, shape: dict[str, int], seed: int,
        overrides: dict[tuple[str, str], object], teacher_model: str | None = None) -> dict:
    """Make the scratch repository, build the teacher (or fine-tune ``teacher_model``), run
    and measure every stage.

    Stops at the first failing stage (its log is in ``workdir/logs``). Returns the report,
    also written to ``workdir/scale_check.json`` and ``.md``; the scratch repository's
    metrics are copied to ``workdir/metrics``."""
    repo = workspace.scratch_repo(source, workdir / "repo")
    start = time.perf_counter()
    if teacher_model:
        configure(repo, teacher_model, overrides, mode="fine_tune")
        teacher_info: dict = {"model": teacher_model}
    else:
        teacher = workdir / "teacher"
        configure(repo, teacher, overrides)
        labels = params.load_key(repo / "params.yaml", "split.labels")
        parameters = build_teacher(teacher, labels, seed=seed, **shape)
        teacher_info = {**shape, "parameters": parameters, "seed": seed}
    build_s = round(time.perf_counter() - start, 1)
    env = workspace.environment(repo)
    rows, stages = [], stage_order(repo)
    for name in stages:
        print(f"scale_check: {name} ...", file=sys.stderr, flush=True)
        command = ["dvc", "repro", "--force", "--single-item", name]
        log = workdir / "logs" / f"{name}.log"
        row = {"stage": name, **workspace.measure(command, cwd=repo, env=env, log=log)}
        row["over_limit"] = row["peak_rss_gib"] > MEMORY_LIMIT_GIB
        rows.append(row)
        print(f"scale_check: {name}: {row['wall_s']} s, {row['peak_rss_gib']} GiB",
              file=sys.stderr, flush=True)
        if row["returncode"]:
            break
    report = {
        "teacher": teacher_info,
        "build_s": build_s,
        "overrides": {f"{s}.{k}": v for (s, k), v in overrides.items()},
        "cpus": os.cpu_count(),
        "memory_limit_gib": MEMORY_LIMIT_GIB,
        "stages": rows,
        "total_s": round(sum(row["wall_s"] for row in rows), 1),
        "peak_rss_gib": max(row["peak_rss_gib"] for row in rows),
        "completed": len(rows) == len(stages) and not rows[-1]["returncode"],
        "seed_coreml_mb": SEED_COREML_MB,
    }
    # the clone holds committed metrics: read this run's only once its convert@teacher passed
    if any(row["stage"] == "convert@teacher" and not row["returncode"] for row in rows):
        metrics = read_json(repo / "metrics" / "convert_teacher.json")
        report["teacher_coreml_fp16_mb"] = metrics.get("fp16.size_mb")
    if report["completed"]:
        shutil.copytree(repo / "metrics", workdir / "metrics", dirs_exist_ok=True)
    write_json(workdir / REPORT_JSON, report)
    (workdir / REPORT_MD).write_text(markdown(report), encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit 0 when every stage finished under 16 GiB, 1 otherwise, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m runs.scale_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="empty or new folder for the teacher, the scratch repository, logs "
                             "and the report (default: a new folder under the temp directory)")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                        help="repository to copy (default: this checkout)")
    parser.add_argument("--layers", type=int, default=24,
                        help="teacher layers (default: 24, BERT-large)")
    parser.add_argument("--hidden", type=int, default=1024,
                        help="teacher hidden size (default: 1024)")
    parser.add_argument("--heads", type=int, default=16,
                        help="teacher attention heads (default: 16)")
    parser.add_argument("--intermediate", type=int, default=4096,
                        help="teacher feed-forward size (default: 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random teacher weights")
    parser.add_argument("--teacher", default=None, metavar="MODEL",
                        help="build nothing; fine-tune MODEL (a packaged name such as "
                             "all-mpnet-base-v2, or a model folder) as the teacher")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="change a scratch params.yaml key")
    args = parser.parse_args(argv)
    with reported():
        overrides = params.parse_overrides(args.overrides)
        if args.teacher:  # before any copying: a missing model is named at once
            model_folders.resolve(args.teacher, origin=(
                f"--teacher {args.teacher!r} (a model folder, or a packaged name: "
                f"{params.PACKAGED_BACKBONE}, {params.PACKAGED_MPNET})"))
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pocketbert-scale-"))
        if workdir.exists() and any(workdir.iterdir()):
            raise ParamsError(f"--workdir {workdir} is not empty; name a new or empty folder")
        workdir.mkdir(parents=True, exist_ok=True)
        shape = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads,
                 "intermediate": args.intermediate}
        report = run(workdir.resolve(), source=args.source.resolve(), shape=shape,
                     seed=args.seed, overrides=overrides, teacher_model=args.teacher)
    print(markdown(report))
    print(f"report: {workdir / REPORT_JSON}, {workdir / REPORT_MD}")
    failed = [row["stage"] for row in report["stages"] if row["returncode"]]
    over = [row["stage"] for row in report["stages"] if row["over_limit"]]
    if failed:
        print(f"failed: {failed[0]} (log: {workdir / 'logs' / failed[0]}.log)", file=sys.stderr)
    if over:
        print(f"over {MEMORY_LIMIT_GIB:g} GiB: {', '.join(over)}", file=sys.stderr)
    return 0 if report["completed"] and not over else 1


if __name__ == "__main__":
    sys.exit(main())
