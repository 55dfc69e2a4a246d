"""Scratch copies of this repository for the drivers: one git clone per workspace carrying the
working tree as it is, and one environment for the commands run in it."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _listed(source: Path, *flags: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(source), "ls-files", "-z", *flags],
                         check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def scratch_repo(source: Path, dest: Path) -> Path:
    """``dest`` as a git clone of repository ``source`` (cloned once; an existing clone is
    brought up to date) carrying ``source``'s working tree as it is: every tracked or untracked,
    not ignored file whose content differs is copied, files deleted in the working tree are
    removed, and ``web/node_modules`` (installed by make setup, ignored by git) is linked from
    ``source`` for the web stage. Returns ``dest``. Raises CalledProcessError when git fails."""
    if not (dest / ".git").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    for name in _listed(source, "--deleted"):
        (dest / name).unlink(missing_ok=True)
    for name in _listed(source, "--cached", "--others", "--exclude-standard"):
        src, dst = source / name, dest / name
        if src.is_file() and not (dst.is_file() and filecmp.cmp(src, dst, shallow=False)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    modules, link = source / "web" / "node_modules", dest / "web" / "node_modules"
    if modules.is_dir() and not link.exists():
        link.symlink_to(modules.resolve())
    return dest


def environment(repo: Path) -> dict[str, str]:
    """The environment of a command run in scratch ``repo``: offline model hub, the repo's own
    library first on the import path (not the checkout installed in the environment), and this
    interpreter's bin folder (dvc, python) first on PATH."""
    return dict(os.environ, HF_HUB_OFFLINE="1",
                PYTHONPATH=os.pathsep.join([str(repo / "src"), str(repo)]),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
