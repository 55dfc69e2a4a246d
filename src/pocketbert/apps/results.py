"""Reports from the committed metrics: the generated tables of README.md and docs/ (BLOCKS) and
diffs between revisions."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pocketbert.core import contract

START, END = "<!-- results:start -->", "<!-- results:end -->"

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

# benchmark's ``teacher.<step>_supported`` keys: the step, what it does, the rows it gives
UNSUPPORTED_STEPS = (("export", "ONNX export", "ONNX"),
                     ("convert", "Core ML conversion", "Core ML"))


def _cell(metrics: dict[str, Any], variant: str, key: str, fmt: str) -> str:
    """A formatted value, with its confidence interval ``[low, high]`` where the metrics hold
    ``<key>_ci_low`` and ``<key>_ci_high``; null in a measured variant is a number that needs
    other hardware (Core ML latency off macOS); absent is a column that does not apply."""
    full = f"{variant}.{key}"
    if full in metrics and metrics[full] is None:
        return contract.NOT_MEASURED_NOTE
    if metrics.get(full) is None:
        return "–"
    value = metrics[full]
    if isinstance(value, str):
        return value
    low, high = metrics.get(f"{full}_ci_low"), metrics.get(f"{full}_ci_high")
    interval = (f" [{fmt.format(low)}, {fmt.format(high)}]"
                if isinstance(low, int | float) and isinstance(high, int | float) else "")
    return fmt.format(value) + interval


def variants(metrics: dict[str, Any]) -> list[str]:
    """Variant names (``teacher.pytorch_fp32``, …, ``baseline.tfidf_logreg``) in the order
    the benchmark wrote them: every key ``<model>.<variant>.size_mb``."""
    suffix = ".size_mb"
    return [key[: -len(suffix)] for key in metrics if key.endswith(suffix)
            and key.startswith(("teacher.", "student.", "baseline."))]


def results_table(metrics: dict[str, Any]) -> str:
    """Markdown table of every variant plus the headline ratios, from metrics/benchmark.json."""
    header = "| variant | " + " | ".join(title for _, title, _ in COLUMNS) + " | note |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for variant in variants(metrics):
        cells = [_cell(metrics, variant, key, fmt) for key, _, fmt in COLUMNS]
        notes = []
        if f"{variant}.macro_f1" not in metrics:
            notes.append("size only")
        elif by := metrics.get(f"{variant}.measured_by"):
            notes.append(f"accuracy by the {by}")
        agree = metrics.get(f"{variant}.top1_agreement_with_pytorch")
        if agree is not None:
            notes.append(f"agrees with PyTorch {agree:.3f}")
        if metrics.get(f"{variant}.flagged"):
            notes.append("**flagged: agreement below benchmark.min_coreml_agreement**")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " | " + "; ".join(notes) + " |")
    for step, what, kind in UNSUPPORTED_STEPS:
        if metrics.get(f"teacher.{step}_supported") is False:
            lines += ["", f"No teacher {kind} rows: the teacher's architecture does not go "
                      f"through {what} ({step}@teacher recorded why in its unsupported.json); "
                      "the student's rows are unaffected."]
    level = metrics.get("confidence_level")
    if level is not None:
        lines += ["", f"In brackets: {level:.0%} bootstrap interval "
                  f"(`scipy.stats.bootstrap`, percentile method, "
                  f"{metrics.get('bootstrap_resamples'):,} resamples of the test sentences, "
                  "the same resamples for every variant)."]
    h = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith("headline.")}
    if h:
        def met(flag: bool) -> str:
            return "met" if flag else "**not met**"

        # an API teacher (teacher.mode api) has no file size or latency to compare with
        teacher = "teacher.api" if "teacher.api.macro_f1" in metrics else "teacher.pytorch_fp32"
        size = ("size ratio not measured (no teacher weights)" if h["size_ratio"] is None else
                f"size ratio {h['size_ratio']:.3f} (1/{1 / h['size_ratio']:.1f}; target "
                f"≤ {h['target_size_ratio']:.4g}: {met(h['size_target_met'])})")
        speed = ("p50 speed-up not measured (no teacher weights)" if h["p50_speedup"] is None
                 else f"p50 speed-up {h['p50_speedup']:.1f}× (target ≥ "
                 f"{h['target_speedup']:.4g}×: {met(h['speedup_target_met'])})")

        ratio_ci = (f"{level:.0%} interval {h['macro_f1_ratio_ci_low']:.3f}–"
                    f"{h['macro_f1_ratio_ci_high']:.3f}, paired; "
                    if level is not None and h.get("macro_f1_ratio_ci_low") is not None
                    else "")
        lines += [
            "",
            f"`{h['student_variant']}` against `{teacher}` on "
            f"{metrics.get('test_rows')} test sentences, {metrics.get('threads')} thread(s): "
            f"{size}, macro-F1 ratio "
            f"{h['macro_f1_ratio']:.3f} ({ratio_ci}target ≥ {h['target_macro_f1_ratio']:.4g}"
            f": {met(h['macro_f1_target_met'])}), {speed}.{_gain_sentence(h, level)}"
            + (f" Worst label: `{h['worst_class']}`, F1 ratio {h['worst_class_f1_ratio']:.3f}."
               if h.get("worst_class") is not None else ""),
        ]
    return "\n".join(lines)


def _gain_sentence(h: dict[str, Any], level: float | None) -> str:
    """The headline's gain-kept sentence (benchmarking.headline), or '' without a baseline."""
    if "gain_kept" not in h:
        return ""
    gain = h["teacher_gain_over_baseline"]
    if h["gain_kept"] is None:
        return (f" The teacher's macro-F1 is not above `{h['baseline_variant']}` "
                f"({gain:+.3f}): there is no gain over the baseline to keep.")
    interval = (f" ({level:.0%} interval {h['gain_kept_ci_low']:.2f}–"
                f"{h['gain_kept_ci_high']:.2f}, paired)"
                if level is not None and h.get("gain_kept_ci_low") is not None else "")
    return (f" Of the teacher's macro-F1 gain over `{h['baseline_variant']}` ({gain:+.3f}), "
            f"the student keeps {h['gain_kept']:.2f}{interval}.")


