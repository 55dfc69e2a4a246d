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

vocab.txt gives a token's id by its line number, so a token that a line-based reader would split
or alter (one containing U+2028 LINE SEPARATOR, say, from another teacher's vocabulary) would
shift every id after it on the device. Trimming leaves such tokens out when the tokenizer
can never produce them; write_vocab_txt refuses any that remain.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from pocketbert.core.errors import ModelError, ParamsError

# Where line-based readers end a line: the boundaries of Python's str.splitlines, a superset of
# Swift's CharacterSet.newlines (U+000A-U+000D, U+0085, U+2028, U+2029) and of Java's and
# JavaScript's line readers (\n, \r).
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# What str.strip() removes (all of Unicode's whitespace lies below U+3001); includes LINE_BREAKS.
WHITESPACE = frozenset(c for c in map(chr, range(0x3001)) if c.isspace())


def line_problem(token: str) -> str | None:
    """Why ``token`` cannot be one line of vocab.txt, or None when it can.

    A token must not contain a LINE_BREAKS character (the reader would split it and shift every
    later id), be empty (readers that skip blank lines drop it) or start or end with whitespace
    (readers strip lines: transformers' load_vocab strips the newline, tokenizers' WordPiece
    reader trims the line's end)."""
    breaks = [c for c in token if c in LINE_BREAKS]
    if breaks:
        name = unicodedata.name(breaks[0], "(control)")
        return f"contains U+{ord(breaks[0]):04X} {name}, which line-based readers split on"
    if not token:
        return "is empty, and readers that skip blank lines would drop its line"
    if token != token.strip():
        return "starts or ends with whitespace, which line-based readers strip"
    return None


def never_split_by_lines(tokenizer) -> bool:
    """True when no text can produce a token that line_problem refuses: the tokenizer's
    normaliser and pre-tokenizer leave no whitespace (line breaks included) inside a word
    (BERT's turn it into separators or delete it), and WordPiece never yields an empty piece."""
    backend = tokenizer.backend_tokenizer
    for c in sorted(WHITESPACE):
        text = f"a{c}b"
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        words = ([w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
                 if backend.pre_tokenizer is not None else [text])
        if any(c in word for word in words):
            return False
    return True


def kept_token_ids(tokenizer, corpus_ids: Iterable[Iterable[int]], reserve: int,
                   max_rows: int | None = None) -> list[int]:
    """Old ids to keep, ascending (so [PAD]=0 and the special tokens keep their order).

    Tokens that vocab.txt cannot hold (line_problem) are left out when the tokenizer can never
    produce them (never_split_by_lines); special tokens are always kept.

    ``max_rows`` (None: no cap) caps the ids kept: the special and ASCII single-character
    tokens always, then the corpus and reserve tokens by how often the corpus uses them (most
    first; the reserve's words outside the corpus count 0), equal counts by vocabulary id (BERT
    vocabularies list words by descending frequency). Raises ParamsError naming
    'train_student.vocab_max_rows' when the always-kept tokens alone exceed it."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    keep = set(tokenizer.all_special_ids)
    unusable = ({idx for token, idx in vocab.items() if line_problem(token)}
                if never_split_by_lines(tokenizer) else set()) - keep
    words = []
    for token, idx in vocab.items():
        if idx in unusable:
            continue
        bare = token[2:] if token.startswith("##") else token
        if len(bare) == 1:
            if bare.isascii():
                keep.add(idx)
        # BERT vocabularies pad with "[unusedN]" placeholders: never worth keeping.
        elif idx not in keep and not (token.startswith("[unused") and token.endswith("]")):
            words.append(idx)
    counts = Counter(idx for ids in corpus_ids for idx in ids)
    reserved = sorted(words)[:reserve]  # the most frequent words, in the corpus or not
    optional = (set(counts) | set(reserved)) - keep
    if max_rows is not None and len(keep) + len(optional) > max_rows:
        if max_rows < len(keep):
            raise ParamsError(
                f"'train_student.vocab_max_rows' is {max_rows}, but the special tokens and "
                f"the ASCII characters (with their ## forms) alone take {len(keep)} rows; "
                f"use at least {len(keep)}, or null for no cap", key="train_student.vocab_max_rows",
                source="params.yaml")
        optional = set(sorted(optional, key=lambda idx: (-counts[idx], idx))[
            :max_rows - len(keep)])
    return sorted(keep | optional)


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
    """vocab.txt (one token per line, line number = id) for device-side WordPiece tokenizers.

    Raises ModelError, naming the token and its id, when a token cannot be one line
    (line_problem) or the ids are not contiguous."""
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ModelError("tokenizer ids are not contiguous; cannot write vocab.txt")
    for idx, token in enumerate(tokens):
        if problem := line_problem(token):
            raise ModelError(
                f"{path}: token {idx} ({token!r}) {problem}, so vocab.txt would give the "
                f"wrong id to every token after it; set train_student.trim_vocab: true (it "
                "leaves out tokens no text can produce) or remove the token from the teacher's "
                "vocabulary")
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


def cluster_rows(weight: torch.Tensor, kept: list[int], clusters: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every vocabulary row outside ``kept`` replaced by one of ``clusters`` shared rows.

    ``weight``: the word-embedding matrix [vocab, hidden]. The rows of ``kept`` stay exact;
    the others are grouped by k-means (squared Euclidean distance, the error the model sees)
    and each group shares its centroid, the mean of its rows. This is vector quantization of
    the embedding table by rows (a codebook of ``clusters`` vectors for the rare tokens,
    Gray 1984, "Vector quantization"), so a word the trimmed vocabulary would spell out
    piece by piece keeps the teacher's segmentation and an approximation of its vector.

    Returns (remap, rows): remap int32 [vocab], the row of each token id; rows float32
    [len(kept) + k, hidden], the kept rows in ``kept`` order, then the k centroids
    (k <= min(clusters, tokens outside kept); a group no row joined is dropped). Raises
    ValueError when clusters < 1."""
    if clusters < 1:
        raise ValueError(f"clusters must be >= 1, got {clusters}")
    from sklearn.cluster import MiniBatchKMeans

    vocab = weight.shape[0]
    kept_index = torch.tensor(kept, dtype=torch.long)
    rest = sorted(set(range(vocab)) - set(kept))
    remap = torch.empty(vocab, dtype=torch.int32)
    remap[kept_index] = torch.arange(len(kept), dtype=torch.int32)
    exact = weight.detach()[kept_index].float()  # [len(kept), hidden]
    if not rest:
        return remap, exact
    others = weight.detach()[torch.tensor(rest, dtype=torch.long)].float().numpy()
    k = min(clusters, len(rest))
    # MiniBatchKMeans: k-means by mini-batches (Sculley 2010), seconds for 30 k rows x 4 k
    # centroids where full k-means takes minutes; n_init=1 with k-means++ seeding.
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096,
                         max_iter=50).fit(others)
    # groups that no row joined are dropped: every shared row is some token's row
    _, assignment = torch.unique(torch.from_numpy(km.labels_.astype("int64")),
                                 return_inverse=True)
    k = int(assignment.max()) + 1
    centroids = torch.zeros(k, weight.shape[1], dtype=torch.float64)
    centroids.index_add_(0, assignment, torch.from_numpy(others).double())
    counts = torch.bincount(assignment, minlength=k).clamp(min=1).unsqueeze(1)
    centroids = (centroids / counts).float()  # the exact mean of each group's rows
    remap[torch.tensor(rest, dtype=torch.long)] = (len(kept) + assignment).to(torch.int32)
    return remap, torch.cat([exact, centroids])
