"""Scratch copies of this repository for the drivers: one git clone per workspace carrying the
working tree as it is, and one environment for the commands run in it."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
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


def measure(command: Sequence[str], *, cwd: Path, env: dict[str, str] | None, log: Path,
            append: bool = False) -> dict:
    """Run ``command``, its output to ``log`` (appended when ``append``); returns
    {'wall_s', 'peak_rss_gib', 'returncode'}: wall time in seconds and the peak resident set
    in GiB of its process tree.

    Peak RSS is the kernel's ru_maxrss from wait4: the largest resident set reached by the
    process or any descendant it waited for (Linux getrusage(2); KiB units). It is the biggest
    single process, not a sum over processes running at once."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
            "returncode": os.waitstatus_to_exitcode(status)}
