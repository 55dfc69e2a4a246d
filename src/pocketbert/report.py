"""Reports from the committed metrics: README's results table and diffs between revisions."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"
NOT_MEASURED = "not measured here"

COLUMNS = (
    ("size_mb", "size MB", "{:.1f}"),
    ("parameters", "params", "{:,}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("agreement_with_teacher", "agrees with teacher", "{:.3f}"),
    ("ece", "ECE", "{:.3f}"),
    ("latency_p50_ms", "p50 ms", "{:.2f}"),
    ("latency_p95_ms", "p95 ms", "{:.2f}"),
    ("throughput", "examples/s", "{:,.0f}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return fmt.format(value)


def variants(metrics: dict[str, Any]) -> list[str]:
    """Variant keys (``teacher.pytorch_fp32``, …) in the order the benchmark wrote them."""
    seen: list[str] = []
    for key in metrics:
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] in ("teacher", "student"):
            name = ".".join(parts[:2])
            if name not in seen:
                seen.append(name)
    return seen


def results_table(metrics: dict[str, Any]) -> str:
    """Markdown table of every variant plus the headline ratios, from metrics/benchmark.json."""
    header = "| variant | " + " | ".join(title for _, title, _ in COLUMNS) + " | note |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant in variants(metrics):
        cells = [_cell(metrics.get(f"{variant}.{key}"), fmt) for key, _, fmt in COLUMNS]
        notes = []
        by = metrics.get(f"{variant}.measured_by")
        if by and by != NOT_MEASURED:
            notes.append(f"accuracy by the {by}")
        elif by == NOT_MEASURED:
            notes.append("size only")
        agree = metrics.get(f"{variant}.top1_agreement_with_pytorch")
        if agree is not None:
            notes.append(f"agrees with PyTorch {agree:.3f}")
        if metrics.get(f"{variant}.flagged"):
            notes.append("**flagged: agreement below benchmark.min_coreml_agreement**")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " | " + "; ".join(notes) + " |")
    h = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith("headline.")}
    if h:
        def met(flag: bool) -> str:
            return "met" if flag else "**not met**"

        lines += [
            "",
            f"`{h['student_variant']}` against `teacher.pytorch_fp32` on "
            f"{metrics.get('test_rows')} test sentences, {metrics.get('threads')} thread(s): "
            f"size ratio {h['size_ratio']:.3f} (1/{1 / h['size_ratio']:.1f}; target "
            f"≤ {h['target_size_ratio']:.4g}: {met(h['size_target_met'])}), macro-F1 ratio "
            f"{h['macro_f1_ratio']:.3f} (target ≥ {h['target_macro_f1_ratio']:.4g}: "
            f"{met(h['macro_f1_target_met'])}), p50 speed-up {h['p50_speedup']:.1f}× (target "
            f"≥ {h['target_speedup']:.4g}×: {met(h['speedup_target_met'])}).",
        ]
    return "\n".join(lines)


PARAMS_START, PARAMS_END = "<!-- params:start -->", "<!-- params:end -->"


def params_table() -> str:
    """Every params.yaml key with its default and one-line meaning, from pocketbert.params."""
    import dataclasses

    from pocketbert import params

    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section, cls in params.SECTIONS.items():
        docs = params.field_docs(cls)
        for f in dataclasses.fields(cls):
            default = params.as_dict(cls())[f.name]
            shown = ", ".join(map(str, default)) if isinstance(default, list) else default
            if f.name == "keep_words":
                shown = f"{len(default)} cue words (if, unless, must, only, …)"
            lines.append(f"| `{section}.{f.name}` | `{shown}` | {docs[f.name]} |")
    return "\n".join(lines)


def _blocks(metrics: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(START, END): results_table(metrics), (PARAMS_START, PARAMS_END): params_table()}


def update_readme(readme: Path, metrics: dict[str, Any]) -> bool:
    """Replace the generated blocks (results, params); True when the file changed."""
    text = new = readme.read_text(encoding="utf-8")
    for (start, end), body in _blocks(metrics).items():
        if start not in new or end not in new:
            raise ValueError(f"{readme}: markers {start} and {end} not found")
        head, rest = new.split(start, 1)
        _, tail = rest.split(end, 1)
        new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def readme_table(readme: Path, start: str = START, end: str = END) -> str:
    """The text currently between two markers."""
    text = readme.read_text(encoding="utf-8")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def readme_is_current(readme: Path, metrics: dict[str, Any]) -> bool:
    return all(readme_table(readme, s, e) == body for (s, e), body in _blocks(metrics).items())


def diff_markdown(a_rev: str, b_rev: str | None = None, cwd: str | Path = ".") -> str:
    """``dvc metrics diff`` and ``dvc params diff`` between two git revisions, as markdown."""
    revs = [a_rev] + ([b_rev] if b_rev else [])
    out = []
    for what in ("metrics", "params"):
        result = subprocess.run(["dvc", what, "diff", "--md", *revs], cwd=cwd,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"dvc {what} diff failed: {result.stderr.strip()}")
        body = result.stdout.strip() or f"No {what} changed."
        span = " → ".join(revs if b_rev else [a_rev, "workspace"])
        out.append(f"### {what.capitalize()} ({span})\n\n{body}\n")
    return "\n".join(out)
