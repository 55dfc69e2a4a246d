"""Student initialisation (layer copying, fresh configs) and vocabulary trimming."""

from __future__ import annotations

import pytest
import torch
from conftest import LABELS, sentences, tiny_classifier, tiny_tokenizer

from pocketbert.core.errors import ModelError, ParamsError
from pocketbert.core.params import TrainStudentParams
from pocketbert.data import vocabulary
from pocketbert.runtime.torch_runner import pad_batch
from pocketbert.training import modeling


def _logits(model, ids: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    with torch.inference_mode():
        return model(**pad_batch(ids, pad_id)).logits


def test_copied_layers_are_the_chosen_teacher_layers() -> None:
    teacher = tiny_classifier(80, layers=4)
    student = modeling.student_from_layers(teacher, (0, 3))
    assert student.config.num_hidden_layers == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for new, old in ((0, 0), (1, 3)):
        for name in ("attention.self.query.weight", "output.dense.weight"):
            assert torch.equal(s_state[f"bert.encoder.layer.{new}.{name}"],
                               t_state[f"bert.encoder.layer.{old}.{name}"])
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight",
                 "classifier.weight"):
        assert torch.equal(s_state[name], t_state[name])
    assert not torch.equal(s_state["bert.encoder.layer.1.output.dense.weight"],
                           t_state["bert.encoder.layer.1.output.dense.weight"])


def test_copying_every_layer_reproduces_the_teacher() -> None:
    teacher = tiny_classifier(80, layers=3)
    student = modeling.student_from_layers(teacher, (0, 1, 2)).eval()
    ids = [[2, 10, 11, 12, 3], [2, 13, 3]]
    assert torch.allclose(_logits(teacher, ids), _logits(student, ids), atol=1e-6)


def test_layer_index_out_of_range_names_the_key_and_the_params_file_read() -> None:
    with pytest.raises(ParamsError) as info:
        modeling.student_from_layers(tiny_classifier(80, layers=3), (0, 3))
    assert info.value.key == "train_student.copy_layers"
    # stage.cli names the file given with --params, not params.yaml
    assert str(info.value.read_from("sweep.yaml")) == (
        "sweep.yaml: 'train_student.copy_layers': layer index 3 is out of range; the model has "
        "layers 0..2")


def test_fresh_student_heads_must_divide_hidden_size() -> None:
    with pytest.raises(ParamsError, match="train_student.num_heads': 4 does not divide") as info:
        modeling.fresh_student(tiny_classifier(80), 30, 1, 4, None, seed=0)
    assert info.value.key == "train_student.num_heads"
    student = modeling.fresh_student(tiny_classifier(80), 16, 1, 2, None, seed=0)
    assert (student.config.hidden_size, student.config.num_hidden_layers) == (16, 1)
    assert student.config.intermediate_size == 64
    assert student.config.id2label == {i: n for i, n in enumerate(LABELS)}


def test_copy_with_a_hidden_size_is_rejected_at_params_time() -> None:
    with pytest.raises(ParamsError, match="train_student.hidden_size"):
        TrainStudentParams(init="copy", hidden_size=128)


@pytest.mark.parametrize(("key", "value"), [("temperature", 0.0), ("temperature", -1.0),
                                            ("alpha", -0.1), ("alpha", 1.5)])
def test_impossible_distillation_params(key: str, value: float) -> None:
    with pytest.raises(ParamsError, match=f"train_student.{key}"):
        TrainStudentParams(**{key: value})


def test_folder_without_weights_is_rejected(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelError, match="no weights"):
        modeling.load_classifier(tmp_path, LABELS)
    with pytest.raises(ModelError, match="no config.json"):
        modeling.load_classifier(tmp_path / "missing", LABELS)


# --- vocabulary trimming ----------------------------------------------------------------------

def _trimmed(corpus_texts: list[str], reserve: int = 0):
    tokenizer = tiny_tokenizer()
    corpus = tokenizer(corpus_texts)["input_ids"]
    kept = vocabulary.kept_token_ids(tokenizer, corpus, reserve)
    return tokenizer, kept, vocabulary.trimmed_tokenizer(tokenizer, kept)


def test_trimmed_vocab_keeps_specials_chars_and_corpus_only() -> None:
    corpus = sentences("condition", 3)
    tokenizer, kept, small = _trimmed(corpus)
    vocab = small.get_vocab()
    assert len(small) == len(kept) < len(tokenizer)
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "q", "##q", "rattle", "boiler"):
        assert token in vocab, token
    assert "elevator" not in vocab  # a word of other sentences only
    assert vocab["[PAD]"] == 0
    assert sorted(vocab.values()) == list(range(len(kept)))


def test_trimmed_tokenizer_gives_remapped_ids_on_the_corpus() -> None:
    corpus = sentences("process", 4)
    tokenizer, kept, small = _trimmed(corpus)
    for text in corpus:
        old = tokenizer(text)["input_ids"]
        new = small(text)["input_ids"]
        assert new == [kept.index(i) for i in old]


def test_unseen_token_maps_to_unk_or_spelled_pieces() -> None:
    _, _, small = _trimmed(sentences("notice", 2))
    ids = small("the elevator \N{SLIGHTLY SMILING FACE}")["input_ids"]
    tokens = small.convert_ids_to_tokens(ids)
    assert "elevator" not in tokens and "e" in tokens  # spelled out from kept characters
    assert tokens.count("[UNK]") == 1  # the emoji has no piece at all


def test_reserve_keeps_the_lowest_id_words() -> None:
    tokenizer, kept0, _ = _trimmed(["the gate"], reserve=0)
    _, kept5, _ = _trimmed(["the gate"], reserve=5)
    words = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids
             and len(tokenizer.convert_ids_to_tokens(i).removeprefix("##")) > 1]
    assert set(words[:5]) <= set(kept5)
    assert sorted(set(kept5) - set(kept0)) == [i for i in words[:5] if i not in kept0]
    assert len(kept5) > len(kept0)


