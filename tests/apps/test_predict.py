"""`pocketbert predict` on a tiny exported model: output formats, inputs, errors, no torch."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    LABELS,
    default_params,
    sentences,
    tiny_classifier,
    tiny_tokenizer,
    write_tokenized_splits,
)

from pocketbert.apps import cascade, cli

TEXTS = [sentences("condition")[0], sentences("notice")[3], "the pump", "Kettle!"]
LONG = " ".join(sentences("process", 12))  # ~150 tokens: beyond the tiny model's 64 positions


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout: dvc.yaml, params.yaml (tokenize.max_length 32) and models/export/student/."""
    from stages import export

    root = tmp_path_factory.mktemp("project")
    tokenizer = tiny_tokenizer()
    teacher_dir = root / "given_teacher"
    tiny_classifier(len(tokenizer)).save_pretrained(str(teacher_dir))
    tokenizer.save_pretrained(str(teacher_dir))
    tok_dir = root / "tokenize"
    write_tokenized_splits(tok_dir, tokenizer)
    data = default_params()
    data["tokenize"]["max_length"] = 32
    # the API client of --fallback: one quick retry, so a refused connection fails fast
    data["teacher"].update({"api_max_retries": 1, "api_backoff_s": 0.05, "api_max_wait_s": 0.1})
    (root / "params.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    (root / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")  # marks the checkout
    export.main(["--params", str(root / "params.yaml"), "--model", str(teacher_dir),
                 "--tokenize", str(tok_dir), "--out", str(root / "models/export/student"),
                 "--metrics", str(root / "export_student.json")])
    return root


