"""teacher.mode api through the stages: teacher, soft_label, train_student and the benchmark's
teacher row, against pocketbert's own classifier server (a tiny in-process BERT) on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from conftest import LABELS, ROOT, default_params, files_under, secret_hits

from pocketbert.apps import serving
from pocketbert.benchmarks import benchmarking
from pocketbert.core import params
from pocketbert.core.errors import ParamsError, PocketbertError
from pocketbert.data import tokenization
from stages import benchmark, soft_label, teacher, train_student

# must reach the server's request headers and no file, output or log; with characters that
# URL encoding changes, so that its URL-encoded form differs from it
SECRET = "s3cr3t/Stage+Key=4a5b6c"
KEY_VAR = "POCKETBERT_TEST_API_KEY"


@pytest.fixture
def endpoint(tiny_world) -> Iterator[serving.ClassifierServer]:
    """tiny_world's given teacher served over HTTP, as the pipeline's tokenize.max_length."""
    server = serving.make_server(serving.Classifier(tiny_world["given_teacher"], max_length=32),
                                 port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api_world(tiny_world, endpoint, write_params, monkeypatch) -> dict[str, Path]:
    """tiny_world with teacher.mode api against ``endpoint`` and an API key in the env."""
    monkeypatch.setenv(KEY_VAR, SECRET)
    w = dict(tiny_world)
    w["params"] = write_params(
        teacher={"model": str(w["given_teacher"]), "mode": "api", "api_url": endpoint.url,
                 "api_headers": {"Authorization": f"Bearer ${{{KEY_VAR}}}"},
                 "api_batch_size": 5, "api_concurrency": 2, "api_requests_per_second": 1000.0},
        train_student={"init": "pretrained", "backbone": str(w["given_teacher"]),
                       "epochs": 2, "batch_size": 8, "copy_layers": [0, 2], "vocab_reserve": 0},
        tokenize={"max_length": 32})
    w["cache"] = w["root"] / ".cache" / "api"
    return w


def _teacher(w: dict[str, Path]) -> tuple[Path, dict]:
    out = w["root"] / "models" / "teacher"
    metrics = teacher.main(["--params", str(w["params"]), "--tokenize", str(w["tokenize"]),
                            "--out", str(out), "--metrics", str(w["root"] / "m" / "teacher.json"),
                            "--api-cache", str(w["cache"])])
    return out, metrics


def _soft_label(w: dict[str, Path], teacher_dir: Path, name: str = "soft_label",
                ) -> tuple[Path, dict]:
    out = w["root"] / name
    metrics = soft_label.main([
        "--params", str(w["params"]), "--teacher", str(teacher_dir),
        "--tokenize", str(w["tokenize"]), "--augmented", str(w["augmented"]), "--out", str(out),
        "--metrics", str(w["root"] / "m" / f"{name}.json"), "--api-cache", str(w["cache"])])
    return out, metrics


def _train_student(w: dict[str, Path], teacher_dir: Path, soft: Path,
                   params_file: Path | None = None) -> dict:
    """Run train_student on the API teacher's soft labels; its metrics."""
    return train_student.main([
        "--params", str(params_file or w["params"]), "--teacher", str(teacher_dir),
        "--tokenize", str(w["tokenize"]), "--augmented", str(w["augmented"]),
        "--soft-label", str(soft), "--out", str(w["root"] / "models" / "student"),
        "--metrics", str(w["root"] / "m" / "train_student.json"),
        "--curves", str(w["root"] / "m" / "curves")])


def _lock_params(params_file: Path, stages: Sequence[str]) -> dict[str, dict]:
    """The params part of a dvc.lock for ``stages``, built as dvc builds it: each entry of the
    stage's ``params`` in dvc.yaml (a whole section or a dotted key) with its value as written
    in ``params_file`` (dvc reads the file; it fills in no environment variable)."""
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    written = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    record: dict[str, dict] = {}
    for name in stages:
        entries = {}
        for key in declared[name].get("params", []):
            assert isinstance(key, str), key  # all of pocketbert's come from params.yaml
            value = written
            for part in key.split("."):
                value = value[part]
            entries[key] = value
        record[name] = {"params": {"params.yaml": entries}}
    return record


