"""augment: add WordNet synonym-replacement and random-deletion variants of the train split.

Only the train split is augmented; validation and test stay as written. The output holds the
original rows followed by their variants, with an ``augmentation`` column (none/synonym/deletion).

augment.keep_words: auto protects the embedded data set's cue words
(pocketbert.core.params.CUE_WORDS) only when split.csv is that data set; for any other CSV it
protects none, and the metrics say which list was used (``keep_words`` and ``keep_words_from``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from pocketbert.core import stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.core.params import CUE_WORDS, EMBEDDED_CSV
from pocketbert.data import augmentation, dataset, wordnet

PARAMS = ("augment", "split.csv")
INPUTS = ("train",)
OUTPUTS = ("out", "metrics")


def keep_words(given: tuple[str, ...] | str, csv: str) -> tuple[tuple[str, ...], str]:
    """The cue words augmentation leaves alone, and where they come from.

    ``given`` is augment.keep_words: a list is used as it is ("params"); "auto" gives CUE_WORDS
    when ``csv`` (split.csv) is the embedded data set ("auto: embedded data set"), else no
    words ("auto: none, split.csv is not the embedded data set")."""
    if given != "auto":
        return tuple(given), "params"
    if dataset.same_file(csv, EMBEDDED_CSV):
        return CUE_WORDS, "auto: embedded data set"
    return (), "auto: none, split.csv is not the embedded data set"


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths,
        synonyms: augmentation.SynonymFn | None = None) -> dict:
    """``synonyms`` replaces WordNet (tests)."""
    p = params.augment
    rows = dataset.read_examples(inputs["train"])
    if synonyms is None and p.factor > 0 and p.synonym_probability > 0:
        synonyms = augmentation.wordnet_synonyms(wordnet.load())
    words, keep_from = keep_words(p.keep_words, params.split.csv)
    keep = frozenset(w.lower() for w in words)
    stats = augmentation.AugmentStats(source_rows=len(rows))
    added: list[dataset.Example] = []
    for ex in tqdm(rows, desc="augment", unit="row", mininterval=2):
        for text, technique in augmentation.augment_text(
            ex.text, p.factor, p.seed, p.synonym_probability, p.deletion_probability,
            synonyms or (lambda _w: []), keep, stats,
        ):
            added.append(dataset.Example(text, ex.label, ex.line, technique))
    stats.added_rows = len(added)
    with atomic_path(outputs["out"], directory=True) as tmp:
        dataset.write_examples(tmp / "train.csv", rows + added)
    metrics = {
        "source_rows": stats.source_rows,
        "added_rows": stats.added_rows,
        "total_rows": stats.source_rows + stats.added_rows,
        "added.synonym": stats.by_technique["synonym"],
        "added.deletion": stats.by_technique["deletion"],
        "skipped_variants": stats.skipped_variants,
        "words_changed": stats.words_changed,
        "words_changed_per_variant": stats.words_changed / max(1, stats.added_rows),
        "keep_words": len(keep),
        "keep_words_from": keep_from,
    }
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
