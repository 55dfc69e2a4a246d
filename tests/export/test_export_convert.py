"""ONNX export parity, int8 quantization, Core ML conversion and the app bundle, on tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    LABELS,
    PADDING_TOLERANCE,
    run_fasttext_stage,
    run_model2vec_stage,
    tiny_tokenizer,
    write_csv,
    write_random_soft_labels,
)

from pocketbert.core import contract, evaluation
from pocketbert.data import tokenization
from pocketbert.export import coreml, onnx_export
from pocketbert.training import modeling
from stages import bundle, convert, export


def _export_args(w: dict[str, Path], out: str = "onnx") -> list[str]:
    return ["--params", str(w["params"]), "--model", str(w["given_teacher"]),
            "--tokenize", str(w["tokenize"]), "--out", str(w["root"] / out),
            "--metrics", str(w["root"] / f"{out}.json")]


def test_onnx_export_matches_pytorch_and_quantizes(tiny_world) -> None:
    m = export.main(_export_args(tiny_world))
    out = tiny_world["root"] / "onnx"
    assert (out / "model.onnx").is_file() and (out / "model.int8.onnx").is_file()
    assert not list(out.glob("*.data"))  # one self-contained file
    assert m["fp32.max_abs_logit_diff"] <= 1e-4
    assert m["fp32.top1_agreement_with_pytorch"] == 1.0
    assert m["fp32.test.macro_f1"] == pytest.approx(m["pytorch.test.macro_f1"])
    assert 0.0 <= m["int8.top1_agreement_with_fp32"] <= 1.0
    assert m["int8.size_mb"] < m["fp32.size_mb"]
    assert m["int8.texts_per_call"] == 1  # measured as predict and the app run it
    cpu = {k: v for k, v in m.items() if k.startswith("cpu.")}
    assert {"cpu.avx2", "cpu.avx512_vnni", "cpu.vnni"} <= set(cpu)
    assert all(v is None or isinstance(v, bool) for v in cpu.values())  # metrics stay numeric
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims)  # batch and sequence are dynamic


def test_int8_agreement_is_measured_against_fp32(tiny_world) -> None:
    ref = np.array([[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    cand = np.array([[2.0, 1.0, 0.0, 0.0], [3.5, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.2]])
    result = onnx_export.parity(ref, cand)
    assert result.top1_agreement == pytest.approx(2 / 3)
    assert result.max_abs_diff == pytest.approx(3.5)
    assert result.worst[0] == 1


def test_broken_export_fails_the_parity_check(tiny_world, monkeypatch, capsys) -> None:
    # A wrapper that ignores the attention mask: padded positions leak into the logits.
    monkeypatch.setattr(modeling, "MASKED", 0.0)
    with pytest.raises(SystemExit) as exc:
        export.main(_export_args(tiny_world, "broken"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "max |logit difference|" in err and "worst examples: #" in err
    assert not (tiny_world["root"] / "broken").exists()
    assert not (tiny_world["root"] / "broken.json").exists()


def _convert_args(w: dict[str, Path], out: str = "coreml") -> list[str]:
    return ["--params", str(w["params"]), "--model", str(w["given_teacher"]), "--tokenize",
            str(w["tokenize"]), "--out", str(w["root"] / out),
            "--metrics", str(w["root"] / f"{out}.json")]


def test_coreml_conversion_states_labels_inputs_and_metadata(tiny_world) -> None:
    with pytest.warns(UserWarning, match=r"convert.buckets \[64, 128\] exceed"):
        m = convert.main(_convert_args(tiny_world))  # default buckets, tokenize.max_length 32
    out = tiny_world["root"] / "coreml"
    info = coreml.read_back(out / "fp16.mlpackage")
    assert info["is_mlprogram"]
    assert info["classify_labels"] == list(LABELS)
    # one input, the enumerated lengths up to max_length; the largest is the default shape
    assert list(info["inputs"]) == ["input_ids"]
    assert info["inputs"]["input_ids"]["shapes"] == [(1, 16), (1, 32)]
    assert info["inputs"]["input_ids"]["default"] == (1, 32)
    assert json.loads(info["metadata"]["buckets"]) == [16, 32]
    assert "pad with [PAD] (id 0) to the next" in info["input_descriptions"]["input_ids"]
    assert set(info["outputs"]) == {"classLabel", "classLabel_probs"}
    assert json.loads(info["metadata"]["labels"]) == list(LABELS)
    assert info["metadata"]["do_lower_case"] == "true"
    assert json.loads(info["metadata"]["special_token_ids"])["cls"] == 2
    assert info["license"] and info["version"] and info["short_description"]
    for variant in ("int8", "palette6", "palette4"):
        assert (out / f"{variant}.mlpackage").is_dir()
        assert m[f"{variant}.size_mb"] < m["fp16.size_mb"], variant
        assert m[f"{variant}.spec_checked"] is True
    assert m["fp16.size_mb"] < m["fp32.size_mb"]
    # every variant, every text at every bucket that holds it, against unpadded PyTorch
    assert m["buckets"] == 2
    for variant, tolerance in (("fp32", 1e-4), ("fp16", 1e-2), ("int8", 0.02),
                               ("palette6", 0.05), ("palette4", 0.15)):
        assert m[f"{variant}.bucket_cases"] > len(tokenization.EDGE_CASES) + 8, variant
        assert m[f"{variant}.bucket_nonfinite"] == 0
        assert m[f"{variant}.bucket_max_abs_prob_diff"] <= tolerance, variant
        # padding never moves a label, nor a probability beyond the round-off of the dtype
        assert m[f"{variant}.padding_label_changes"] == 0, variant
        assert m[f"{variant}.padding_max_abs_prob_diff"] <= PADDING_TOLERANCE[variant], variant
    # Labels: a probability bound t moves the top label only where PyTorch's top-2 margin is
    # under 2t, so the bounds above already hold the labels away from ties; near ties fp16
    # and compressed weights may flip legitimately. fp32 (t = 1e-4) keeps every label.
    assert m["fp32.bucket_label_agreement"] == 1.0
    if not coreml.can_predict():  # metrics stay numeric: absent, and a note says why
        assert "fp16.test.macro_f1" not in m and "measured_by" not in m
        assert contract.NOT_MEASURED_NOTE in m["note"]
    assert all(isinstance(v, int | float) for k, v in m.items() if k not in ("note",
                                                                             "measured_by"))


def test_range_shapes_stay_a_choice(tiny_world) -> None:
    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw["convert"] = {"variants": ["fp16"], "shapes": "range"}
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    m = convert.main(_convert_args(tiny_world, "range"))
    info = coreml.read_back(tiny_world["root"] / "range" / "fp16.mlpackage")
    assert list(info["inputs"]) == ["input_ids"]
    assert info["inputs"]["input_ids"]["ranges"] == [(1, 1), (1, 32)]  # tokenize.max_length
    assert info["inputs"]["input_ids"]["shapes"] == [] and "buckets" not in info["metadata"]
    assert "[1, 1..32]" in info["input_descriptions"]["input_ids"]
    # each text unpadded and padded to max_length
    assert m["buckets"] == 0 and m["fp16.bucket_nonfinite"] == 0
    assert m["fp16.bucket_max_abs_prob_diff"] <= 1e-2


def test_a_model_over_the_parameter_limit_skips_the_executor_check(tiny_world) -> None:
    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw["convert"] = {"variants": ["fp16"], "bucket_check_max_parameters": 1000}
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    m = convert.main(_convert_args(tiny_world, "big"))
    assert m["bucket_checked"] is False
    assert m["fp16.spec_checked"] and not any(".bucket_" in k for k in m)
    raw["convert"]["bucket_check_max_parameters"] = None  # null: every model is checked
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    m = convert.main(_convert_args(tiny_world, "checked"))
    assert m["bucket_checked"] is True and m["fp16.bucket_nonfinite"] == 0


def test_bad_buckets_are_refused_naming_the_key(tiny_world, capsys) -> None:
    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw["convert"] = {"buckets": [32, 16]}
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as exc:
        convert.main(_convert_args(tiny_world, "bad"))
    assert exc.value.code == 2
    assert "'convert.buckets'" in capsys.readouterr().err
    assert not (tiny_world["root"] / "bad").exists()


def test_check_spec_names_what_is_wrong(tiny_world, tmp_path) -> None:
    tok = tiny_tokenizer()
    model = modeling.load_classifier(tiny_world["given_teacher"], LABELS)
    mlmodel = coreml.convert(model, labels=LABELS, max_length=16, precision="fp16",
                             target="iOS16", buckets=(8, 16), pad_id=tok.pad_token_id)
    path = tmp_path / "m.mlpackage"
    mlmodel.save(str(path))
    info = coreml.read_back(path)
    with pytest.raises(Exception, match="max_length metadata missing"):
        coreml.check_spec(info, LABELS, 16, path, (8, 16))
    coreml.set_metadata(mlmodel, labels=LABELS, max_length=16,
                        wordpiece=tokenization.wordpiece_settings(tok, 16), description="d",
                        license_text="l", version="1", variant="fp16", buckets=(8, 16))
    mlmodel.save(str(path))
    coreml.check_spec(coreml.read_back(path), LABELS, 16, path, (8, 16))  # now complete
    with pytest.raises(Exception, match=r"shapes \[\(1, 8\), \(1, 16\)\] != \[\(1, 4\)"):
        coreml.check_spec(coreml.read_back(path), LABELS, 16, path, (4, 16))
    with pytest.raises(Exception, match=r"ranges \[\] != \[1, 1..16\]"):
        coreml.check_spec(coreml.read_back(path), LABELS, 16, path)  # expected a range model


def test_app_input_pads_to_the_next_bucket() -> None:
    metadata = {"buckets": "[4, 8]", "special_token_ids": json.dumps({"pad": 1})}
    assert coreml.app_input([2, 9, 3], metadata).tolist() == [[2, 9, 3, 1]]
    assert coreml.app_input([2, 9, 9, 9, 3], metadata).tolist() == [[2, 9, 9, 9, 3, 1, 1, 1]]
    assert coreml.app_input([2, 9, 9, 3], metadata).dtype == np.int32
    with pytest.raises(Exception, match="9 tokens do not fit the largest Core ML input length 8"):
        coreml.app_input([2] * 9, metadata)
    range_model = {"special_token_ids": json.dumps({"pad": 0})}
    assert coreml.app_input([2, 9, 3], range_model).tolist() == [[2, 9, 3]]
    assert coreml.sequence_buckets([16, 32], 128) == (16, 32, 128)
    assert coreml.sequence_buckets([16, 128], 128) == (16, 128)


def test_parity_vectors_regenerate_identically_and_cover_edge_cases() -> None:
    tok = tiny_tokenizer()
    texts = list(tokenization.EDGE_CASES)
    first = tokenization.parity_vectors(tok, texts, 32)
    second = tokenization.parity_vectors(tiny_tokenizer(), texts, 32)
    assert first == second
    by_text = {case["text"]: case for case in first}
    assert by_text[""]["input_ids"] == [tok.cls_token_id, tok.sep_token_id]
    assert by_text["\u200b"]["input_ids"] == [tok.cls_token_id, tok.sep_token_id]
    assert len(by_text["word " * 200]["input_ids"]) == 32
    assert tok.unk_token_id in by_text["🙂🙂🙂"]["input_ids"]
    assert all(len(c["input_ids"]) == len(c["attention_mask"]) for c in first)


def test_bundle_and_benchmark_on_a_tiny_pipeline(tiny_world) -> None:
    from stages import soft_label, teacher, train_student

    w, p = tiny_world, str(tiny_world["params"])
    teacher.main(["--params", p, "--tokenize", str(w["tokenize"]), "--out",
                  str(w["root"] / "teacher"), "--metrics", str(w["root"] / "t.json")])
    soft_label.main(["--params", p, "--teacher", str(w["root"] / "teacher"), "--tokenize",
                     str(w["tokenize"]), "--augmented", str(w["augmented"]),
                     "--out", str(w["root"] / "soft"),
                     "--metrics", str(w["root"] / "s.json")])
    train_student.main(["--params", p, "--teacher", str(w["root"] / "teacher"), "--tokenize",
                        str(w["tokenize"]), "--augmented", str(w["augmented"]),
                        "--soft-label", str(w["root"] / "soft"), "--out",
                        str(w["root"] / "student"), "--metrics", str(w["root"] / "ts.json"),
                        "--curves", str(w["root"] / "curves")])
    raw = yaml.safe_load(w["params"].read_text())
    raw["convert"]["variants"] = ["fp16", "int8"]  # only what the bundle needs: faster
    w["params"].write_text(yaml.safe_dump(raw))
    convert.main(["--params", p, "--model", str(w["root"] / "student"), "--tokenize",
                  str(w["tokenize"]), "--out", str(w["root"] / "coreml"),
                  "--metrics", str(w["root"] / "c.json")])
    settings = {"temperature": 1.5, "score": "margin", "threshold": 0.25,
                "target_agreement": 0.995, "labels": list(LABELS)}  # as calibrate writes them
    (w["root"] / "calibration").mkdir()
    (w["root"] / "calibration" / contract.CALIBRATION_FILE).write_text(json.dumps(settings))
    result = bundle.main(["--params", p, "--student", str(w["root"] / "student"), "--coreml",
                          str(w["root"] / "coreml"), "--tokenize", str(w["tokenize"]),
                          "--calibration", str(w["root"] / "calibration"),
                          "--out", str(w["root"] / "app"),
                          "--metrics", str(w["root"] / "bundle.json")])
    app = w["root"] / "app"
    assert sorted(x.name for x in app.iterdir()) == [
        "PocketBert.mlpackage", "calibration.json", "labels.json", "tokenizer.json",
        "tokenizer_config.json", "tokenizer_parity.json", "vocab.txt", "wordpiece.json"]
    assert json.loads((app / contract.CALIBRATION_FILE).read_text()) == settings
    assert json.loads(coreml.read_back(app / "PocketBert.mlpackage")["metadata"][
        contract.DEFERRAL_METADATA]) == {"temperature": 1.5, "score": "margin", "threshold": 0.25}
    assert result["deferral.threshold"] == 0.25 and result["deferral.score"] == "margin"
    assert result["parity_cases"] >= len(tokenization.EDGE_CASES) + 8  # + test sentences
    vocab = (app / "vocab.txt").read_text(encoding="utf-8").splitlines()
    parity = json.loads((app / "tokenizer_parity.json").read_text(encoding="utf-8"))
    assert max(i for c in parity["cases"] for i in c["input_ids"]) < len(vocab)
    assert json.loads((app / "labels.json").read_text())["labels"] == list(LABELS)
    wordpiece = json.loads((app / "wordpiece.json").read_text())
    assert wordpiece["buckets"] == [16, 32]  # the app model's metadata, what the app pads to
    assert wordpiece["buckets"] == json.loads(coreml.read_back(
        app / "PocketBert.mlpackage")["metadata"]["buckets"])
    config = json.loads((app / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert result["size_mb"] == pytest.approx(sum(
        v for k, v in result.items() if k.startswith("files.")))

    # benchmark: every variant side by side, on the same tiny test split
    from stages import benchmark

    r = w["root"]
    for name in ("teacher", "student"):
        export.main(["--params", p, "--model", str(r / name), "--tokenize", str(w["tokenize"]),
                     "--out", str(r / f"onnx_{name}"), "--metrics", str(r / f"e_{name}.json")])
    convert.main(["--params", p, "--model", str(r / "teacher"), "--tokenize",
                  str(w["tokenize"]), "--out", str(r / "coreml_teacher"),
                  "--metrics", str(r / "ct.json")])
    raw["benchmark"].update({"warmup": 1, "batch_size": 4})
    w["params"].write_text(yaml.safe_dump(raw))
    from stages import baseline

    baseline.main(["--params", p, "--tokenize", str(w["tokenize"]), "--out", str(r / "baseline"),
                   "--metrics", str(r / "baseline.json")])
    run_fasttext_stage(w["params"], w["tokenize"], r / "fasttext")
    write_random_soft_labels(r / "soft", w["tokenize"], w["augmented"])
    run_model2vec_stage(w["params"], w["given_teacher"], {"tokenize": w["tokenize"],
                        "augmented": w["augmented"], "soft_label": r / "soft"}, r / "model2vec")
    raw = yaml.safe_load(w["params"].read_text())
    m = benchmark.main([
        "--params", p, "--teacher", str(r / "teacher"), "--student", str(r / "student"),
        "--export-teacher", str(r / "onnx_teacher"), "--export-student", str(r / "onnx_student"),
        "--convert-teacher", str(r / "coreml_teacher"), "--convert-student", str(r / "coreml"),
        "--tokenize", str(w["tokenize"]), "--baseline", str(r / "baseline"),
        "--fasttext", str(r / "fasttext"),
        "--model2vec", str(r / "model2vec"),
        "--metrics", str(r / "bench.json"), "--plots", str(r / "bench_plots")])
    assert m["test_rows"] == 8
    for variant in ("teacher.pytorch_fp32", "teacher.onnx_fp32", "teacher.onnx_int8",
                    "student.pytorch_fp32", "student.onnx_fp32", "student.onnx_int8",
                    "student.coreml_fp16", "baseline.tfidf_logreg", "baseline.fasttext",
                    "baseline.fasttext_quantized", "baseline.model2vec",
                    "baseline.model2vec_distilled"):
        for key in ("size_mb", "accuracy", "macro_f1", "ece", "agreement_with_teacher",
                    "macro_f1_ci_low", "macro_f1_ci_high", "agreement_with_teacher_ci_low",
                    "agreement_with_teacher_ci_high"):
            assert isinstance(m[f"{variant}.{key}"], float), (variant, key)
        assert (m[f"{variant}.macro_f1_ci_low"] <= m[f"{variant}.macro_f1"]
                <= m[f"{variant}.macro_f1_ci_high"]), variant
    # the baseline: measured in the same run like every variant, its size the pickle's
    assert m["baseline.tfidf_logreg.size_mb"] == pytest.approx(
        (r / "baseline" / "model.pkl").stat().st_size / 1e6)
    assert m["baseline.tfidf_logreg.latency_p95_ms"] >= m["baseline.tfidf_logreg.latency_p50_ms"]
    assert m["baseline.tfidf_logreg.latency_p50_ms"] > 0
    assert m["baseline.tfidf_logreg.throughput"] > 0
    assert isinstance(m["baseline.tfidf_logreg.parameters"], int)
    assert m["baseline.fasttext_quantized.size_mb"] == pytest.approx(
        (r / "fasttext" / "model.ftz").stat().st_size / 1e6)
    assert m["baseline.model2vec_distilled.size_mb"] == pytest.approx(
        sum(f.stat().st_size for f in (r / "model2vec" / "distilled").iterdir()) / 1e6)
    # eight test sentences and a random teacher: some resamples leave the teacher at macro-F1
    # 0, where the ratio is undefined, and then both bounds are null
    low, high = m["headline.macro_f1_ratio_ci_low"], m["headline.macro_f1_ratio_ci_high"]
    assert (low is None and high is None) or low <= m["headline.macro_f1_ratio"] <= high
    assert m["teacher.pytorch_fp32.agreement_with_teacher"] == 1.0
    assert m["teacher.onnx_fp32.accuracy"] == m["teacher.pytorch_fp32.accuracy"]
    assert m["student.onnx_int8.latency_p95_ms"] >= m["student.onnx_int8.latency_p50_ms"] > 0
    assert m["headline.size_ratio"] == pytest.approx(
        m["student.onnx_int8.size_mb"] / m["teacher.pytorch_fp32.size_mb"])
    if not coreml.can_predict():
        assert m["student.coreml_int8.measured_by"] == "reference executor"
        assert m["student.coreml_int8.latency_p50_ms"] is None  # numeric or null, no text
        assert "accuracy" not in m["teacher.coreml_fp16.note"]  # size only, said in a note
        assert "teacher.coreml_fp16.accuracy" not in m
    # the student Core ML fp16 program stays within fp16 round-off of the student in PyTorch
    # (test_mil_executor.FP16_TOLERANCE); labels then agree except at near ties
    assert m["student.coreml_fp16.max_abs_prob_diff"] <= 1e-2
    plots = r / "bench_plots"
    confusion = json.loads((plots / "confusion_student.json").read_text())
    assert len(confusion) == 8 and set(confusion[0]) == {"actual", "predicted"}
    tradeoff = json.loads((plots / "tradeoff.json").read_text())
    assert {row["variant"] for row in tradeoff} >= {"teacher.pytorch_fp32", "student.onnx_int8",
                                                    "teacher.onnx_int8", "baseline.tfidf_logreg"}
    assert json.loads((r / "bench.json").read_text()) == m
    _check_calibrate(w, raw)
    shutil.rmtree(r / "app")
    settings["labels"] = ["a", "b", "c", "d"]  # calibrated for another model: refused
    (r / "calibration" / contract.CALIBRATION_FILE).write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as stop:
        bundle.main(["--params", p, "--student", str(r / "student"), "--coreml",
                     str(r / "coreml"), "--tokenize", str(w["tokenize"]), "--calibration",
                     str(r / "calibration"), "--out", str(r / "app"),
                     "--metrics", str(r / "bundle.json")])
    assert stop.value.code == 2 and not (r / "app").exists()


def _check_calibrate(w: dict, raw: dict) -> None:
    """The calibrate stage on the tiny pipeline's outputs: its settings give, through the
    device rule (contract.answers) on the int8 model's own probabilities, exactly the test
    texts it reports as answered."""
    from pocketbert.data.soft_labels import logits_file
    from pocketbert.runtime import onnx_runner
    from stages import calibrate

    r, p = w["root"], str(w["params"])
    args = ["--params", p, "--export-student", str(r / "onnx_student"), "--tokenize",
            str(w["tokenize"]), "--soft-label", str(r / "soft"), "--baseline",
            str(r / "baseline"), "--out", str(r / "calibrated"), "--metrics",
            str(r / "cal.json"), "--plots", str(r / "cal_plots")]
    raw["calibrate"] = {"ood_csv": str(r / "missing.csv")}
    w["params"].write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as stop:
        calibrate.main(args)
    assert stop.value.code == 2 and not (r / "calibrated").exists()
    write_csv(r / "ood.csv", [{"text": t} for t in ("https://example.com", "x " * 300,
                                                     "Le chat dort sur le canapé.")])
    raw["calibrate"] = {"ood_csv": str(r / "ood.csv"), "target_agreement": 0.5}
    raw["benchmark"]["bootstrap_resamples"] = 200
    w["params"].write_text(yaml.safe_dump(raw))
    m = calibrate.main(args)
    settings = json.loads((r / "calibrated" / contract.CALIBRATION_FILE).read_text())
    assert settings["score"] == m["score"] in contract.CONFIDENCE_SCORES
    assert settings["temperature"] == m["temperature"] > 0
    model = onnx_runner.load_classifier(r / "onnx_student" / contract.ONNX_INT8_FILE, 32)
    test = tokenization.load(w["tokenize"])["test"]
    probs = evaluation.softmax(model.logits(list(test["text"])))
    decisions = [contract.answers(row, temperature=settings["temperature"],
                                  score=settings["score"], threshold=settings["threshold"])
                 for row in probs.tolist()]
    assert sum(decisions) == m["test.answered"]
    assert m["test.coverage"] == pytest.approx(sum(decisions) / len(decisions))
    # the ceiling, by brute force over every threshold the test scores allow
    conf = np.array([contract.confidence(contract.calibrated(row, settings["temperature"]),
                                         settings["score"]) for row in probs.tolist()])
    agree = probs.argmax(-1) == np.load(r / "soft" / logits_file("test")).argmax(-1)
    ceiling = max([float((conf >= t).mean()) for t in conf if agree[conf >= t].mean() >= 0.5],
                  default=0.0)
    assert m["test.coverage_ceiling"] == pytest.approx(ceiling)
    assert m["test.coverage_ceiling"] >= m["test.coverage"] or m["test.agreement"] < 0.5
    assert m["ood_rows"] == 3 and 0 <= m["ood.deferred_share"] <= 1
    for key in ("test.ece_before", "test.ece_after", "test.nll_before", "test.nll_after"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    curve = json.loads((r / "cal_plots" / "risk_coverage.json").read_text())
    assert [row["coverage"] for row in curve] == list(calibrate.COVERAGES)
    assert curve[-1]["student_int8_agreement"] == pytest.approx(
        float((probs.argmax(-1) == np.load(r / "soft" / logits_file("test")).argmax(-1)).mean()))
    _check_calibration_texts(w, raw, args, model)


def _check_calibration_texts(w: dict, raw: dict, args: list[str], model) -> None:
    """Calibration texts (unlabelled texts kept from training, with the teacher's labels)
    join the validation split in the threshold's choice. Here the teacher agrees with the
    student on every validation text, and the calibration texts are those same texts with
    the teacher disagreeing on each: at every threshold half the answered selection texts
    disagree, so at target 0.9 everything is deferred, while validation alone answers it all."""
    from pocketbert.data.soft_labels import CALIBRATION, META_FILE, SoftLabels
    from stages import calibrate

    r = w["root"]
    texts = list(tokenization.load(w["tokenize"])["validation"]["text"])
    student = model.logits(texts).argmax(-1)
    rows = json.loads((r / "soft" / META_FILE).read_text())["rows"]
    stored = dict(SoftLabels.read(r / "soft", tuple(LABELS), rows).logits)
    stored["validation"] = np.eye(4, dtype=np.float32)[student] * 5  # the student's labels
    raw["calibrate"]["target_agreement"] = 0.9
    w["params"].write_text(yaml.safe_dump(raw))
    soft = args.index("--soft-label") + 1
    results = {}
    for name, groups, texts_of in (("alone", stored, {}), ("pooled", {
            **stored, CALIBRATION: np.eye(4, dtype=np.float32)[(student + 1) % 4] * 5},
            {CALIBRATION: texts})):
        folder = r / f"soft_{name}"
        folder.mkdir()
        SoftLabels(tuple(LABELS), groups, texts_of).write(folder)
        args[soft] = str(folder)
        results[name] = calibrate.main(args)
    alone, pooled = results["alone"], results["pooled"]
    key = f"scores.{alone['score']}.selection"
    assert alone["calibration_rows"] == 0 and pooled["calibration_rows"] == len(texts)
    assert (alone[f"{key}.answered"], alone[f"{key}.coverage"]) == (len(texts), 1.0)
    assert alone["threshold"] is not None
    assert pooled["threshold"] is None and pooled["test.answered"] == 0
    assert all(pooled[f"scores.{s}.selection.answered"] == 0 for s in contract.CONFIDENCE_SCORES)
    # beside it, the choice validation alone would have made: the other run's
    assert not any(key.startswith("validation_alone.") for key in alone)
    assert (pooled["validation_alone.threshold"], pooled["validation_alone.test.answered"]) == (
        alone["threshold"], alone["test.answered"])


def test_int8_below_the_agreement_target_is_flagged_and_warned(tiny_world, monkeypatch) -> None:
    import onnx
    from onnx import numpy_helper

    # a quantizer that ships a broken model: the fp32 graph with its classifier's weights
    # negated, so the top label moves on nearly every text (the check must catch it)
    def broken(source, target, per_channel, reduce_range) -> None:
        model = onnx.load(str(source))
        head = max((i for i in model.graph.initializer if "classifier" in i.name
                    and len(i.dims) == 2), key=lambda i: i.dims[0] * i.dims[1])
        head.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(head), head.name))
        onnx.save(model, str(target))

    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw.setdefault("export", {})["min_int8_agreement"] = 0.5  # chance is 1/4 on 4 labels
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    good = export.main(_export_args(tiny_world, "good"))
    assert good["int8.meets_agreement_target"] is True
    assert good["int8.top1_agreement_with_fp32"] >= 0.5
    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    with pytest.warns(UserWarning, match="below export.min_int8_agreement 0.5"):
        bad = export.main(_export_args(tiny_world, "bad"))
    assert bad["int8.meets_agreement_target"] is False
    assert bad["int8.top1_agreement_with_fp32"] < 0.5


def test_a_variant_giving_nan_fails_the_convert_stage_and_leaves_nothing(tiny_world, monkeypatch,
                                                                          capsys) -> None:
    from pocketbert.export import mil_executor

    # a program that overflows on a device: every probability NaN in the reference executor
    monkeypatch.setattr(mil_executor.Executor, "probabilities",
                        lambda self, ids: np.full(len(LABELS), np.nan))
    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw["convert"] = {"variants": ["fp16"], "buckets": [16, 32]}
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as exc:
        convert.main(_convert_args(tiny_world, "nan"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "NaN or infinite probability" in err and "fp16" in err
    assert not (tiny_world["root"] / "nan").exists()
    assert not (tiny_world["root"] / "nan.json").exists()


def test_a_variant_that_disagrees_with_pytorch_is_flagged() -> None:
    from pocketbert.benchmarks import benchmarking

    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    same = benchmarking.VariantResult("same", 1.0, probs=reference.copy())
    benchmarking.compare_to_reference(same, reference, min_agreement=0.99)
    assert same.extra["flagged"] is False and same.extra["top1_agreement_with_pytorch"] == 1.0
    swapped = benchmarking.VariantResult("swapped", 1.0, probs=reference[:, ::-1].copy())
    benchmarking.compare_to_reference(swapped, reference, min_agreement=0.99)
    assert swapped.extra["flagged"] is True
    assert swapped.extra["top1_agreement_with_pytorch"] == 0.0
    assert swapped.extra["max_abs_prob_diff"] == pytest.approx(0.8)