def _local_log_softmax(folder: Path, texts: list[str]) -> np.ndarray:
    """The served model run directly on ``texts``: log-softmax of its logits, float64."""
    from pocketbert.training import modeling

    model = modeling.load_classifier(folder, LABELS)
    tokenizer = tokenization.load_tokenizer(folder)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=32,
                        return_tensors="pt")
    with torch.inference_mode():
        logits = model(**encoded).logits  # [texts, labels]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def test_teacher_and_soft_label_ask_the_api_and_store_log_probabilities(api_world) -> None:
    w = api_world
    teacher_dir, t_metrics = _teacher(w)
    # no weights: the folder describes the endpoint, without the headers
    assert sorted(p.name for p in teacher_dir.iterdir()) == ["endpoint.json"]
    endpoint = json.loads((teacher_dir / "endpoint.json").read_text())
    assert endpoint["url"] == params.load(w["params"], "teacher").api_url
    assert endpoint["labels"] == list(LABELS) and "headers" not in json.dumps(endpoint)
    data = tokenization.load(w["tokenize"], w["augmented"])
    n_eval = len(data["validation"]) + len(data["test"])
    assert t_metrics["api.texts_sent"] == n_eval and t_metrics["api.cache_hits"] == 0
    assert t_metrics["api.calls"] == -(-n_eval // 5)  # batches of api_batch_size 5
    for split in ("validation", "test"):  # the API's own scores, as the local model's
        local = _local_log_softmax(w["given_teacher"], list(data[split]["text"]))
        gold = np.asarray(data[split]["label"])
        assert t_metrics[f"{split}.accuracy"] == pytest.approx(
            float((local.argmax(-1) == gold).mean()))

    soft, metrics = _soft_label(w, teacher_dir)
    for split in ("train", "validation", "test"):
        stored = np.load(soft / f"{split}_logits.npy")
        expected = _local_log_softmax(w["given_teacher"], list(data[split]["text"]))
        assert stored.dtype == np.float32 and stored.shape == (len(data[split]), len(LABELS))
        np.testing.assert_allclose(stored, expected, atol=1e-5)
        assert metrics[f"{split}.rows"] == len(data[split])
    assert json.loads((soft / "meta.json").read_text())["kind"] == "logits"
    # validation and test were answered for the teacher stage: only train went out
    assert metrics["api.cache_hits"] == n_eval
    assert metrics["api.texts_sent"] == len(set(data["train"]["text"]))

    _, again = _soft_label(w, teacher_dir, "soft_label_again")  # everything from the cache
    assert again["api.calls"] == 0 and again["api.texts_sent"] == 0
    assert again["api.cache_hits"] == len(set(data["train"]["text"])) + n_eval


def test_no_secret_in_any_output_log_or_params(api_world, capfd, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)  # every library's log, httpx's and httpcore's included
    w = api_world
    params_before = w["params"].read_bytes()
    sent: list[str | None] = []  # the Authorization header of every request the stages make
    real_send = httpx.Client.send

    def recording_send(client: httpx.Client, request: httpx.Request, **kw) -> httpx.Response:
        sent.append(request.headers.get("Authorization"))
        return real_send(client, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", recording_send)
    # every stage that runs with teacher.mode api in the tiny world (the benchmark needs the
    # export and convert outputs; it reads the API's answers from soft_label, not the API)
    teacher_dir, _ = _teacher(w)
    soft, _ = _soft_label(w, teacher_dir)
    _train_student(w, teacher_dir, soft)
    assert sent and set(sent) == {f"Bearer {SECRET}"}  # the key was in play, in every request
    out, err = capfd.readouterr()
    # the stages log their params as read: the variable's name, never its value
    assert f"Authorization: Bearer ${{{KEY_VAR}}}" in err
    files = files_under(w["root"])
    for produced in ("models/student/params.yaml", "m/train_student.json", "m/teacher.json",
                     "m/soft_label.json", ".cache/api/answers.sqlite", "soft_label/meta.json",
                     "models/teacher/endpoint.json"):
        assert str(w["root"] / produced) in files, produced
    assert any(name.startswith(str(w["root"] / "m" / "curves")) for name in files)
    # a dvc.lock-like record of the params: the stages left params.yaml as it was, so dvc
    # would record the ${VAR} reference and never the value
    assert w["params"].read_bytes() == params_before
    lock = _lock_params(w["params"], ("teacher", "soft_label", "train_student", "benchmark"))
    reference = {"Authorization": f"Bearer ${{{KEY_VAR}}}"}
    assert lock["teacher"]["params"]["params.yaml"]["teacher"]["api_headers"] == reference
    assert lock["soft_label"]["params"]["params.yaml"]["teacher.api_headers"] == reference
    for name in ("train_student", "benchmark"):  # they do not read the headers at all
        assert KEY_VAR not in json.dumps(lock[name])
    outputs = {"stdout": out, "stderr": err, "the log": caplog.text,
               "dvc.lock-like record": yaml.safe_dump(lock),
               **{f"log record {i}": str(r.getMessage()) for i, r in enumerate(caplog.records)}}
    assert secret_hits(SECRET, {**files, **outputs}) == []

    # the negative control: the same scan finds the secret, in each form, where it is written
    leak_txt = w["root"] / "models" / "student" / "leak.txt"
    leak_txt.write_text(urllib.parse.quote(SECRET, safe=""), encoding="utf-8")
    # a Basic header's user:secret in base64: "user:" is 5 bytes, so the secret's whole
    # 3-byte groups start at its byte 1 (5 + 1 = 6)
    leak_bin = w["root"] / ".cache" / "api" / "leak.bin"
    leak_bin.write_bytes(base64.b64encode(f"user:{SECRET}".encode()))
    logging.getLogger("pocketbert").warning("token %s", SECRET)
    print(SECRET, file=sys.stderr)
    _, err = capfd.readouterr()
    found = secret_hits(SECRET, {**files_under(w["root"]), "stderr": err, "the log": caplog.text})
    assert {f"{leak_txt}: url-encoded", f"{leak_bin}: base64 at offset 1", "stderr: plain",
            "the log: plain"} <= set(found), found


def test_soft_label_refuses_a_teacher_folder_of_another_endpoint(api_world, capsys) -> None:
    w = api_world
    teacher_dir, _ = _teacher(w)
    written = json.loads((teacher_dir / "endpoint.json").read_text())
    written["url"] = "http://127.0.0.1:9/elsewhere"
    (teacher_dir / "endpoint.json").write_text(json.dumps(written))
    with pytest.raises(SystemExit) as exc:
        _soft_label(w, teacher_dir)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "endpoint.json: url differ" in err and "dvc repro teacher" in err
    assert not (w["root"] / "soft_label").exists()


def test_api_stages_without_the_cache_option_name_it(api_world, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        teacher.main(["--params", str(api_world["params"]),
                      "--tokenize", str(api_world["tokenize"]),
                      "--out", str(api_world["root"] / "t"), "--metrics",
                      str(api_world["root"] / "t.json")])
    assert exc.value.code == 2 and "pass --api-cache FOLDER" in capsys.readouterr().err


def test_an_endpoint_that_is_down_fails_the_teacher_stage_cleanly(api_world, held_port,
                                                                  write_params, capsys) -> None:
    # held_port: bound, not listening, for the whole test: refused, and not another
    # program's server (a port just freed could be)
    p = params.load(api_world["params"], "teacher")
    down = f"http://127.0.0.1:{held_port}/predict"
    raw = default_params()
    raw["teacher"].update(params.as_dict(p), api_url=down, api_max_retries=0)
    raw["tokenize"]["max_length"] = 32
    api_world["params"] = write_params(raw=raw)
    with pytest.raises(SystemExit) as exc:
        _teacher(api_world)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {down}: cannot reach the endpoint (ConnectError" in err
    assert secret_hits(SECRET, {"stderr": err}) == []
    assert not (api_world["root"] / "models" / "teacher").exists()


def test_train_student_with_an_api_teacher(api_world, write_params, capsys) -> None:
    w = api_world
    teacher_dir, _ = _teacher(w)
    soft, _ = _soft_label(w, teacher_dir)
    metrics = _train_student(w, teacher_dir, soft)
    assert (w["root"] / "models" / "student" / "model.safetensors").is_file()
    assert "teacher.parameters" not in metrics and "size_ratio" not in metrics
    # the teacher's scores are the API's answers as soft_label stored them
    gold = np.asarray(tokenization.load(w["tokenize"])["test"]["label"])
    api_pred = np.load(soft / "test_logits.npy").argmax(-1)
    assert metrics["teacher.test.accuracy"] == pytest.approx(float((api_pred == gold).mean()))
    assert 0 <= metrics["student.test.agreement_with_teacher"] <= 1

    raw = default_params()
    raw["teacher"].update(params.as_dict(params.load(w["params"], "teacher")))
    raw["train_student"].update(init="copy")
    copy_params = write_params(raw=raw, name="copy.yaml")
    with pytest.raises(SystemExit) as exc:
        _train_student(w, teacher_dir, soft, copy_params)
    assert exc.value.code == 2
    # found while the stage runs, and still named after the params file it was given
    assert (f"error: {copy_params}: 'train_student.init' is 'copy', but teacher.mode api"
            in capsys.readouterr().err)


def test_benchmark_scores_the_api_from_the_stored_test_answers(tmp_path) -> None:
    gold = np.array([0, 1, 2, 3, 0, 1])
    logits = np.log(np.full((6, 4), 0.1, dtype=np.float32))
    logits[np.arange(6), [0, 1, 2, 3, 1, 1]] = np.log(0.7)  # the API errs on row 4
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "logits", "labels": list(LABELS)}))
    np.save(tmp_path / "test_logits.npy", logits)
    b = params.BenchmarkParams(bootstrap_resamples=100)
    result = benchmark._api_teacher({"soft_label": tmp_path}, gold, LABELS, b)
    assert result.name == "teacher.api" and result.size_mb is None
    assert result.latency_p50_ms is None and result.throughput is None
    assert result.scores["accuracy"] == pytest.approx(5 / 6)
    np.testing.assert_allclose(result.probs.sum(-1), 1.0)
    np.testing.assert_allclose(result.probs[0], [0.7, 0.1, 0.1, 0.1], atol=1e-6)

    student = benchmarking.VariantResult("s", 5.0, 10, np.eye(4)[[0, 1, 2, 3, 1, 1]],
                                         {"macro_f1": result.scores["macro_f1"]},
                                         latency_p50_ms=1.0)
    h = benchmarking.headline({"s": student, "teacher.api": result}, gold, student="s",
                              teacher="teacher.api", params=b)
    assert h["macro_f1_ratio"] == 1.0
    assert h["size_ratio"] is None and h["size_target_met"] is None
    assert h["p50_speedup"] is None and h["speedup_target_met"] is None

    with pytest.raises(PocketbertError, match="pass --soft-label"):
        benchmark._api_teacher({}, gold, LABELS, b)
    with pytest.raises(PocketbertError, match="run 'dvc repro soft_label'"):
        benchmark._api_teacher({"soft_label": tmp_path}, gold[:5], LABELS, b)


@pytest.mark.parametrize("section", ["export", "convert"])
def test_model_lists_for_the_foreach_stages_are_checked(section) -> None:
    assert params.parse_section(section, {"models": ["student"]}).models == ("student",)
    for models, message in ((["teacher"], "keep student"), (["student", "student"], "repeated"),
                            (["student", "api"], re.escape(f"'{section}.models[1]'"))):
        with pytest.raises(ParamsError, match=message):
            params.parse_section(section, {"models": models})


def test_tokenize_uses_the_student_backbone_tokenizer_for_an_api_teacher(tmp_path,
                                                                         write_params) -> None:
    from conftest import sentences, tiny_tokenizer

    from pocketbert.data import dataset
    from stages import tokenize

    backbone = tmp_path / "backbone"
    tiny_tokenizer().save_pretrained(str(backbone))
    rows = {split: [dataset.Example(text, label, i + 2) for label in LABELS
                    for i, text in enumerate(sentences(label, 12)[k : k + 2])]
            for split, k in (("train", 0), ("validation", 2), ("test", 4))}
    dataset.write_labels(tmp_path / "split" / "labels.json", LABELS)
    for split in ("validation", "test"):
        dataset.write_examples(tmp_path / "split" / f"{split}.csv", rows[split])
    (tmp_path / "augment").mkdir()
    dataset.write_examples(tmp_path / "augment" / "train.csv", rows["train"])
    params_file = write_params(  # teacher.model is not read: it names no folder here
        teacher={"mode": "api", "api_url": "http://127.0.0.1:9/", "model": str(tmp_path / "no")},
        train_student={"init": "pretrained", "backbone": str(backbone)},
        tokenize={"max_length": 32})
    metrics = tokenize.main(["--params", str(params_file), "--split", str(tmp_path / "split"),
                             "--augment", str(tmp_path / "augment"),
                             "--written", str(tmp_path / "written"),
                             "--augmented", str(tmp_path / "augmented"),
                             "--metrics", str(tmp_path / "tokenize.json")])
    assert metrics["vocab_size"] == len(tiny_tokenizer())
    saved = tokenization.load_tokenizer(tmp_path / "written" / "tokenizer")
    assert saved.get_vocab() == tiny_tokenizer().get_vocab()
    data = tokenization.load(tmp_path / "written")
    assert data["test"]["input_ids"][0] == tiny_tokenizer()(data["test"]["text"][0])["input_ids"]


def test_results_table_names_the_api_teacher_and_the_ratios_it_cannot_have() -> None:
    from pocketbert.apps import results

    m = {"test_rows": 4, "threads": 1, "teacher.api.size_mb": None,
         "teacher.api.parameters": None, "teacher.api.macro_f1": 0.9,
         "teacher.api.latency_p50_ms": None, "teacher.api.measured_by": "API",
         "student.onnx_int8.size_mb": 6.0, "student.onnx_int8.macro_f1": 0.88,
         "student.onnx_int8.latency_p50_ms": 2.0,
         "headline.student_variant": "student.onnx_int8", "headline.target_size_ratio": 0.0833,
         "headline.target_macro_f1_ratio": 0.97, "headline.target_speedup": 10.0,
         "headline.size_ratio": None, "headline.macro_f1_ratio": 0.88 / 0.9,
         "headline.p50_speedup": None, "headline.size_target_met": None,
         "headline.macro_f1_target_met": True, "headline.speedup_target_met": None}
    table = results.results_table(m)
    row = next(line for line in table.splitlines() if line.startswith("| `teacher.api`"))
    assert row.split(" | ")[1] == "not measured here"  # its size
    assert "against `teacher.api`" in table and "macro-F1 ratio 0.978" in table
    assert "size ratio not measured" in table and "p50 speed-up not measured" in table


def test_export_and_convert_run_for_the_models_params_list() -> None:
    import yaml
    from conftest import ROOT

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert dvc["export"]["foreach"] == "${export.models}"
    assert dvc["convert"]["foreach"] == "${convert.models}"
    # the default pipeline keeps both models
    assert params.load(ROOT / "params.yaml", "export").models == ("teacher", "student")
    assert params.load(ROOT / "params.yaml", "convert").models == ("teacher", "student")
