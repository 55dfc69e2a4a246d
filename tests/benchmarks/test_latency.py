"""Latency candidates: transformer fusions, graph edits, session settings and the latency stage,
on the tiny 3-layer, 2-head classifier (timings are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from pocketbert.apps import results
from pocketbert.benchmarks import latency
from pocketbert.data import tokenization
from pocketbert.export import onnx_export
from pocketbert.runtime import onnx_runner
from stages import export
from stages import latency as latency_stage


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.fixture
def exported(tiny_world) -> dict[str, Path]:
    """tiny_world plus the given teacher exported (fp32 and int8) to <root>/onnx."""
    w = tiny_world
    metrics = export.main(["--params", str(w["params"]), "--model", str(w["given_teacher"]),
                           "--tokenize", str(w["tokenize"]), "--out", str(w["root"] / "onnx"),
                           "--metrics", str(w["root"] / "onnx.json")])
    return {**w, "onnx": w["root"] / "onnx", "export_metrics": metrics}


def _test_ids(w: dict[str, Path]) -> list[list[int]]:
    tokenizer = tokenization.load_tokenizer(w["onnx"])
    texts = list(tokenization.load(w["tokenize"])["test"]["text"])
    return tokenization.encode(tokenizer, texts, 32)["input_ids"]


def test_fusions_replace_attention_and_keep_the_function(exported, tmp_path) -> None:
    fp32 = exported["onnx"] / "model.onnx"
    ids = _test_ids(exported)
    # padded batches: the fused attention must still mask the padding
    reference = onnx_runner.predict_logits(onnx_runner.session(fp32), ids, 0, batch_size=5)
    for skip, unskipped_layernorms in ((True, 1), (False, 7)):
        fused = tmp_path / f"fused_{skip}.onnx"
        counts = onnx_export.fuse_transformer(fp32, fused, num_heads=2, hidden_size=32,
                                              skip_layer_norm=skip)
        assert counts["Attention"] == 3  # one per layer: the mask and scale rewrites matched
        assert counts["SkipLayerNormalization"] == (6 if skip else 0)
        assert counts["LayerNormalization"] == unskipped_layernorms
        assert "Softmax" not in _ops(fused)
        logits = onnx_runner.predict_logits(onnx_runner.session(fused), ids, 0, batch_size=5)
        np.testing.assert_allclose(logits, reference, atol=1e-4)


def test_int8_model_leaves_no_fused_file_when_quantization_fails(exported, tmp_path,
                                                                  monkeypatch) -> None:
    from types import SimpleNamespace

    config = SimpleNamespace(num_attention_heads=2, hidden_size=32)

    def broken(*args, **kwargs):
        raise RuntimeError("quantization failed")

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    out = tmp_path / "int8"
    out.mkdir()
    with pytest.raises(RuntimeError, match="quantization failed"):
        onnx_export.int8_model(exported["onnx"] / "model.onnx", out / "model.int8.onnx",
                               config=config, fuse=True, per_channel=True, reduce_range=True)
    assert list(out.iterdir()) == []


def test_export_quantizes_the_fused_graph_unless_told_not_to(exported, write_params) -> None:
    m = exported["export_metrics"]
    assert m["int8.fused"] is True and m["int8.fused.Attention"] == 3
    assert m["int8.fused.SkipLayerNormalization"] == 0  # the sessions leave it unfused
    int8 = exported["onnx"] / "model.int8.onnx"
    assert "QAttention" in _ops(int8) and "Softmax" not in _ops(int8)
    assert not (exported["onnx"] / "fused.fp32.onnx").exists()  # an intermediate, removed
    w = exported
    raw = yaml.safe_load(w["params"].read_text())
    raw["export"]["fuse"] = False
    w["params"].write_text(yaml.safe_dump(raw))
    m = export.main(["--params", str(w["params"]), "--model", str(w["given_teacher"]),
                     "--tokenize", str(w["tokenize"]), "--out", str(w["root"] / "plain"),
                     "--metrics", str(w["root"] / "plain.json")])
    assert m["int8.fused"] is False and "int8.fused.Attention" not in m
    assert "QAttention" not in _ops(w["root"] / "plain" / "model.int8.onnx")


def test_sessions_turn_off_skip_layernorm_fusion_by_default(exported, tmp_path) -> None:
    fp32 = exported["onnx"] / "model.onnx"
    seen = {}
    for name, disabled in (("default", onnx_runner.DISABLED_OPTIMIZERS), ("all", ())):
        path = tmp_path / f"{name}.optimized.onnx"
        onnx_runner.session(fp32, threads=1, disabled_optimizers=disabled,
                          optimized_model_path=path)
        seen[name] = _ops(path)
    assert "SkipLayerNormalization" not in seen["default"]
    assert "SkipLayerNormalization" in seen["all"]  # onnxruntime fuses it when allowed
    with pytest.raises(ValueError, match="optimization_level 'fast'"):
        onnx_runner.session(fp32, optimization_level="fast")


def test_position_table_trimmed_to_max_length(exported, tmp_path) -> None:
    fp32 = exported["onnx"] / "model.onnx"
    trimmed = tmp_path / "trimmed.onnx"
    assert latency.trim_positions(fp32, trimmed, 32)
    tables = {i.name: list(i.dims) for i in onnx.load(str(trimmed)).graph.initializer
              if "position_embeddings" in i.name}
    assert list(tables.values()) == [[32, 32]]  # was [64, 32]
    ids = _test_ids(exported)
    np.testing.assert_allclose(
        onnx_runner.predict_logits(onnx_runner.session(trimmed), ids, 0),
        onnx_runner.predict_logits(onnx_runner.session(fp32), ids, 0), atol=1e-6)
    assert not latency.trim_positions(fp32, tmp_path / "same.onnx", 64)  # nothing to cut
    assert not (tmp_path / "same.onnx").exists()


def test_halving_heads_needs_fused_attention(exported, tmp_path) -> None:
    int8 = exported["onnx"] / "model.int8.onnx"  # fused: QAttention with 2 heads
    assert latency.halve_heads(int8, tmp_path / "half.onnx")
    heads = [a.i for n in onnx.load(str(tmp_path / "half.onnx")).graph.node
             if n.op_type == "QAttention" for a in n.attribute if a.name == "num_heads"]
    assert heads == [1, 1, 1]
    assert not latency.halve_heads(exported["onnx"] / "model.onnx", tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()


def _result(p50: float, agreement: float = 1.0, macro_f1: float = 0.9,
            probe: bool = False) -> dict:
    return {"latency_p50_ms": p50, "agreement_with_fp32": agreement, "macro_f1": macro_f1,
            "probe": probe}


def test_a_candidate_wins_only_faster_and_as_accurate() -> None:
    results = {
        "fp32": _result(2.0),
        "dynamic": _result(1.0),
        "faster": _result(0.9),
        "barely_faster": _result(0.96),  # 4% < min_gain 5%
        "faster_but_disagrees": _result(0.5, agreement=0.98),
        "faster_but_worse": _result(0.5, macro_f1=0.8),
        "faster_probe": _result(0.5, probe=True),
    }
    judged = latency.judge(results, baseline="dynamic", min_gain=0.05, min_agreement=0.99,
                           macro_f1_interval=(0.85, 0.95))
    assert {name for name, r in judged.items() if r["wins"]} == {"faster"}
    assert judged["faster"]["speedup"] == pytest.approx(1.0 / 0.9)
    assert judged["dynamic"]["speedup"] == 1.0


def test_latency_stage_measures_every_candidate(exported, capsys) -> None:
    w = exported
    raw = yaml.safe_load(w["params"].read_text())
    raw["latency"] = {"rounds": 2, "warmup": 1, "calibration_texts": 8, "min_gain": 0.05}
    w["params"].write_text(yaml.safe_dump(raw))
    args = ["--params", str(w["params"]), "--export", str(w["onnx"]),
            "--model", str(w["given_teacher"]), "--tokenize", str(w["tokenize"]),
            "--metrics", str(w["root"] / "latency.json"),
            "--plots", str(w["root"] / "latency_plots")]
    m = latency_stage.main(args)
    assert set(m["candidates"]) == {c.name for c in latency.CANDIDATES}
    assert m["test_sentences"] == 8 and m["rounds"] == 2
    for name, r in m["candidates"].items():
        assert r["latency_p95_ms"] >= r["latency_p50_ms"] > 0, name
        assert 0.0 <= r["agreement_with_fp32"] <= 1.0 and isinstance(r["wins"], bool), name
        assert not (r["probe"] and r["wins"]), name
    fp32 = m["candidates"]["fp32"]
    assert fp32["agreement_with_fp32"] == 1.0 and fp32["max_abs_logit_diff"] == 0.0
    assert m["fp32_macro_f1_ci_low"] <= fp32["macro_f1"] <= m["fp32_macro_f1_ci_high"]
    # the export's own int8 model is the fused one without SkipLayerNormalization
    assert m["candidates"]["shipped"]["size_mb"] == pytest.approx(
        (w["onnx"] / "model.int8.onnx").stat().st_size / 1e6)
    assert m["candidates"]["positions_trimmed"]["size_mb"] < m["candidates"]["dynamic"]["size_mb"]
    plot = json.loads((w["root"] / "latency_plots" / "candidates.json").read_text())
    p50s = [row["p50_ms"] for row in plot]
    assert p50s == sorted(p50s) and len(plot) == len(latency.CANDIDATES)
    table = results.latency_table(json.loads((w["root"] / "latency.json").read_text()))
    assert "`dvc repro latency`" in table
    assert table.count("\n| `") == len(latency.CANDIDATES)  # one row per candidate

    again = [*args[:-4], "--metrics", str(w["root"] / "again.json"),
             "--plots", str(w["root"] / "again_plots")]
    for flag, folder, message in (
            ("--model", w["root"], "config.json: not found; --model is the student's folder"),
            ("--tokenize", w["root"], "dataset: not found; --tokenize is the tokenize stage"),
            ("--export", w["root"], "model.onnx: not found; run `dvc repro export@student`")):
        bad = list(again)
        bad[bad.index(flag) + 1] = str(folder)
        with pytest.raises(SystemExit) as exc:
            latency_stage.main(bad)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err.splitlines()[-1]
        assert not (w["root"] / "again.json").exists()
        assert not (w["root"] / "again_plots").exists()


def test_a_fusion_that_changes_the_logits_is_not_shipped(tiny_world, monkeypatch) -> None:
    real = onnx_export.fuse_transformer

    def wrong(source, target, **kwargs):  # a fused graph that computes something else
        counts = real(source, target, **kwargs)
        proto = onnx.load(str(target))
        for init in proto.graph.initializer:
            if init.name.endswith("classifier.weight"):
                values = onnx.numpy_helper.to_array(init) * 2.0
                init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
        onnx.save(proto, str(target))
        return counts

    monkeypatch.setattr(onnx_export, "fuse_transformer", wrong)
    w = tiny_world
    with pytest.warns(UserWarning, match="quantized unfused"):
        m = export.main(["--params", str(w["params"]), "--model", str(w["given_teacher"]),
                         "--tokenize", str(w["tokenize"]), "--out", str(w["root"] / "onnx"),
                         "--metrics", str(w["root"] / "onnx.json")])
    assert m["int8.fused"] is False
    assert "QAttention" not in _ops(w["root"] / "onnx" / "model.int8.onnx")
    assert sorted(p.name for p in (w["root"] / "onnx").glob("*.onnx")) == [
        "model.int8.onnx", "model.onnx"]
