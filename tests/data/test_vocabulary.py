"""vocab.txt must give every token its id on a line-based reader (pocketbert.data.vocabulary)."""

from __future__ import annotations

import pytest
from conftest import LABELS, sentences, tiny_tokenizer

from pocketbert.core.errors import ModelError, ParamsError
from pocketbert.data import vocabulary


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


# --- shared rows for the tokens trimming would drop (train_student.vocab_clusters) ----------


def test_cluster_rows_keeps_kept_rows_exact_and_shares_the_rest() -> None:
    import torch

    torch.manual_seed(0)
    weight = torch.randn(40, 8)
    weight[20:30] = weight[20] + 1e-3 * torch.randn(10, 8)  # ten near-identical rare tokens
    kept = [0, 1, 2, 5]
    remap, rows = vocabulary.cluster_rows(weight, kept, clusters=6, seed=0)
    assert remap.dtype == torch.int32 and remap.shape == (40,)
    assert rows.shape[0] <= len(kept) + 6 and rows.shape[1] == 8
    for row, token in enumerate(kept):  # kept tokens: their own exact row, in kept order
        assert int(remap[token]) == row
        assert torch.equal(rows[row], weight[token])
    others = [t for t in range(40) if t not in kept]
    assert all(int(remap[t]) >= len(kept) for t in others)
    assert len({int(remap[t]) for t in range(20, 30)}) == 1  # the near-identical ones share
    # each shared row is the mean of its tokens' rows (the k-means centroid)
    for row in {int(remap[t]) for t in others}:
        members = [t for t in others if int(remap[t]) == row]
        torch.testing.assert_close(rows[row], weight[members].mean(0))
    # every row is used: no centroid without tokens
    assert set(remap.tolist()) == set(range(rows.shape[0]))
    with pytest.raises(ValueError, match="clusters must be >= 1"):
        vocabulary.cluster_rows(weight, kept, clusters=0, seed=0)


def test_factorised_rows_start_as_their_truncated_svd() -> None:
    import torch

    from pocketbert.training import modeling

    torch.manual_seed(0)
    low = torch.randn(30, 2) @ torch.randn(2, 8)  # a rank-2 matrix: rank 2 keeps it exactly
    table, projection = modeling.factorise(low, 2)
    assert table.shape == (30, 2) and projection.shape == (8, 2)
    torch.testing.assert_close(table @ projection.T, low, rtol=0, atol=1e-5)  # float32 sums
    rows = torch.randn(30, 8)
    table, projection = modeling.factorise(rows, 3)
    s = torch.linalg.svdvals(rows.double())
    # Eckart-Young: the Frobenius error of the best rank-3 factors is the tail's singular values
    error = torch.linalg.matrix_norm((table @ projection.T - rows).double())
    torch.testing.assert_close(error, s[3:].norm(), rtol=1e-5, atol=0)
    # 30 x 8 = 240 numbers; rank 6 holds 6 x (30 + 8) = 228, rank 7 would hold 266
    modeling.factorise(rows, 6)
    with pytest.raises(ParamsError, match="train_student.embedding_rank.*from 1 to 6"):
        modeling.factorise(rows, 7)


def _clustered_student(tiny_world, clusters: int = 8, rank: int | None = None):
    """The tiny world's teacher cut to 2 layers with clustered rows (factorised to ``rank``
    unless None), saved as a student."""
    from pocketbert.core import params
    from pocketbert.training import modeling, student

    teacher = modeling.load_classifier(tiny_world["given_teacher"], LABELS)
    tokenizer = tiny_tokenizer()
    model = modeling.keep_layers(teacher, (0, 2))
    corpus = sentences(LABELS[0], 2)
    tokenizer = student.cluster(model, tokenizer, corpus, 0, clusters, 32, 0, rank)
    folder = tiny_world["root"] / "clustered"
    modeling.save_classifier(folder, model.eval(), tokenizer, LABELS, "train_student",
                             params.TrainStudentParams(vocab_clusters=clusters,
                                                       embedding_rank=rank))
    return model, tokenizer, folder


@pytest.mark.parametrize("rank", [None, 3])
def test_a_clustered_student_keeps_the_whole_tokenizer_and_reloads_exactly(tiny_world,
                                                                           rank) -> None:
    import torch

    from pocketbert.training import modeling

    model, tokenizer, folder = _clustered_student(tiny_world, rank=rank)
    assert len(tokenizer) == len(tiny_tokenizer())  # every token still has its id
    emb = model.get_input_embeddings()
    assert isinstance(emb, modeling.RemappedEmbedding)
    assert emb.weight.shape[0] < len(tokenizer)  # fewer rows than tokens
    loaded = modeling.load_classifier(folder, LABELS)
    assert isinstance(loaded.get_input_embeddings(), modeling.RemappedEmbedding)
    ids = torch.tensor([tokenizer(t)["input_ids"] for t in sentences(LABELS[1], 1)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=0, atol=0)
    # a folder whose weights lost the remap is refused by name, not loaded half-random
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.endswith(".remap")},
              str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="pocketbert_embedding_rows"):
        modeling.load_classifier(folder, LABELS)


@pytest.mark.parametrize("rank", [None, 3])
def test_a_clustered_student_exports_and_converts_with_parity(tiny_world, rank) -> None:
    from stages import convert, export

    _, _, folder = _clustered_student(tiny_world, rank=rank)
    root = tiny_world["root"]
    common = ["--params", str(tiny_world["params"]), "--model", str(folder),
              "--tokenize", str(tiny_world["tokenize"])]
    m = export.main([*common, "--out", str(root / "onnx"), "--metrics", str(root / "e.json")])
    assert m["fp32.max_abs_logit_diff"] <= 1e-4  # ONNX fp32 against PyTorch: float32 sums
    assert m["fp32.top1_agreement_with_pytorch"] == 1.0
    assert m["int8.size_mb"] < m["fp32.size_mb"]
    with pytest.warns(UserWarning):  # convert.buckets above the tiny world's max_length
        c = convert.main([*common, "--out", str(root / "coreml"),
                          "--metrics", str(root / "c.json")])
    assert c["fp32.bucket_max_abs_prob_diff"] <= 1e-4
    assert c["fp16.bucket_max_abs_prob_diff"] <= 1e-2  # test_mil_executor.FP16_TOLERANCE
