"""A teacher whose architecture a device step cannot take: recorded, not fatal; the student's
failure stays an error; the benchmark and README leave the teacher's missing rows out."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import run_fasttext_stage, run_model2vec_stage, write_random_soft_labels

from pocketbert.apps import results
from pocketbert.training import modeling
from stages import baseline, benchmark, convert, export


def _no_op(*args, **kwargs):
    raise NotImplementedError("aten::weird_op is not supported\nsecond line of detail")


def _step(w, model: str, out: str) -> list[str]:
    r = w["root"]
    return ["--params", str(w["params"]), "--model", str(r / model), "--tokenize",
            str(w["tokenize"]), "--out", str(r / out), "--metrics", str(r / f"{out}.json")]


def test_teacher_device_steps_are_recorded_and_the_student_side_runs(
        tiny_world, monkeypatch, capsys) -> None:
    w, r = tiny_world, tiny_world["root"]
    for name in ("teacher", "student"):  # dvc.yaml's models/${item}
        shutil.copytree(w["given_teacher"], r / name)
    raw = yaml.safe_load(w["params"].read_text())
    raw["convert"]["variants"] = ["fp16", "int8"]
    raw["benchmark"].update({"warmup": 1, "batch_size": 4})
    w["params"].write_text(yaml.safe_dump(raw))

    with monkeypatch.context() as patch:  # the exporter and the converter lack an op
        patch.setattr(torch.onnx, "export", _no_op)
        patch.setattr(torch.jit, "trace", _no_op)
        capsys.readouterr()
        for module, stage_name, out in ((export, "export", "onnx_teacher"),
                                        (convert, "convert", "coreml_teacher")):
            metrics = module.main(_step(w, "teacher", out))
            assert metrics["supported"] is False
            assert json.loads((r / f"{out}.json").read_text()) == metrics
            assert sorted(p.name for p in (r / out).iterdir()) == [modeling.UNSUPPORTED_FILE]
            record = json.loads((r / out / modeling.UNSUPPORTED_FILE).read_text())
            step = "ONNX export" if module is export else "Core ML conversion"
            assert record == {"step": step, "model_type": "bert",
                              "reason": "NotImplementedError: aten::weird_op is not supported"}
            warning = [line for line in capsys.readouterr().err.splitlines()
                       if line.startswith("warning:")]
            assert len(warning) == 1 and warning[0].startswith(
                f"warning: {stage_name}@teacher: {step} does not support model_type 'bert' "
                "(NotImplementedError: aten::weird_op is not supported)")
        assert metrics["buckets"] == 2 and not any(k.endswith(".size_mb") for k in metrics)
        # the student needs its device files: the same failure stops its stage, no output
        for module, out in ((export, "onnx_bad"), (convert, "coreml_bad")):
            with pytest.raises(SystemExit) as exit_:
                module.main(_step(w, "student", out))
            assert exit_.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err.startswith("error: ") and "does not support model_type 'bert'" in err
            assert not (r / out).exists() and not (r / f"{out}.json").exists()

    assert export.main(_step(w, "student", "onnx_student"))["supported"] is True
    assert convert.main(_step(w, "student", "coreml_student"))["supported"] is True
    baseline.main(["--params", str(w["params"]), "--tokenize", str(w["tokenize"]),
                   "--out", str(r / "baseline"), "--metrics", str(r / "baseline.json")])
    run_fasttext_stage(w["params"], w["tokenize"], r / "fasttext")
    write_random_soft_labels(r / "soft", w["tokenize"], w["augmented"])
    run_model2vec_stage(w["params"], w["given_teacher"], {"tokenize": w["tokenize"],
                        "augmented": w["augmented"], "soft_label": r / "soft"}, r / "model2vec")
    m = benchmark.main([
        "--params", str(w["params"]), "--teacher", str(r / "teacher"),
        "--student", str(r / "student"), "--export-teacher", str(r / "onnx_teacher"),
        "--export-student", str(r / "onnx_student"),
        "--convert-teacher", str(r / "coreml_teacher"),
        "--convert-student", str(r / "coreml_student"), "--tokenize", str(w["tokenize"]),
        "--baseline", str(r / "baseline"), "--fasttext", str(r / "fasttext"),
        "--model2vec", str(r / "model2vec"),
        "--metrics", str(r / "bench.json"),
        "--plots", str(r / "bench_plots")])
    assert m["teacher.export_supported"] is False and m["teacher.convert_supported"] is False
    rows = results.variants(m)
    assert [v for v in rows if v.startswith("teacher.")] == ["teacher.pytorch_fp32"]
    assert {"student.onnx_int8", "student.coreml_fp16", "student.coreml_int8"} <= set(rows)
    # the student is still measured against the teacher in PyTorch
    assert isinstance(m["student.onnx_int8.agreement_with_teacher"], float)
    assert m["headline.student_variant"] == "student.onnx_int8"
    assert all(isinstance(v, bool | int | float) or v is None for k, v in m.items()
               if k.startswith("teacher."))
    table = results.results_table(m)
    assert "No teacher ONNX rows: the teacher's architecture does not go through ONNX export" \
        in table
    assert "No teacher Core ML rows" in table and "`teacher.onnx_fp32`" not in table


def test_a_supported_teacher_step_has_no_note(tmp_path) -> None:
    metrics = {"teacher.export_supported": True, "teacher.convert_supported": True,
               "teacher.pytorch_fp32.size_mb": 1.0, "teacher.pytorch_fp32.macro_f1": 0.5}
    assert "No teacher" not in results.results_table(metrics)
    assert modeling.teacher_step_supported(tmp_path)
    (tmp_path / modeling.UNSUPPORTED_FILE).write_text("{}")
    assert not modeling.teacher_step_supported(tmp_path)


def test_only_the_unsupported_architecture_error_is_skipped(tiny_world, monkeypatch,
                                                            capsys) -> None:
    from pocketbert.core.errors import ModelError
    from pocketbert.export import onnx_export

    w, r = tiny_world, tiny_world["root"]
    shutil.copytree(w["given_teacher"], r / "teacher")

    def broken(*args, **kwargs):
        raise ModelError("model.onnx: some other defect")

    monkeypatch.setattr(onnx_export, "export", broken)
    with pytest.raises(SystemExit) as exit_:
        export.main(_step(w, "teacher", "onnx_teacher"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: model.onnx: some other defect"
    assert not (r / "onnx_teacher").exists() and not (r / "onnx_teacher.json").exists()