@pytest.fixture
def in_world(world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(world)
    return world


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert cli.main(["predict", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def expect_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run predict expecting exit status 2 and one 'error:' line on stderr; return that line."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", *args])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


def reference_probs(model: Path, texts: list[str], max_length: int,
                    batch: bool = True) -> np.ndarray:
    """Softmax of onnxruntime logits, with the transformers tokenizer: all texts in one batch,
    or (``batch=False``) one text per call.

    The session is onnx_runner.session, with the graph optimizations predict runs with: a
    default session fuses Add + LayerNormalization into SkipLayerNormalization, whose kernel
    rounds differently; in an int8 graph the normalised values feed DynamicQuantizeLinear,
    where one rounding flip moves an activation by a whole quantization step, far beyond any
    float tolerance, and whether it happens depends on the CPU's kernels (AVX2 or VNNI)."""
    from transformers import AutoTokenizer

    from pocketbert.runtime import onnx_runner

    tokenizer = AutoTokenizer.from_pretrained(str(model.parent))
    session = onnx_runner.session(model)
    rows = []
    for group in [texts] if batch else [[t] for t in texts]:
        enc = tokenizer(group, truncation=True, max_length=max_length, padding=True,
                        return_tensors="np")
        rows.append(session.run(["logits"], {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
    z = np.concatenate(rows).astype(np.float64)
    return np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(
        1, keepdims=True)


def test_table_shows_label_confidence_and_every_probability(in_world, capsys) -> None:
    assert cli.main(["predict", *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["text", "label", "confidence", *LABELS]
    assert len(lines) == 3
    for line, text in zip(lines[1:], TEXTS[:2], strict=True):
        assert line.startswith(text[:40])
        cells = line.split()
        probs = [float(x) for x in cells[-len(LABELS):]]
        label, confidence = cells[-len(LABELS) - 2], float(cells[-len(LABELS) - 1])
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)  # four values rounded to 4 places
        assert label == LABELS[int(np.argmax(probs))] and confidence == max(probs)
    # columns are aligned: every label's column ends at the same place on every line
    assert len({len(line) for line in lines}) == 1


@pytest.mark.parametrize("model", ["model.int8.onnx", "model.onnx"])
def test_json_matches_onnxruntime_softmax(in_world, capsys, model: str) -> None:
    path = in_world / "models/export/student" / model
    texts = [*TEXTS, LONG]  # LONG runs only because it is truncated at params.yaml's 32
    args = [] if model == "model.int8.onnx" else ["--model", str(path)]  # default: int8
    out = run_json(capsys, *args, *texts)
    # int8 runs one text per call (its activation scales are per call); fp32 is batched
    expected = reference_probs(path, texts, 32, batch=model == "model.onnx")
    assert [r["text"] for r in out] == texts
    assert [r["truncated"] for r in out] == [False] * len(TEXTS) + [True]
    # The same graph, optimizations and kernels on the same token ids: the only differences
    # are float32 round-off (tokenizer ids are equal, and the batched fp32 reference pads the
    # same way up to the batch's longest text). Logits of a few units carry relative round-off
    # ~1e-7 each; through softmax (|dp| <= |dz| / 2) that stays far below 1e-5. The int8 model
    # is deterministic for identical inputs with identical session options, so it meets the
    # same bound.
    for row, p in zip(out, expected, strict=True):
        assert list(row["probabilities"]) == list(LABELS)
        assert list(row["probabilities"].values()) == pytest.approx(list(p), abs=1e-5)
        assert row["label"] == LABELS[int(p.argmax())]
        assert row["confidence"] == pytest.approx(p.max(), abs=1e-5)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)


def test_fp32_rows_do_not_depend_on_batch_padding(in_world, capsys) -> None:
    model = str(in_world / "models/export/student/model.onnx")
    together = run_json(capsys, "--model", model, *TEXTS)
    alone = [run_json(capsys, "--model", model, text)[0] for text in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert list(a["probabilities"].values()) == pytest.approx(
            list(b["probabilities"].values()), abs=1e-5)


def test_int8_rows_do_not_depend_on_the_batch(in_world, capsys) -> None:
    """Dynamic int8 scales activations per call: predict runs it one text per call, so a text
    gets the same probabilities alone and beside 31 long texts (issue: 0.99412 vs 0.99385)."""
    from pocketbert.runtime import onnx_runner

    model = in_world / "models/export/student/model.int8.onnx"
    text, crowd = TEXTS[0], [LONG] * 16 + [" ".join(sentences("notice", 8))] * 15
    alone = run_json(capsys, "--model", str(model), text)[0]["probabilities"]
    together = run_json(capsys, "--model", str(model), text, *crowd)[0]["probabilities"]
    assert together == alone  # identical, not merely close
    # the batch does change int8 logits: batching them would have failed the line above
    clf = onnx_runner.load_classifier(model, 32)
    seqs = [e.ids for e in clf.tokenizer.encode_batch([text, *crowd])]
    batched = onnx_runner.predict_logits(clf.session, seqs, clf.pad_id, batch_size=32)[0]
    single = onnx_runner.predict_logits(clf.session, seqs[:1], clf.pad_id, batch_size=1)[0]
    assert np.abs(batched - single).max() > 1e-4
    assert clf.batch_size == 1
    assert onnx_runner.load_classifier(model.with_name("model.onnx"), 32).batch_size > 1


def test_cpu_features_from_cpuinfo(tmp_path) -> None:
    from pocketbert.runtime import onnx_runner

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n",
                    encoding="utf-8")
    found = onnx_runner.cpu_features(info)
    assert found["cpu.avx2"] is found["cpu.avx512f"] is True
    assert found["cpu.avx512_vnni"] is found["cpu.vnni"] is False
    info.write_text("flags : avx2 avx_vnni\n", encoding="utf-8")
    assert onnx_runner.cpu_features(info)["cpu.vnni"] is True
    absent = onnx_runner.cpu_features(tmp_path / "missing")  # not Linux: unknown, not False
    assert set(absent) == set(found) and all(v is None for v in absent.values())


@pytest.mark.parametrize("blank", ["\u200b\u200b", "\x00\x01", "\u200e\u00ad\ufeff"])
def test_text_empty_after_normalisation_is_refused_with_its_line(
        in_world, capsys, tmp_path, monkeypatch, blank: str) -> None:
    from pocketbert.data import dataset

    reason = dataset.blank_reason(blank)
    assert reason is not None and reason.startswith("only U+")
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{TEXTS[0]}\n\n{blank}\n{TEXTS[1]}\n", encoding="utf-8")
    line = expect_error(capsys, "--file", str(texts))
    assert line == (f"error: {texts} line 3: the text is empty after normalisation: it holds "
                    f"{reason}; write a sentence or delete the line")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        f"{TEXTS[0]}\r\n{blank}\r\n".encode())))
    assert expect_error(capsys).startswith("error: standard input line 2: the text is empty")
    line = expect_error(capsys, TEXTS[0], blank)
    assert line.startswith("error: the command line argument 2: the text is empty")
    assert line.endswith("delete the argument")


@contextlib.contextmanager
def served(folder: Path, cwd: Path, max_length: int, *options: str):
    """A real `pocketbert serve` process on 127.0.0.1 (port 0), yielding its URL; stopped with
    Ctrl-C (SIGINT) at the end, which must exit 0, and killed if a test failed before."""
    import signal

    cmd = [sys.executable, "-m", "pocketbert.apps.cli", "serve", str(folder), "--port", "0",
           "--max-length", str(max_length), *options]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline()  # "serving DIR (labels ...) at http://127.0.0.1:N/; ..."
        assert " at http://127.0.0.1:" in first, first + proc.stderr.read()
        yield first.split(" at ")[1].split(";")[0]
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def ask(url: str, texts: list[str] | None = None) -> dict:
    """The server's JSON answer to a POST of ``texts``, or to a GET when None."""
    import urllib.request

    data = None if texts is None else json.dumps({"texts": texts}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_serve_answers_a_request(world, tmp_path) -> None:
    """`pocketbert serve` parses its options, loads the folder and answers one real POST."""
    with served(world / "given_teacher", tmp_path, 16) as url:
        answer = ask(url, TEXTS[:2])
    assert answer["labels"] == list(LABELS)
    assert len(answer["probabilities"]) == 2
    assert all(sum(p.values()) == pytest.approx(1.0, abs=1e-5)
               for p in answer["probabilities"])


def test_serve_port_errors(world, capsys) -> None:
    import socket

    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", str(world / "given_teacher"), "--port", "70000"])
    assert exc.value.code == 2 and "not a TCP port" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exc:
            cli.main(["serve", str(world / "given_teacher"), "--port", str(port),
                      "--max-length", "16"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_max_length_option_truncates(in_world, capsys) -> None:
    model = in_world / "models/export/student/model.onnx"
    short = run_json(capsys, "--model", str(model), "--max-length", "8", LONG)[0]
    expected = reference_probs(model, [LONG], 8)[0]
    assert list(short["probabilities"].values()) == pytest.approx(list(expected), abs=1e-5)
    assert cli.default_max_length() == 32  # from params.yaml in the current folder


def test_default_max_length_without_params(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.default_max_length() == 128
    (tmp_path / "params.yaml").write_text("tokenize:\n  max_length: 64\n", encoding="utf-8")
    assert cli.default_max_length() == 64
    # predict reads the params.yaml of the model's checkout, and names it when it is invalid
    (tmp_path / "params.yaml").write_text("tokenize:\n  max_length: 4\n", encoding="utf-8")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    line = expect_error(capsys, "--model", str(tmp_path / "x.onnx"), "some text")
    assert "tokenize.max_length" in line and "--max-length" in line


@pytest.mark.parametrize("args", [[], ["-"], ["--file", "-"]])
def test_stdin_input(in_world, capsys, monkeypatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        f"{TEXTS[0]}\n\n   \n{TEXTS[1]}\r\n".encode())))
    out = run_json(capsys, *args)
    assert [r["text"] for r in out] == TEXTS[:2]


def test_file_input(in_world, capsys, tmp_path) -> None:
    path = tmp_path / "texts.txt"
    # a BOM, CRLF line ends, blank lines and no newline at the end
    path.write_bytes(("\ufeff" + f"{TEXTS[0]}\r\n\r\n{TEXTS[2]}\n\n{TEXTS[3]}").encode())
    out = run_json(capsys, "--file", str(path))
    assert [r["text"] for r in out] == [TEXTS[0], TEXTS[2], TEXTS[3]]
    assert out == run_json(capsys, TEXTS[0], TEXTS[2], TEXTS[3])


def test_missing_model_names_the_dvc_target(tmp_path, monkeypatch, capsys) -> None:
    from pocketbert.runtime import onnx_runner

    monkeypatch.chdir(tmp_path)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    monkeypatch.setattr(onnx_runner, "CHECKOUT", checkout)
    # no --model: both folders looked in, absolute, where to build it, and --model
    line = expect_error(capsys, "some text")
    assert line == (f"error: no model.int8.onnx in {tmp_path / 'models/export/student'} nor "
                    f"{checkout / 'models/export/student'}; build it with `dvc repro "
                    f"export@student` in {checkout}, or pass --model PATH")
    monkeypatch.setattr(onnx_runner, "CHECKOUT", None)  # installed from a wheel: no checkout
    line = expect_error(capsys, "some text")
    assert f"in {tmp_path / 'models/export/student'};" in line and "--model PATH" in line
    line = expect_error(capsys, "--model", "models/export/teacher/model.onnx", "some text")
    assert line.startswith(f"error: {tmp_path / 'models/export/teacher/model.onnx'}: model not")
    assert "dvc repro export@teacher" in line and "--model" in line
    line = expect_error(capsys, "--model", "elsewhere/model.onnx", "some text")
    assert "elsewhere/model.onnx" in line and "--model" in line


def test_default_model_and_max_length_come_from_the_checkout_not_the_current_folder(
        world, tmp_path, monkeypatch, capsys) -> None:
    """Run from another folder, predict finds the checkout's student and cuts texts at the
    checkout's tokenize.max_length (32), not at the current folder's params.yaml (8)."""
    from pocketbert.runtime import onnx_runner

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "params.yaml").write_text("tokenize:\n  max_length: 8\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(onnx_runner, "CHECKOUT", world)  # the checkout pocketbert runs from
    model = world / "models/export/student/model.int8.onnx"
    assert onnx_runner.default_model() == model
    texts = [LONG, TEXTS[0]]  # LONG: ~150 tokens; TEXTS[0]: 13, under 32 but over 8
    out = run_json(capsys, *texts)
    expected = reference_probs(model, texts, 32, batch=False)
    for row, p in zip(out, expected, strict=True):
        assert list(row["probabilities"].values()) == pytest.approx(list(p), abs=1e-5)
    assert [r["truncated"] for r in out] == [True, False]  # at 8 both would be cut
    # an explicit --model reads its own checkout's params.yaml too
    fp32 = world / "models/export/student/model.onnx"
    assert cli.main(["predict", "--json", "--model", str(fp32), *texts]) == 0
    captured = capsys.readouterr()
    assert [r["truncated"] for r in json.loads(captured.out)] == [True, False]
    assert "cut to 32" in captured.err
    assert onnx_runner.model_max_length(fp32) == onnx_runner.model_max_length(fp32.parent) == 32
    # a model outside any checkout, without the length its export recorded: TokenizeParams'
    # default, whatever ./params.yaml says
    copied = tmp_path / "copied"
    shutil.copytree(world / "models/export/student", copied,
                    ignore=shutil.ignore_patterns("max_length.json"))
    assert onnx_runner.model_max_length(copied / "model.onnx") == 128
    # the cwd's own student comes first: a checkout you work in is the one you mean
    local = elsewhere / "models/export/student"
    shutil.copytree(world / "models/export/student", local)
    assert onnx_runner.default_model() == local / "model.int8.onnx"


def test_non_utf8_argument_is_an_error(in_world, capsys) -> None:
    """A byte that is not UTF-8 in an argument reaches Python as a lone surrogate
    (surrogateescape); predict refuses it as it refuses a non-UTF-8 file."""
    from pocketbert.runtime import onnx_runner

    line = expect_error(capsys, TEXTS[0], "\udc80abc")
    assert line == ("error: the command line argument 2: not UTF-8 text (byte 0: invalid start "
                    "byte); pass UTF-8 text (check the terminal's encoding: LANG, LC_ALL)")
    line = expect_error(capsys, "caf\udce9 au lait")  # Latin-1 é: byte 3 of the argument
    assert "argument 1: not UTF-8 text (byte 3: invalid continuation byte)" in line
    assert "U+D800, a lone surrogate" in onnx_runner.undecodable("ok \ud800")
    assert onnx_runner.undecodable("caf\u00e9 \u200b") is None
    clf = onnx_runner.load_classifier(in_world / "models/export/student/model.onnx", 32)
    with pytest.raises(onnx_runner.PredictError, match=r"text 2 is not UTF-8 text \(byte 0"):
        clf.encode(["fine", "\udc80abc"])
    # the real thing: bytes on the command line of a new process
    done = subprocess.run([sys.executable, "-m", "pocketbert.apps.cli", "predict", b"\x80abc"],
                          cwd=in_world, capture_output=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "error: the command line argument 1: not UTF-8 text (byte 0: invalid start byte); "
        "pass UTF-8 text (check the terminal's encoding: LANG, LC_ALL)"]


def test_truncated_texts_are_reported(in_world, capsys) -> None:
    """Texts longer than max_length are cut: one note on stderr, "truncated" in --json."""
    huge = ("the pump " * 2300)[:20_000]  # 20,000 characters, ~4,400 tokens
    exact = " ".join(["the"] * 30)  # 30 words + [CLS] + [SEP] = 32 tokens: fits, not cut
    over = exact + " the"  # 33 tokens: cut
    out = run_json(capsys, "--max-length", "32", huge, TEXTS[0], exact, over)
    assert [r["truncated"] for r in out] == [True, False, False, True]
    model = in_world / "models/export/student/model.int8.onnx"
    clf = cli_classifier(model)
    assert [len(ids) for ids in clf.encode([huge, exact, over])[0]] == [32, 32, 32]
    assert cli.main(["predict", huge, TEXTS[0], exact, over]) == 0  # the table too
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: 2 of 4 texts were longer than 32 tokens and were cut to 32 (the "
                   "model sees only the start; --max-length sets the limit)"]
    assert cli.main(["predict", "--max-length", "8", TEXTS[0]]) == 0
    assert capsys.readouterr().err.startswith("note: 1 of 1 text was longer than 8 tokens")
    assert cli.main(["predict", TEXTS[0]]) == 0
    assert capsys.readouterr().err == ""  # nothing cut, nothing said


def cli_classifier(model: Path):
    """The classifier predict loads for ``model`` at the world's max_length (32)."""
    from pocketbert.runtime import onnx_runner

    return onnx_runner.load_classifier(model, onnx_runner.model_max_length(model))


def test_missing_tokenizer_beside_model(world, tmp_path, capsys) -> None:
    folder = tmp_path / "models/export/teacher"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes((world / "models/export/student/model.onnx").read_bytes())
    line = expect_error(capsys, "--model", str(folder / "model.onnx"), "some text")
    assert "tokenizer.json" in line and "dvc repro export@teacher" in line


def test_int8_missing_but_fp32_present(world, tmp_path, capsys) -> None:
    folder = tmp_path / "export/student"
    folder.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json", "labels.json"):
        (folder / name).write_bytes((world / "models/export/student" / name).read_bytes())
    line = expect_error(capsys, "--model", str(folder), "some text")  # a folder: its int8 model
    assert "export.int8" in line and str(folder / "model.onnx") in line


def test_empty_input_is_an_error(in_world, capsys, monkeypatch, tmp_path) -> None:
    assert "no texts" in expect_error(capsys, "", "   ")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\r\n", encoding="utf-8")
    assert str(blank) in expect_error(capsys, "--file", str(blank))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n\n")))
    assert "standard input" in expect_error(capsys)


def test_unreadable_file_is_an_error(in_world, capsys, tmp_path) -> None:
    line = expect_error(capsys, "--file", str(tmp_path / "nope.txt"))
    assert "nope.txt" in line and "no such file" in line
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    line = expect_error(capsys, "--file", str(latin))
    assert "latin1.txt" in line and "UTF-8" in line
    line = expect_error(capsys, "--file", str(tmp_path))
    assert "directory" in line


def test_texts_and_file_together_is_an_error(in_world, capsys, tmp_path) -> None:
    assert "not both" in expect_error(capsys, "--file", str(tmp_path / "x.txt"), "text")


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(word in text for word in ("--file", "--model", "--json", "--max-length",
                                         "standard input", "dvc repro export@student",
                                         "model's own checkout", "not UTF-8", "truncated"))
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2 and "predict" in capsys.readouterr().err


def test_predict_does_not_import_torch(world) -> None:
    model = world / "models/export/student/model.int8.onnx"
    code = ("import sys; from pocketbert.apps import cli; "
            f"cli.main(['predict', '--json', '--model', {str(model)!r}, 'the pump']); "
            "heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=world, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["label"] in LABELS


def test_length_sorted_batches_pad_per_batch_and_restore_order() -> None:
    from pocketbert.core import batching

    seqs = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14], [15]]
    batches = list(batching.length_sorted_batches(seqs, 2, pad_id=0))
    assert [idx for idx, _, _ in batches] == [[1, 4], [2, 0], [3]]  # stable: 1 before 4
    idx, ids, mask = batches[1]
    np.testing.assert_array_equal(ids, [[9, 10, 0], [5, 6, 7]])  # padded to this batch only
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 1]])
    assert ids.dtype == mask.dtype == np.int64
    out = np.zeros(len(seqs), dtype=np.int64)  # writing out[idx] gives back the input order
    for idx, ids, mask in batches:
        out[idx] = ids[np.arange(len(idx)), mask.sum(1) - 1]
    assert out.tolist() == [s[-1] for s in seqs]
    with pytest.raises(ValueError, match="empty batch"):
        batching.pad([], 0)