PARAMS_START, PARAMS_END = "<!-- params:start -->", "<!-- params:end -->"


def params_table(params_file: str | Path = "params.yaml") -> str:
    """Every params key with its committed value (``params_file``; the dataclass default
    where a key is absent) and its one-line meaning from pocketbert.core.params' field docs.

    Raises ParamsError when ``params_file`` is missing or does not parse."""
    import dataclasses

    from pocketbert.core import params

    raw = params.read_yaml(params_file)
    lines = ["| key | value | meaning |", "|---|---|---|"]
    for section, cls in params.SECTIONS.items():
        docs = params.field_docs(cls)
        values = params.as_dict(params.parse_section(section, raw.get(section)))
        for f in dataclasses.fields(cls):
            value = values[f.name]
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            if f.name == "keep_words" and isinstance(value, list):
                shown = f"{len(value)} cue words ({', '.join(value[:3])}, …)"
            shown = "null" if shown is None else shown  # as params.yaml writes it
            meaning = docs[f.name].replace("|", "\\|")  # a | would split the table's row
            lines.append(f"| `{section}.{f.name}` | `{shown}` | {meaning} |")
    return "\n".join(lines)


LATENCY_START, LATENCY_END = "<!-- latency:start -->", "<!-- latency:end -->"


def latency_table(latency: dict[str, Any]) -> str:
    """Markdown table of the latency stage's candidates (metrics/latency.json), fastest first,
    with the command and machine that measured them."""
    from pocketbert.benchmarks.latency import CANDIDATES

    described = {c.name: c.description for c in CANDIDATES}
    rows = sorted(latency["candidates"].items(), key=lambda item: item[1]["latency_p50_ms"])
    fp32 = latency["candidates"]["fp32"]
    threads = latency["threads"]
    level = latency.get("confidence_level", 0.95)
    lines = [
        f"Measured by the `latency` stage (`dvc repro latency`) on "
        f"{latency.get('cpu.model') or 'an unnamed CPU'} (AVX-512 VNNI: "
        f"{latency.get('cpu.avx512_vnni')}), {threads} thread{'s' if threads != 1 else ''}, "
        f"{latency['rounds']} interleaved rounds over the {latency['test_sentences']} test "
        f"sentences (median {latency['median_tokens']:.0f} tokens), one text per call. fp32 "
        f"test macro-F1 {fp32['macro_f1']:.3f}, {level:.0%} interval "
        f"[{latency['fp32_macro_f1_ci_low']:.3f}, {latency['fp32_macro_f1_ci_high']:.3f}].",
        "",
        "| candidate | what changes | p50 ms | p95 ms | vs dynamic | agrees with fp32 | "
        "macro-F1 | size MB | wins |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        verdict = "probe" if r["probe"] else ("yes" if r["wins"] else "no")
        lines.append(
            f"| `{name}` | {described.get(name, '')} | {r['latency_p50_ms']:.3f} | "
            f"{r['latency_p95_ms']:.3f} | {r['speedup']:.2f}x | {r['agreement_with_fp32']:.3f} | "
            f"{r['macro_f1']:.3f} | {r['size_mb']:.2f} | {verdict} |")
    return "\n".join(lines)


RECIPE_HEADER = ("| set | test rows | teacher macro-F1 | TF-IDF macro-F1 | student int8 macro-F1 "
                 "| student int8 MB (of the teacher's fp32) | ratio (95% CI) | gain kept (95% CI) "
                 "| agreement (95% CI) "
                 "| worst label (F1 ratio) | disagreements (teacher wrong) "
                 "| answered on device (95% CI) | ceiling on test | agreement on the answered "
                 "| cascade agreement | epochs | wall time |\n"
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}".replace("-", "−")  # a minus sign, not a hyphen, by the en dash


def _with_ci(value: float | None, ci: Sequence | None = None, digits: int = 3) -> str:
    """``value`` with its interval, ``digits`` decimals (4 where a target such as 0.995 must
    not be met by rounding); – for None."""
    if value is None:
        return "–"
    if ci is None or None in ci:
        return _number(value, digits)
    return f"{_number(value, digits)} ({_number(ci[0], digits)}–{_number(ci[1], digits)})"


def _ci(r: dict, key: str) -> tuple | None:
    """The (low, high) interval stored beside ``key`` as ``key_ci_low`` / ``key_ci_high``."""
    return (r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")) if f"{key}_ci_low" in r else None


def _worst(r: dict) -> str:
    if r.get("worst_class") is None:
        return "–"
    return f"`{r['worst_class']}` ({r['worst_class_f1_ratio']:.3f})"


def _size(r: dict) -> str:
    """'7.96 (1/11.4)': the int8 student's MB and the teacher's fp32 size over it; – when the
    run did not record them."""
    mb, share = r.get("student_int8_mb"), r.get("size_ratio")
    if mb is None:
        return "–"
    return f"{mb:.2f}" + ("" if share is None else f" (1/{1 / share:.1f})")


def recipe_table(results: dict[str, dict], names: dict[str, str] | None = None) -> str:
    """Markdown table of the recipe check's results (runs.recipe_check.measure, by variant):
    teacher, TF-IDF baseline and int8 student macro-F1, the int8 student's size and its share of
    the teacher's fp32 size as 1/N (– for runs that did not record it), the ratio, the gain kept
    and the
    agreement with their intervals, the label whose F1 the student keeps least of,
    disagreements, the calibrate stage's answered share, its ceiling (the most any threshold
    answers on test at the target), agreement on the answered and cascade agreement (– for runs
    without them), epochs and the variant's wall time.
    ``names``: what the first column shows per key (default: the key in backticks)."""
    lines = [RECIPE_HEADER]
    for name, r in results.items():
        seconds = r.get("seconds")
        lines.append(
            f"| {(names or {}).get(name, f'`{name}`')} | {r['test_rows']:,} | "
            f"{r['teacher_macro_f1']:.3f} | {_with_ci(r.get('baseline_macro_f1'))} | "
            f"{r['student_int8_macro_f1']:.3f} | {_size(r)} | "
            f"{_with_ci(r['ratio'], r['ratio_ci'])} | "
            f"{_with_ci(r.get('gain_kept'), r.get('gain_kept_ci'))} | "
            f"{_with_ci(r['agreement'], r['agreement_ci'])} | "
            f"{_worst(r)} | {r['disagreements']} "
            f"({r['disagreements_where_teacher_wrong']}) | "
            f"{_with_ci(r.get('deferral.test.coverage'), _ci(r, 'deferral.test.coverage'))} | "
            f"{_with_ci(r.get('deferral.test.coverage_ceiling'))} | "
            f"{_with_ci(r.get('deferral.test.agreement'), digits=4)} | "
            f"{_with_ci(r.get('deferral.test.cascade_agreement'), digits=4)} | "
            f"{r['epochs_run']:g} | "
            f"{'–' if seconds is None else f'{seconds / 60:.0f} min'} |")
    return "\n".join(lines)


PUBLIC_START, PUBLIC_END = "<!-- public:start -->", "<!-- public:end -->"
PUBLIC_RUNS = "metrics/runs/public"
"the committed recipe-check results on the public sets, one JSON file per run"


def read_runs(folder: str | Path) -> dict[str, dict]:
    """The recipe-check result files (``--out`` JSON) in ``folder``, by file stem, sorted."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(Path(folder).glob("*.json"))}


def stage_table(rows: dict[str, dict], names: dict[str, str] | None = None) -> str:
    """Markdown table of wall time and peak resident memory per stage (rows: the recipe
    check's results with a ``stages`` entry, {stage: {'wall_s', 'peak_rss_gib'}}); columns are
    the stages in the order first met. Empty when no row has stage figures."""
    measured = {key: r["stages"] for key, r in rows.items() if r.get("stages")}
    if not measured:
        return ""
    order = list(dict.fromkeys(stage for stages in measured.values() for stage in stages))
    lines = ["| set | " + " | ".join(f"`{stage}`" for stage in order) + " |",
             "|---|" + "---|" * len(order)]
    for key, stages in measured.items():
        cells = [f"{stages[s]['wall_s'] / 60:.1f} min, {stages[s]['peak_rss_gib']:.1f} GiB"
                 if s in stages else "–" for s in order]
        lines.append(f"| {(names or {}).get(key, f'`{key}`')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def public_table(runs: dict[str, dict]) -> str:
    """README's table of the public sets: every variant of every run file (``read_runs``),
    with the params the run overrode (its schedule) under the table, the runs whose baseline
    tried equal label weights only (no ``baseline_class_weight`` recorded), then the wall time
    and peak memory of each stage (``stage_table``) for the runs that recorded them. A set run
    by more than one file is named with the file's name beside it."""
    rows, names, schedules = {}, {}, {}
    sets = Counter(name for run in runs.values() for name in run["variants"])
    for stem, run in runs.items():
        overrides = ", ".join(f"`{k}={v}`" for k, v in run.get("overrides", {}).items())
        schedule = f"overrides {overrides}" if overrides else "the committed params"
        schedules.setdefault(schedule, []).append(f"`{stem}.json`")
        for name, r in run["variants"].items():
            rows[f"{stem}/{name}"] = r
            names[f"{stem}/{name}"] = (f"`{name}` (`{stem}.json`)" if sets[name] > 1
                                       else f"`{name}`")
    notes = [f"{', '.join(files)} in `{PUBLIC_RUNS}/`: {schedule}"
             for schedule, files in schedules.items()]
    # runs.recipe_check records the baseline's weighting since the stage tried balanced weights
    unweighted = [f"`{stem}.json`" for stem, run in runs.items()
                  if any(r.get("baseline_class_weight") is None for r in run["variants"].values())]
    weights = (f" ({', '.join(unweighted)}: run with an earlier baseline stage, equal weights "
               "only; what today's stage gives on their splits: docs/experiments.md)"
               if unweighted else "")
    table = (recipe_table(rows, names) + "\n\n" + "; ".join(notes)
             + ". TF-IDF: C and balanced or equal label weights chosen on validation" + weights
             + "; gain kept: – where the teacher is not above TF-IDF, no interval where its gain "
             "is not above 0 on every resample. Wall time: – where the run was interrupted and "
             "resumed; ceiling: – for runs made before the calibrate stage reported it; size: "
             "– for runs made before it was recorded (the target: 1/12 or less; what the committed "
             "params give on each set before training, `python -m runs.size_check`: "
             "[docs/guide/own-data.md](docs/guide/own-data.md#how-big-will-the-student-be)).")
    stages = stage_table(rows, names)
    if stages:
        table += ("\n\nWall time and peak resident memory (the largest single process, "
                  "kernel ru_maxrss) per stage, on the machine and schedule of the run:\n\n"
                  + stages)
    return table


CANDIDATES_START, CANDIDATES_END = "<!-- candidates:start -->", "<!-- candidates:end -->"
VARIANT_RUNS = "metrics/runs/variants"
"the committed recipe-check results on the derived variants, one JSON file per run"


SEED_KEYS = ("train_student.seed",)
"overrides that change only the random draws: such a run is the committed params at another seed"


def _candidate_cell(r: dict | None) -> str:
    """'agreement (disagreements) · student int8 macro-F1 · answered' for one variant; empty
    when the run did not measure it, – for a figure the run file does not hold."""
    if r is None:
        return ""

    def shown(key: str, fmt: str) -> str:
        return "–" if r.get(key) is None else format(r[key], fmt)

    return (f"{shown('agreement', '.3f')} ({shown('disagreements', 'd')}) · "
            f"{shown('student_int8_macro_f1', '.3f')} · "
            f"{shown('deferral.test.coverage', '.2f')}")


def _overrides(run: dict) -> str:
    """A run's params overrides as ``key=value`` the way -S takes them (YAML flow values:
    null, true, [0, 2, 5]), each in backticks, | escaped."""
    def value(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v)
    return ", ".join(f"`{k}={value(v)}`".replace("|", "\\|")
                     for k, v in run.get("overrides", {}).items())


def candidates_table(runs: dict[str, dict], references: dict[str, dict] | None = None) -> str:
    """Every recipe candidate with a run file, one row per file of ``runs`` (``read_runs`` of
    VARIANT_RUNS; files without per-variant results, such as the baseline checks, are left
    out): its params overrides and, per variant, ``_candidate_cell``. The first rows are the
    committed params (a run without overrides, the one with most variants first; then those
    that change only SEED_KEYS), then one reference row per file of ``references`` (the public
    runs, at their own schedule) holding a variant some candidate ran, then the other
    candidates in file name order (a seed-7 file sits under its seed-42 one). Columns: the
    variants in the order first met, each with its test rows. Empty when no file holds
    per-variant results."""
    measured = {stem: run for stem, run in runs.items() if run.get("variants")}
    if not measured:
        return ""

    def group(stem: str) -> int:
        keys = set(measured[stem].get("overrides", {}))
        return 0 if not keys else 1 if keys <= set(SEED_KEYS) else 3

    ordered = sorted(measured, key=lambda stem: (
        group(stem), -len(measured[stem]["variants"]) if group(stem) == 0 else 0, stem))
    columns = list(dict.fromkeys(v for stem in ordered for v in measured[stem]["variants"]))
    rows = {stem: (measured[stem], group(stem)) for stem in ordered}
    for stem, run in (references or {}).items():
        if set(run.get("variants", {})) & set(columns):
            rows[f"public/{stem}"] = (run, 2)
    sizes = {v: next(r[0]["variants"][v].get("test_rows") for r in rows.values()
                     if v in r[0]["variants"]) for v in columns}
    lines = ["| candidate (run file): agreement (disagreements) · student macro-F1 · answered | "
             + " | ".join(f"`{v}` ({'?' if sizes[v] is None else f'{sizes[v]:,}'})"
                          for v in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for stem, (run, kind) in sorted(rows.items(), key=lambda item: item[1][1]):
        label = {0: "committed params", 1: "committed params", 2: "reference at its schedule",
                 3: ""}[kind]
        label = ", ".join(x for x in (label, _overrides(run)) if x)
        cells = [_candidate_cell(run["variants"].get(v)) for v in columns]
        lines.append(f"| {label} (`{stem}.json`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEFERRAL_START, DEFERRAL_END = "<!-- deferral:start -->", "<!-- deferral:end -->"
DEFERRAL_ROWS = (("coverage", "answered on device (coverage)"),
                 ("agreement", "agreement with the teacher on the answered"),
                 ("macro_f1", "macro-F1 on the answered"))


def _answered(m: dict[str, Any], prefix: str) -> list[str]:
    """The coverage, agreement (4 decimals: the target is 0.995) and macro-F1 cells of one
    model in metrics/calibrate.json."""
    return [_with_ci(m.get(f"{prefix}test.{key}"),
                     (m.get(f"{prefix}test.{key}_ci_low"), m.get(f"{prefix}test.{key}_ci_high")),
                     digits=4 if key == "agreement" else 3)
            for key, _ in DEFERRAL_ROWS]


SCORE_NAMES = {"max_probability": "top probability", "margin": "top-two margin",
               "entropy": "negative entropy"}
"how README and `pocketbert predict` name the confidence scores of contract.CONFIDENCE_SCORES"


def score_range(score: str, n_labels: int) -> tuple[float, float]:
    """The values a confidence score can take for ``n_labels`` labels: top probability
    [1 / n, 1], top-two margin [0, 1], negative entropy [-ln n, 0] (nats)."""
    import math

    return {"max_probability": (1 / n_labels, 1.0), "margin": (0.0, 1.0),
            "entropy": (-math.log(n_labels), 0.0)}[score]


def _rule(score: str, threshold: float | None) -> str:
    return ("none reaches the target: every text deferred" if threshold is None
            else f"{SCORE_NAMES[score]} ≥ {_number(threshold)}")


def deferral_table(m: dict[str, Any]) -> str:
    """README's deferral block from metrics/calibrate.json (stage calibrate): the student's
    and the TF-IDF baseline's coverage, agreement and macro-F1 on the test texts they answer
    at the threshold chosen on the selection texts (validation, and the calibration texts when
    soft_label.calibration_share kept some), then how it was chosen, the calibration and the
    out-of-distribution texts."""
    level = f"{m['confidence_level']:.0%}"
    chosen = m["score"]
    held = m[f"scores.{chosen}.selection.disagreements"]
    student, base = _answered(m, ""), _answered(m, "baseline.")
    lines = [f"| on {m['test_rows']:,} test texts ({level} interval) | student int8 | "
             "TF-IDF baseline |", "|---|---|---|"]
    for (_, title), a, b in zip(DEFERRAL_ROWS, student, base, strict=True):
        lines.append(f"| {title} | {a} | {b} |")
    lines.append(f"| disagreements among the answered | {m['test.disagreements_answered']} of "
                 f"{m['test.answered']} | {m['baseline.test.disagreements_answered']} of "
                 f"{m['baseline.test.answered']} |")
    if "test.coverage_ceiling" in m:
        lines.append(f"| the most any threshold answers at {m['target_agreement']} (ceiling, "
                     "set on test) | "
                     f"{_number(m['test.coverage_ceiling'])} | "
                     f"{_number(m['baseline.test.coverage_ceiling'])} |")
    if "test.cascade_agreement" in m:
        lines.append("| agreement of the cascade (the rest asked of the teacher) | "
                     f"{_number(m['test.cascade_agreement'], 4)} | "
                     f"{_number(m['baseline.test.cascade_agreement'], 4)} |")
    lines.append(f"| answers when | {_rule(m['score'], m['threshold'])} (calibrated) | "
                 f"{_rule('max_probability', m['baseline.threshold'])} |")
    scores = [key.split(".")[1] for key in m if key.startswith("scores.")
              and key.endswith(".selection.coverage")]
    by_score = ", ".join(f"`{s}` {m[f'scores.{s}.selection.coverage']:.3f}" for s in scores)
    bound = m.get(f"scores.{chosen}.selection.agreement_lower_bound")
    selection = (f"{m['validation_rows']:,} validation texts"
                 + (f" and the {m['calibration_rows']:,} calibration texts (unlabelled texts "
                    "kept from training, with the teacher's labels: "
                    "`soft_label.calibration_share`)" if m.get("calibration_rows") else ""))
    ood = ", ".join(f"`{s}` {m[f'scores.{s}.ood.auroc']:.3f}" for s in scores)
    lines += ["", (
        f"Threshold chosen on the {selection}, never on test: the "
        f"lowest whose answered texts agree with the teacher on at least "
        f"{m['target_agreement']} of them (`calibrate.target_agreement`)"
        + (f", {m['selection_margin']:g} standard error(s) of the disagreement rate inside it "
           "(`calibrate.selection_margin`)" if m.get("selection_margin") else "")
        + ". Coverage of those texts "
        f"by confidence score (`entropy`: negative entropy): {by_score}; `{m['score']}` answers "
        "the most. There "
        f"its answered texts hold {held} disagreement{'' if held == 1 else 's'}"
        + (f"; the one-sided {level} Clopper–Pearson lower bound of their agreement is "
           f"{bound:.3f}" + (", so a selection set of this size cannot certify the target on "
                             "its own, and the test rows above check it"
                             if bound < m["target_agreement"] else "")
           if bound is not None else "")
        + (f". Validation alone would have answered {_number(m['validation_alone.test.coverage'])}"
           f" of the test texts with {m['validation_alone.test.disagreements_answered']} "
           f"disagreement(s) among them (`{m['validation_alone.score']}`; the baseline's threshold "
           "is chosen on the same texts as the student's)"
           if "validation_alone.test.coverage" in m else "")
        + f". Temperature {m['temperature']:.3f} (fitted on validation): test ECE "
        f"{_number(m['test.ece_before'])} → {_number(m['test.ece_after'])}, negative "
        f"log-likelihood {_number(m['test.nll_before'])} → {_number(m['test.nll_after'])}. "
        f"Of {m['ood_rows']} texts unlike any training data (`calibrate.ood_csv`), "
        f"{m['ood.deferred_share']:.1%} are deferred; how well each score tells them from "
        f"test texts (AUROC): {ood}."
        + (" The ceiling is never used for a choice: near the coverage, the student's ranking "
           "limits it; below it, the chosen threshold answers more than the target allows "
           "on test." if "test.coverage_ceiling" in m else ""))]
    return "\n".join(lines)


BUDGET_START, BUDGET_END = "<!-- budget:start -->", "<!-- budget:end -->"
BUDGETS_MB = (1.0, 2.0, 5.0, 10.0)
"the size budgets README's budget table answers (`pocketbert choose --max-mb`)"


def budget_table(metrics: dict[str, Any]) -> str:
    """Markdown: for each of BUDGETS_MB, the model `pocketbert choose --max-mb` names from
    metrics/benchmark.json (benchmarks.frontier.choose), or that none fits."""
    from pocketbert.benchmarks import frontier

    candidates = frontier.points(metrics)
    lines = ["| budget | pick | size MB | agreement with the teacher (95% CI) | p50 ms | "
             "runs in |", "|---|---|---|---|---|---|"]
    for budget in BUDGETS_MB:
        p = frontier.choose(candidates, max_mb=budget)
        if p is None:
            lines.append(f"| ≤ {budget:g} MB | none measured fits | – | – | – | – |")
            continue
        p50 = contract.NOT_MEASURED_NOTE if p.p50_ms is None else f"{p.p50_ms:.2g}"
        lines.append(f"| ≤ {budget:g} MB | `{p.variant}` | {p.size_mb:.2f} | "
                     f"{_with_ci(p.agreement, (p.agreement_low, p.agreement_high))} | {p50} | "
                     f"{p.runtime} |")
    return "\n".join(lines)


README = "README.md"
"the file every other generated block's path is relative to (its folder is the checkout root)"

BLOCKS = (
    (README, START, END),
    (README, PUBLIC_START, PUBLIC_END),
    (README, DEFERRAL_START, DEFERRAL_END),
    (README, BUDGET_START, BUDGET_END),
    ("docs/experiments.md", CANDIDATES_START, CANDIDATES_END),
    ("docs/experiments.md", LATENCY_START, LATENCY_END),
    ("docs/reference.md", PARAMS_START, PARAMS_END),
)
"""Every generated block: the markdown file that holds it (relative to the checkout root) and
its start and end markers. The latency block is rewritten only when latency metrics are given,
the public-sets and candidates blocks only when their run files are given."""


def block_file(readme: str | Path, name: str) -> Path:
    """Where the file ``name`` of BLOCKS is for the README at ``readme``: ``readme`` itself, or
    ``name`` under README's folder (``docs/reference.md`` beside ``README.md``)."""
    readme = Path(readme)
    return readme if name == README else readme.parent / name


def _blocks(metrics: dict[str, Any], params_file: str | Path,
            latency: dict[str, Any] | None = None, public: dict[str, dict] | None = None,
            deferral: dict[str, Any] | None = None,
            candidates: dict[str, dict] | None = None) -> dict[tuple[str, str, str], str]:
    """The body of each block of BLOCKS, keyed by (file, start, end); the latency block only
    with ``latency``, the public-sets block only with ``public`` (read_runs), the deferral
    block only with ``deferral`` (metrics/calibrate.json), the candidates block only with
    ``candidates`` (read_runs of VARIANT_RUNS; ``public`` gives its reference rows)."""
    bodies = {START: lambda: results_table(metrics),
              PUBLIC_START: lambda: public_table(public),
              DEFERRAL_START: lambda: deferral_table(deferral),
              BUDGET_START: lambda: budget_table(metrics),
              CANDIDATES_START: lambda: candidates_table(candidates, public),
              PARAMS_START: lambda: params_table(params_file),
              LATENCY_START: lambda: latency_table(latency)}
    optional = {LATENCY_START: latency, PUBLIC_START: public, DEFERRAL_START: deferral,
                CANDIDATES_START: candidates}
    return {(name, start, end): bodies[start]() for name, start, end in BLOCKS
            if start not in optional or optional[start] is not None}


def _read(path: Path, start: str, end: str) -> str:
    if not path.is_file():
        raise ValueError(f"{path}: not found (it holds the generated block {start} … {end})")
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{path}: markers {start} and {end} not found")
    return text


def update_readme(readme: Path, metrics: dict[str, Any],
                  params_file: str | Path = "params.yaml",
                  latency: dict[str, Any] | None = None,
                  public: dict[str, dict] | None = None,
                  deferral: dict[str, Any] | None = None,
                  candidates: dict[str, dict] | None = None) -> bool:
    """Replace the generated blocks of BLOCKS (results in README, the recipe candidates in
    docs/experiments.md given ``candidates``, the latency candidates there given ``latency``,
    metrics/latency.json, and params in docs/reference.md; each file found from ``readme``'s
    folder); True when a file changed.
    Raises ValueError when a file or a block's markers are missing, before any file is
    written."""
    texts: dict[Path, tuple[str, str]] = {}  # path: (as read, as rewritten)
    for (name, start, end), body in _blocks(metrics, params_file, latency, public,
                                            deferral, candidates).items():
        path = block_file(readme, name)
        old, new = texts.get(path) or (_read(path, start, end),) * 2
        if start not in new or end not in new:
            raise ValueError(f"{path}: markers {start} and {end} not found")
        head, rest = new.split(start, 1)
        _, tail = rest.split(end, 1)
        texts[path] = (old, f"{head}{start}\n{body}\n{end}{tail}")
    changed = False
    for path, (old, new) in texts.items():
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed = True
    return changed


def readme_table(readme: Path, start: str = START, end: str = END) -> str:
    """The text currently between two markers of a markdown file (README.md or another file
    of BLOCKS)."""
    return _read(Path(readme), start, end).split(start, 1)[1].split(end, 1)[0].strip("\n")


def stale_files(readme: Path, metrics: dict[str, Any],
                params_file: str | Path = "params.yaml",
                latency: dict[str, Any] | None = None,
                public: dict[str, dict] | None = None,
                deferral: dict[str, Any] | None = None,
                candidates: dict[str, dict] | None = None) -> list[Path]:
    """The files (README and the docs beside it) holding a generated block of BLOCKS that
    differs from what the inputs give, each once, in BLOCKS order. Raises ValueError when a
    file or a block's markers are missing."""
    stale: list[Path] = []
    for (name, s, e), body in _blocks(metrics, params_file, latency, public, deferral,
                                      candidates).items():
        path = block_file(readme, name)
        if readme_table(path, s, e) != body and path not in stale:
            stale.append(path)
    return stale


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
