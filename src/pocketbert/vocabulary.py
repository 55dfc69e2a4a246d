"""Vocabulary trimming: keep only the WordPiece tokens a student needs.

The embedding matrix dominates a small BERT (30,522 x 384 = 11.7 M of MiniLM's 22.7 M
parameters), so a student keeps: the special tokens; every ASCII single-character token and its
``##`` continuation (so an unseen English word is spelled out in pieces instead of becoming
[UNK]); every token of the written training sentences; and a reserve of the most frequent
multi-character vocabulary entries (BERT vocabularies list words in descending frequency after
the character block, so the lowest ids are the most frequent). Augmented variants are not part
of the corpus: their WordNet synonyms ("hebdomadal") are words a device will rarely see.

The trimmed tokenizer is the teacher's tokenizer (same normaliser and pre-tokenizer) with the
smaller vocabulary: on words whose pieces were all kept it gives the same pieces, since greedy
longest-match cannot find a longer piece in a subset; a word it cannot cover becomes [UNK].
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from pocketbert.errors import ModelError


def kept_token_ids(tokenizer, corpus_ids: Iterable[Iterable[int]], reserve: int) -> list[int]:
    """Old ids to keep, ascending (so [PAD]=0 and the special tokens keep their order)."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    keep = set(tokenizer.all_special_ids)
    words = []
    for token, idx in vocab.items():
        bare = token[2:] if token.startswith("##") else token
        if len(bare) == 1:
            if bare.isascii():
                keep.add(idx)
        # BERT vocabularies pad with "[unusedN]" placeholders: never worth keeping.
        elif idx not in keep and not (token.startswith("[unused") and token.endswith("]")):
            words.append(idx)
    for ids in corpus_ids:
        keep.update(ids)
    keep.update(sorted(words)[:reserve])  # the most frequent words, in the corpus or not
    return sorted(keep)


def trimmed_tokenizer(tokenizer, kept: list[int]):
    """The tokenizer with only ``kept`` tokens, renumbered 0..len(kept)-1 in ``kept`` order."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "WordPiece":
        raise ModelError(f"vocabulary trimming needs a WordPiece tokenizer, found "
                         f"{model.get('type')!r}; set train_student.trim_vocab: false")
    old_to_new = {old: new for new, old in enumerate(kept)}
    id_to_token = {idx: tok for tok, idx in model["vocab"].items()}
    model["vocab"] = {id_to_token[old]: new for new, old in enumerate(kept)}
    for added in spec.get("added_tokens") or []:
        added["id"] = old_to_new[added["id"]]
    post = spec.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [old_to_new[i] for i in special["ids"]]
    for key in ("cls", "sep"):  # BertProcessing stores (token, id) pairs
        if key in post:
            post[key][1] = old_to_new[post[key][1]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = old_to_new[spec["padding"]["pad_id"]]
    backend = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=tokenizer.unk_token, sep_token=tokenizer.sep_token,
        pad_token=tokenizer.pad_token, cls_token=tokenizer.cls_token,
        mask_token=tokenizer.mask_token, model_max_length=tokenizer.model_max_length,
    )


def write_vocab_txt(tokenizer, path: str | Path) -> None:
    """vocab.txt (one token per line, line number = id) for device-side WordPiece tokenizers."""
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ModelError("tokenizer ids are not contiguous; cannot write vocab.txt")
    Path(path).write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")


def trim_embeddings(model, kept: list[int]) -> None:
    """Keep only the rows of ``kept`` in the word-embedding matrix, in that order."""
    old = model.get_input_embeddings()
    pad = getattr(model.config, "pad_token_id", None)
    new_pad = kept.index(pad) if pad in kept else None
    index = torch.tensor(kept, dtype=torch.long)
    new = torch.nn.Embedding(len(kept), old.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        new.weight.copy_(old.weight[index])  # [len(kept), hidden]
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    model.config.pad_token_id = new_pad