def test_every_verb_of_the_parser_has_its_function_and_no_other() -> None:
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(verbs.choices) == set(cli.COMMANDS)


# --- deferral and the teacher as fallback ------------------------------------------------------


def _calibration(path: Path, probs: list[dict], **overrides) -> Path:
    """Deferral settings whose threshold answers the surer half of ``probs`` (predict's JSON
    rows) at temperature 2 by the top probability."""
    from pocketbert.core import contract

    confidences = sorted(contract.confidence(contract.calibrated(list(r["probabilities"].values()),
                                                                 2.0), "max_probability")
                         for r in probs)
    settings = {"temperature": 2.0, "score": "max_probability",
                "threshold": confidences[len(confidences) // 2], "target_agreement": 0.995,
                "labels": list(LABELS), **overrides}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings), encoding="utf-8")
    return path


def test_deferral_follows_the_device_rule_on_the_same_probabilities(in_world, capsys,
                                                                     tmp_path) -> None:
    from pocketbert.core import contract

    plain = run_json(capsys, *TEXTS)
    assert all("deferred" not in r for r in plain)  # the fixture's checkout has no calibration
    settings_file = _calibration(tmp_path / "calibration.json", plain)
    settings = json.loads(settings_file.read_text())
    rows = run_json(capsys, "--calibration", str(settings_file), *TEXTS)
    expected = [not contract.answers(list(r["probabilities"].values()),
                                     temperature=2.0, score="max_probability",
                                     threshold=settings["threshold"]) for r in plain]
    assert [r["deferred"] for r in rows] == expected and 0 < sum(expected) < len(TEXTS)
    assert [r["answered_by"] for r in rows] == [cascade.NOT_ASKED if d else "student"
                                                for d in expected]
    for row, base in zip(rows, plain, strict=True):
        assert row["probabilities"] == base["probabilities"]  # what the model said, unchanged
        np.testing.assert_allclose(list(row["calibrated_probabilities"].values()),
                                   contract.calibrated(list(base["probabilities"].values()), 2.0))
    # --threshold replaces the calibrated one: at 1, every text below certainty is deferred
    rows = run_json(capsys, "--calibration", str(settings_file), "--threshold", "1", *TEXTS)
    assert all(r["deferred"] for r in rows)
    # a threshold the score cannot reach is a mistake: refused, with the score's range
    line = expect_error(capsys, "--calibration", str(settings_file), "--threshold", "1.5",
                        TEXTS[0])
    assert "top probability, whose values lie in [0.25, 1] for 4 labels" in line
    assert cli.main(["predict", "--calibration", str(settings_file), *TEXTS]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].endswith("answered by")
    assert "not sure: would ask the server" in out.out
    assert f"note: {sum(expected)} of {len(TEXTS)} text(s) deferred" in out.err


