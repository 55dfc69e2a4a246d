"""Offline WordNet for synonym replacement.

Order of preference: nltk's own ``wordnet`` corpus when it is installed (``nltk.download``);
else Debian's WordNet 3.0 files (packages wordnet-base + wordnet-sense-index), copied into an nltk
data folder under the user's cache, because nltk only reads corpora from its data folders and
Debian ships no ``lexnames`` file. No download is attempted.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from pocketbert.core.errors import PocketbertError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# nltk's WordNetCorpusReader opens these (index/data per part of speech, exception lists).
_FILES = [f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")]
_FILES += [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")] + ["index.sense"]
# The fixed table of lexicographer files from the lexnames(5WN) man page of WordNet 3.0;
# the third column is the syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissing(PocketbertError):
    """Neither nltk's wordnet corpus nor Debian's WordNet files are installed."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pocketbert" / "nltk_data"


def lexnames_text() -> str:
    return "".join(
        f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)
    )


def assemble_from_debian(source: Path, target: Path) -> Path:
    """Copy Debian's WordNet files into ``target/corpora/wordnet`` and write lexnames."""
    missing = [f for f in _FILES if not (source / f).is_file()]
    if missing:
        raise WordNetMissing(f"{source}: WordNet files missing: {missing}")
    corpus = target / "corpora" / "wordnet"
    if (corpus / "lexnames").is_file():
        return target
    tmp = corpus.with_name(".wordnet.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in _FILES:
        shutil.copyfile(source / name, tmp / name)
    (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    shutil.rmtree(corpus, ignore_errors=True)
    os.replace(tmp, corpus)
    return target


def load(debian_dir: Path = DEBIAN_WORDNET, cache: Path | None = None) -> Any:
    """Return nltk's WordNet corpus reader, loaded offline."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        pass
    if not debian_dir.is_dir():
        raise WordNetMissing(
            "WordNet is not installed. Install it with one of: "
            "'apt-get install wordnet-base wordnet-sense-index' (Debian/Ubuntu), or "
            "python -c \"import nltk; nltk.download('wordnet')\" where downloads are allowed"
        )
    root = assemble_from_debian(debian_dir, cache or cache_dir())
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk only opens corpora under its data folders
    with warnings.catch_warnings():
        # WordNet 3.0 alone has no Open Multilingual Wordnet; we only need English synonyms
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