def test_row_cap_keeps_the_corpus_s_most_used_tokens_then_the_reserve() -> None:
    tokenizer = tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    corpus = tokenizer(["gate gate gate boiler boiler rattle"])["input_ids"]
    whole = vocabulary.kept_token_ids(tokenizer, corpus, reserve=3)
    always = vocabulary.kept_token_ids(tokenizer, [], reserve=0)  # specials and characters
    reserve = sorted(set(whole) - set(always) - {idx for ids in corpus for idx in ids})
    assert len(reserve) >= 2  # reserve words outside the corpus, for the last cap below
    assert vocabulary.kept_token_ids(tokenizer, corpus, 3, max_rows=len(whole)) == whole
    two = vocabulary.kept_token_ids(tokenizer, corpus, 3, max_rows=len(always) + 2)
    assert set(two) - set(always) == {vocab["gate"], vocab["boiler"]}  # used 3 and 2 times
    # every corpus token kept (each used at least once), then the reserve's first word by id
    first_reserve = vocabulary.kept_token_ids(tokenizer, corpus, 3,
                                              max_rows=len(whole) - len(reserve) + 1)
    assert set(whole) - set(first_reserve) == set(reserve[1:])
    assert vocabulary.kept_token_ids(tokenizer, corpus, 3, max_rows=len(always)) == always
    with pytest.raises(ParamsError, match=f"use at least {len(always)}, or null"):
        vocabulary.kept_token_ids(tokenizer, corpus, 3, max_rows=len(always) - 1)


def test_row_cap_sets_the_exact_rows_of_a_trimmed_and_a_clustered_student() -> None:
    from pocketbert.training import student

    corpus = sentences("condition", 3)
    cap = len(vocabulary.kept_token_ids(tiny_tokenizer(), [], reserve=0)) + 4
    trimmed_model = tiny_classifier(len(tiny_tokenizer()))
    small = student.trim(trimmed_model, tiny_tokenizer(), corpus, 0, 32, max_rows=cap)
    assert len(small) == cap == trimmed_model.get_input_embeddings().weight.shape[0]
    clustered_model = tiny_classifier(len(tiny_tokenizer()))
    student.cluster(clustered_model, tiny_tokenizer(), corpus, 0, 5, 32, 0, max_rows=cap)
    remap = clustered_model.get_input_embeddings().remap
    assert int((remap < cap).sum()) == cap  # cap tokens keep rows of their own
    assert cap < clustered_model.get_input_embeddings().weight.shape[0] <= cap + 5


def test_trimming_alone_leaves_logits_unchanged() -> None:
    corpus = sentences("constraint", 5)
    tokenizer, kept, small = _trimmed(corpus)
    teacher = tiny_classifier(len(tokenizer))
    student = modeling.student_from_layers(teacher, tuple(range(3))).eval()
    vocabulary.trim_embeddings(student, kept)
    assert student.get_input_embeddings().weight.shape == (len(kept), 32)
    before = _logits(teacher, [tokenizer(t)["input_ids"] for t in corpus])
    after = _logits(student, [small(t)["input_ids"] for t in corpus])
    assert torch.allclose(before, after, atol=1e-6)


def test_vocab_txt_lists_tokens_in_id_order(tmp_path) -> None:
    _, _, small = _trimmed(sentences("notice", 2))
    vocabulary.write_vocab_txt(small, tmp_path / "vocab.txt")
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines == small.convert_ids_to_tokens(list(range(len(small))))


def test_unlabelled_texts_join_train_without_a_gold_label(tiny_world) -> None:
    import numpy as np

    from pocketbert.data import tokenization
    from pocketbert.training import student
    from pocketbert.training.distillation import UNLABELLED

    data = tokenization.load(tiny_world["tokenize"], tiny_world["augmented"])
    soft = {split: np.zeros((len(data[split]), 4), dtype=np.float32)
            for split in ("train", "validation", "test")}
    soft["unlabelled"] = np.ones((2, 4), dtype=np.float32)
    texts = ["Unplug the gate first.", "The pump hums."]
    splits = student.student_splits(data, soft, tiny_tokenizer(), 32, texts)
    train = splits["train"]
    assert len(train) == len(data["train"]) + 2
    assert train["label"][-2:] == [UNLABELLED, UNLABELLED]
    assert train["text"][-2:] == texts
    assert train["teacher_logits"][-1] == [1.0] * 4
    assert UNLABELLED not in [*splits["validation"]["label"], *splits["test"]["label"]]
    assert train["input_ids"][-1] == tiny_tokenizer()(texts[1], truncation=True,
                                                      max_length=32)["input_ids"]


@pytest.mark.parametrize("key", ["hidden_weight", "relation_weight"])
@pytest.mark.parametrize(("changes", "fix"), [
    ({"weight": -1.0}, "use 0"),
    ({"weight": 1.0, "init": "fresh"}, "init: copy"),
    ({"weight": 1.0, "vocab_clusters": 0}, "keep the teacher's tokens"),
])
def test_layer_terms_need_copied_layers_and_the_teacher_s_tokens(key, changes, fix) -> None:
    given = {key if k == "weight" else k: v for k, v in changes.items()}
    with pytest.raises(ParamsError, match=f"train_student.{key}.*{fix}"):
        TrainStudentParams(**given)
    TrainStudentParams(**{key: 1.0}, vocab_clusters=2000)
    TrainStudentParams(**{key: 1.0}, trim_vocab=False, vocab_clusters=0)