def test_the_checkouts_calibration_is_read_for_its_int8_student_only(world, tmp_path,
                                                                     monkeypatch, capsys) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(world, root)
    monkeypatch.chdir(root)
    plain = run_json(capsys, *TEXTS)
    _calibration(root / cascade.CALIBRATION, plain)
    assert all("deferred" in r for r in run_json(capsys, *TEXTS))
    fp32 = str(root / "models/export/student/model.onnx")
    assert all("deferred" not in r for r in run_json(capsys, "--model", fp32, *TEXTS))
    line = expect_error(capsys, "--model", fp32, "--threshold", "0.5", TEXTS[0])
    assert "--threshold needs deferral settings" in line and "dvc repro calibrate" in line


@pytest.mark.parametrize("change, message", [
    ({"labels": ["a", "b", "c", "d"]}, "calibrated for labels ['a', 'b', 'c', 'd']"),
    ({"temperature": 0}, "not usable deferral settings"),
    ({"score": "top"}, "not usable deferral settings"),
])
def test_unusable_deferral_settings_are_one_error(in_world, capsys, tmp_path, change,
                                                  message) -> None:
    probs = run_json(capsys, *TEXTS)
    path = _calibration(tmp_path / "calibration.json", probs, **change)
    line = expect_error(capsys, "--calibration", str(path), TEXTS[0])
    assert message in line and "calibration.json" in line
    line = expect_error(capsys, "--calibration", str(tmp_path / "none.json"), TEXTS[0])
    assert "none.json: no such file" in line and "dvc repro calibrate" in line


