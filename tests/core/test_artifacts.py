"""Outputs are written atomically, and DVC re-runs nothing that did not change: checked on real
processes (a stage killed mid-write) and a real `dvc repro` in a copy of this checkout."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from pocketbert.core.artifacts import atomic_path

DVC = Path(sys.executable).parent / "dvc"  # a dependency, installed beside this Python


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_error_inside_atomic_path_leaves_the_old_output_and_no_scratch(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.csv").write_text("old\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_path(target, directory=True) as tmp:
        (tmp / "a.csv").write_text("half of the new", encoding="utf-8")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    assert (target / "a.csv").read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # scratch folder removed


def test_a_process_killed_mid_write_leaves_the_old_output(tmp_path) -> None:
    target, ready = tmp_path / "out.json", tmp_path / "ready"
    target.write_text('{"old": true}\n', encoding="utf-8")
    writer = ("import sys, time; from pathlib import Path\n"
              "from pocketbert.core.artifacts import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('{\"new\": tr', encoding='utf-8')\n"
              "    Path(sys.argv[2]).touch()\n"
              "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target), str(ready)])
    try:
        for _ in range(600):  # at most 60 s for the interpreter to start and write
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "the writer never reached the middle of its write"
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs: the worst case
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert target.read_text(encoding="utf-8") == '{"old": true}\n'
    # what is left is a hidden scratch folder beside it, never the target's name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("out.json", "ready")]
    assert leftovers and all(name.startswith(".out.json.") for name in leftovers)


def test_a_second_dvc_repro_runs_nothing_and_leaves_outputs_byte_identical(tmp_path) -> None:
    assert DVC.is_file(), f"{DVC} missing: run `make setup`"
    work = tmp_path / "work"
    # a copy of the committed checkout (git's files, without .venv, models or data outputs)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    env = {**os.environ, "PATH": f"{DVC.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(work)}

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout + done.stderr

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "-c", "user.email=t@localhost", "-c", "user.name=t", "commit", "-q", "-m", "c")
    first = run(str(DVC), "repro", "--single-item", "split")
    assert "Running stage 'split'" in first
    digest = _tree_digest(work / "data" / "split")
    metrics = (work / "metrics" / "split.json").read_bytes()
    second = run(str(DVC), "repro", "--single-item", "split")
    assert "Running stage" not in second and "didn't change" in second
    assert _tree_digest(work / "data" / "split") == digest
    assert (work / "metrics" / "split.json").read_bytes() == metrics
    # and running the stage again by force gives the same bytes: the output is deterministic
    run(str(DVC), "repro", "--single-item", "--force", "split")
    assert _tree_digest(work / "data" / "split") == digest
    assert (work / "metrics" / "split.json").read_bytes() == metrics
