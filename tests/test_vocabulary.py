"""vocab.txt must give every token its id on a line-based reader (pocketbert.vocabulary)."""

from __future__ import annotations

import pytest
from conftest import LABELS, sentences, tiny_tokenizer

from pocketbert import vocabulary
from pocketbert.errors import ModelError


def _with_tokens(extra: list[str], pre_tokenizer=None):
    """The tiny WordPiece tokenizer with ``extra`` tokens appended (ids from len(vocab) on);
    with ``pre_tokenizer``, that pre-tokenizer and no normaliser instead of BERT's."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer().get_vocab()
    vocab = {**base, **{t: len(base) + i for i, t in enumerate(extra)}}
    if pre_tokenizer is None:
        from transformers import BertTokenizer
        return BertTokenizer(vocab=vocab)
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


CORPUS = [t for label in LABELS for t in sentences(label, 3)]


@pytest.mark.parametrize(("token", "named"), [
    ("\u2028", "U+2028 LINE SEPARATOR"),  # a whole token of it, as in a teacher's vocabulary
    ("x\u2029y", "U+2029 PARAGRAPH SEPARATOR"),
    ("##\x85", "U+0085 (control)"),
    ("a\rb", "U+000D (control)"),
    ("\x1e", "U+001E (control)"),
    (" pad", "starts or ends with whitespace"),
])
def test_untrimmed_vocabulary_with_a_line_breaking_token_is_refused(token, named, tmp_path):
    tokenizer = _with_tokens(["alpha", token, "omega"])
    idx = tokenizer.get_vocab()[token]
    with pytest.raises(ModelError) as info:
        vocabulary.write_vocab_txt(tokenizer, tmp_path / "vocab.txt")
    message = str(info.value)
    assert f"token {idx} ({token!r})" in message and named in message
    assert "train_student.trim_vocab: true" in message
    assert not (tmp_path / "vocab.txt").exists()


def test_trimming_leaves_out_tokens_no_text_can_produce_and_vocab_txt_reads_back(tmp_path):
    from tokenizers import models

    bad = ["\u2028", "x\u2029y", "##\x85", "a\rb", " pad"]
    tokenizer = _with_tokens(["alpha", *bad, "omega"])
    assert vocabulary.never_split_by_lines(tokenizer)
    # a reserve larger than the vocabulary would keep every word, were it not left out
    kept = vocabulary.kept_token_ids(tokenizer, tokenizer(CORPUS)["input_ids"], reserve=10_000)
    vocab = tokenizer.get_vocab()
    assert {vocab["alpha"], vocab["omega"]} <= set(kept)
    assert not {vocab[t] for t in bad} & set(kept)
    small = vocabulary.trimmed_tokenizer(tokenizer, kept)
    for text in CORPUS:  # same pieces, remapped ids
        assert small(text)["input_ids"] == [kept.index(i) for i in tokenizer(text)["input_ids"]]
    path = tmp_path / "vocab.txt"
    vocabulary.write_vocab_txt(small, path)
    # two line-based readers agree with the tokenizer on every id
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == small.convert_ids_to_tokens(list(range(len(small))))
    assert models.WordPiece.read_file(str(path)) == small.get_vocab()


def test_a_tokenizer_that_keeps_line_breaks_in_words_keeps_such_tokens_and_is_refused(tmp_path):
    from tokenizers import pre_tokenizers

    # splits on the space only: "a\u2028b" stays one word, so the token can be produced
    tokenizer = _with_tokens(["alpha", "a\u2028b"],
                             pre_tokenizer=pre_tokenizers.Split(" ", behavior="removed"))
    assert tokenizer.tokenize("a\u2028b") == ["a\u2028b"]
    assert not vocabulary.never_split_by_lines(tokenizer)
    kept = vocabulary.kept_token_ids(tokenizer, tokenizer(["a\u2028b"])["input_ids"], reserve=0)
    assert tokenizer.get_vocab()["a\u2028b"] in kept
    with pytest.raises(ModelError, match="U\\+2028 LINE SEPARATOR"):
        vocabulary.write_vocab_txt(vocabulary.trimmed_tokenizer(tokenizer, kept),
                                   tmp_path / "vocab.txt")


@pytest.mark.parametrize(("token", "problem"), [
    ("hello", None), ("##ing", None), ("[unused3]", None), ("中", None), ("\u00a0x", "starts"),
    ("", "is empty"), ("\x0c", "U+000C"), ("\u2028", "U+2028"),
])
def test_line_problem(token, problem):
    found = vocabulary.line_problem(token)
    assert (found is None) if problem is None else (problem in found)