def test_fallback_asks_a_real_teacher_server_and_survives_it_being_down(
        in_world, capsys, tmp_path, held_port) -> None:
    plain = run_json(capsys, *TEXTS)
    settings_file = _calibration(tmp_path / "calibration.json", plain)
    with served(in_world / "given_teacher", tmp_path, 32) as url:
        assert cli.main(["predict", "--json", "--calibration", str(settings_file),
                         "--fallback", url, *TEXTS]) == 0
        out = capsys.readouterr()
        rows, err = json.loads(out.out), out.err
    deferred = [r for r in rows if r["deferred"]]
    assert deferred and all(r["answered_by"] == "teacher" for r in deferred)
    assert all(r["answered_by"] == "student" for r in rows if not r["deferred"])
    assert f"{len(deferred)} deferred text(s) answered by the teacher at {url}" in err
    for row in deferred:  # the teacher's answer: its probabilities, its label
        p = row["probabilities"]
        assert row["label"] == max(p, key=p.get) and sum(p.values()) == pytest.approx(1.0)
    # the endpoint down (a port that refuses connections): the student's answers stay, marked
    down = f"http://127.0.0.1:{held_port}/"
    raw = yaml.safe_load((in_world / "params.yaml").read_text())
    assert cli.main(["predict", "--json", "--calibration", str(settings_file),
                     "--fallback", down, *TEXTS]) == 0
    out = capsys.readouterr()
    rows, err = json.loads(out.out), out.err
    assert [r["label"] for r in rows] == [r["label"] for r in plain]
    assert all(r["answered_by"] == cascade.UNREACHABLE for r in rows if r["deferred"])
    assert f"warning: the teacher at {down} (--fallback) did not answer" in err
    assert raw == yaml.safe_load((in_world / "params.yaml").read_text())  # nothing written


