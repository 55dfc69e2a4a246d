"""Text augmentation of the train split: WordNet synonym replacement and random deletion.

Deterministic: each sentence draws from its own generator seeded by (seed, sentence), so a
variant does not change when other rows are added or removed. Label-bearing cue words, tokens
with digits and short function words are never touched; a variant is never empty and never an
exact copy of its source or of another variant of it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Function words: replacing them with WordNet "synonyms" gives nonsense ("a" -> "angstrom").
STOPWORDS = frozenset(
    "a an the and or but of to for from by with without on at into onto over under up down out "
    "off as is are was were be been being am it its this that these those there here he she they "
    "we you i me him her them us my your our their his what which who whom whose how why where "
    "so too very also just than per via has have had does did doing done can could would shall "
    "about each every any all some".split()
)
# Number words are as label-bearing as digits ("no more than two"); WordNet maps "two" -> "II".
# (WordNet maps "fifteen" -> "XV" and "dozen" -> "XII" too, so the list covers every cardinal
# word, the ordinals up to twelfth and the common quantity words.)
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand million billion dozen half quarter once twice thrice single double "
    "triple first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "hundreds thousands millions dozens".split()
)
# A whitespace token = leading punctuation, a core word, trailing punctuation.
_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$")
# Drawing again after a failed variant is cheap; after this many tries the variant is skipped.
MAX_ATTEMPTS = 10
# Only the commonest senses: later synsets of a word are mostly rare meanings.
SENSES = 2

SynonymFn = Callable[[str], list[str]]


@dataclass
class AugmentStats:
    source_rows: int = 0
    added_rows: int = 0
    skipped_variants: int = 0
    words_changed: int = 0
    by_technique: Counter = field(default_factory=Counter)


def wordnet_synonyms(wordnet) -> SynonymFn:
    """Synonym lookup over a loaded nltk WordNet reader, cached per word."""
    cache: dict[str, list[str]] = {}

    def synonyms(word: str) -> list[str]:
        key = word.lower()
        if key not in cache:
            # Only base forms: a lemma-level synonym of "merged" would be "blend", which breaks
            # the grammar; inflected words are left alone.
            if any(wordnet.morphy(key, pos) not in (None, key) for pos in "nvar"):
                cache[key] = []
                return cache[key]
            names = {
                lemma.name().replace("_", " ")
                for synset in wordnet.synsets(key)[:SENSES]
                for lemma in synset.lemmas()
            }
            cache[key] = sorted(n for n in names if n.lower() != key and n.isascii())
        return cache[key]

    return synonyms


def _split(token: str) -> tuple[str, str, str]:
    match = _TOKEN.match(token)
    assert match is not None  # the pattern matches any string
    return match.group(1), match.group(2), match.group(3)


def _eligible(core: str, keep: frozenset[str]) -> bool:
    low = core.lower()
    return (core.isalpha() and len(core) > 1 and low not in keep and low not in STOPWORDS
            and low not in NUMBER_WORDS)


def _match_case(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[:1].isupper() else word


def synonym_replacement(text: str, rng: random.Random, probability: float,
                        synonyms: SynonymFn, keep: frozenset[str]) -> tuple[str, int]:
    """Replace each eligible word that has a synonym with probability ``probability``."""
    out, changed = [], 0
    for token in text.split():
        lead, core, trail = _split(token)
        if _eligible(core, keep) and rng.random() < probability:
            options = synonyms(core)
            if options:
                core = _match_case(rng.choice(options), core)
                changed += 1
        out.append(lead + core + trail)
    return " ".join(out), changed


def random_deletion(text: str, rng: random.Random, probability: float,
                    keep: frozenset[str]) -> tuple[str, int]:
    """Delete each eligible word with probability ``probability``; keep at least one word."""
    tokens = text.split()
    out, deleted = [], 0
    for token in tokens:
        lead, core, trail = _split(token)
        # a word carrying punctuation other than a comma keeps the sentence's structure
        deletable = not lead and trail in ("", ",") and _eligible(core, keep)
        if deletable and rng.random() < probability and deleted < len(tokens) - 1:
            deleted += 1
            continue
        out.append(token)
    return " ".join(out), deleted


def augment_text(text: str, factor: int, seed: int, synonym_probability: float,
                 deletion_probability: float, synonyms: SynonymFn, keep: frozenset[str],
                 stats: AugmentStats | None = None) -> list[tuple[str, str]]:
    """Up to ``factor`` distinct variants of ``text`` as (variant, technique) pairs."""
    rng = random.Random(f"{seed}:{text}")
    seen = {text}
    variants: list[tuple[str, str]] = []
    for _ in range(factor):
        for _attempt in range(MAX_ATTEMPTS):
            technique = rng.choice(("synonym", "deletion"))
            if technique == "synonym":
                new, changed = synonym_replacement(text, rng, synonym_probability, synonyms, keep)
            else:
                new, changed = random_deletion(text, rng, deletion_probability, keep)
            if new.strip() and new not in seen:
                seen.add(new)
                variants.append((new, technique))
                if stats is not None:
                    stats.words_changed += changed
                    stats.by_technique[technique] += 1
                break
        else:
            if stats is not None:
                stats.skipped_variants += 1
    return variants
