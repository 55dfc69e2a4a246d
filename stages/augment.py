"""augment: add WordNet synonym-replacement and random-deletion variants of the train split.

Only the train split is augmented; validation and test stay as written. The output holds the
original rows followed by their variants, with an ``augmentation`` column (none/synonym/deletion).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from pocketbert import augmentation, dataset, stage, wordnet
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("augment",)
INPUTS = ("train",)
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths,
        synonyms: augmentation.SynonymFn | None = None) -> dict:
    """``synonyms`` replaces WordNet (tests)."""
    p = params.augment
    rows = dataset.read_examples(inputs["train"])
    if synonyms is None and p.factor > 0 and p.synonym_probability > 0:
        synonyms = augmentation.wordnet_synonyms(wordnet.load())
    keep = frozenset(w.lower() for w in p.keep_words)
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
    }
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