def test_serve_fronts_the_teacher_with_the_student_and_survives_it_being_down(
        world, capsys, tmp_path, held_port) -> None:
    """`pocketbert serve STUDENT --fallback URL`: texts the rule defers get the teacher
    server's own answer, the others the student's (the same int8 logits as predict's); with
    the teacher down, the student's answer, marked; a GET counts both."""
    from pocketbert.core import contract

    student = world / "models/export/student"
    plain = run_json(capsys, "--model", str(student), *TEXTS)
    settings_file = _calibration(tmp_path / "calibration.json", plain)
    settings = json.loads(settings_file.read_text())
    expected = [not contract.answers(list(r["probabilities"].values()), temperature=2.0,
                                     score="max_probability", threshold=settings["threshold"])
                for r in plain]
    assert 0 < sum(expected) < len(TEXTS)
    with served(world / "given_teacher", tmp_path, 32) as teacher:
        direct = ask(teacher, TEXTS)
        with served(student, tmp_path, 32, "--calibration", str(settings_file),
                    "--fallback", teacher) as url:
            answer, status = ask(url, TEXTS), ask(url)
    assert answer["deferred"] == expected
    assert answer["answered_by"] == [cascade.TEACHER if d else cascade.STUDENT
                                     for d in expected]
    for i, deferred in enumerate(expected):
        got = list(answer["probabilities"][i].values())
        if deferred:  # the teacher's probabilities, through its float32 log-probabilities
            np.testing.assert_allclose(got, list(direct["probabilities"][i].values()),
                                       rtol=1e-5)
        else:
            np.testing.assert_allclose(got, list(plain[i]["probabilities"].values()),
                                       rtol=1e-12)
    assert status["cascade"] == {"answered_locally": len(TEXTS) - sum(expected),
                                 "sent_to_teacher": sum(expected), "teacher_unreachable": 0}
    down = f"http://127.0.0.1:{held_port}/"
    with served(student, tmp_path, 32, "--calibration", str(settings_file),
                "--fallback", down) as url:
        answer, again, status = ask(url, TEXTS), ask(url, TEXTS), ask(url)
    for got in (answer, again):  # the second within FALLBACK_PAUSE_S: not asked, same answer
        assert got["answered_by"] == [cascade.UNREACHABLE if d else cascade.STUDENT
                                      for d in expected]
        assert [max(p, key=p.get) for p in got["probabilities"]] == [r["label"] for r in plain]
    assert status["cascade"]["teacher_unreachable"] == 2 * sum(expected)


def test_serve_fallback_needs_deferral_settings(world, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", str(world / "given_teacher"), "--fallback", "http://127.0.0.1:9/"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--fallback needs deferral settings" in err and "--calibration PATH" in err


def test_settings_the_model_carries_in_its_metadata_apply(world, capsys, tmp_path) -> None:
    """A shipped ONNX model (the web stage's) carries its deferral settings: predict applies
    them without --calibration, and --calibration still wins."""
    from pocketbert.apps import web
    from pocketbert.core import contract

    shipped = tmp_path / "shipped"
    shutil.copytree(world / "models/export/student", shipped)
    plain = run_json(capsys, "--model", str(shipped), *TEXTS)
    settings = json.loads(_calibration(tmp_path / "calibration.json", plain).read_text())
    web.with_metadata(world / "models/export/student/model.int8.onnx",
                      shipped / "model.int8.onnx",
                      {contract.DEFERRAL_METADATA: json.dumps(
                          {k: settings[k] for k in ("temperature", "score", "threshold")})})
    rows = run_json(capsys, "--model", str(shipped), *TEXTS)
    routed = run_json(capsys, "--model", str(shipped), "--calibration",
                      str(tmp_path / "calibration.json"), *TEXTS)
    assert [r["deferred"] for r in rows] == [r["deferred"] for r in routed]
    assert 0 < sum(r["deferred"] for r in rows) < len(TEXTS)
    assert [r["probabilities"] for r in rows] == [r["probabilities"] for r in plain]
    other = _calibration(tmp_path / "strict.json", plain, threshold=1.0)
    assert all(r["deferred"] for r in run_json(capsys, "--model", str(shipped),
                                                "--calibration", str(other), *TEXTS))


def test_the_length_the_export_folder_records_is_used(world, capsys, tmp_path) -> None:
    """An export folder records the length its model was exported at (max_length.json): a
    copy outside any checkout is cut there, not at the default 128."""
    from pocketbert.data import tokenization

    folder = tmp_path / "model"
    shutil.copytree(world / "models/export/student", folder)
    assert tokenization.read_max_length(folder) == 32  # written by the export stage
    tokenization.write_max_length(folder, 16)
    assert cli.main(["predict", "--json", "--model", str(folder), LONG]) == 0
    assert "cut to 16" in capsys.readouterr().err
    (folder / "max_length.json").write_text("{}")
    line = expect_error(capsys, "--model", str(folder), LONG)
    assert "max_length.json: expected" in line and "--max-length" in line
