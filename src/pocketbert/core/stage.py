"""What every DVC stage shares: offline mode, argv parsing, declared params, error exits.

A stage module (``stages/<name>.py``) declares three tuples and a ``run``::

    PARAMS = ("export", "tokenize.max_length")   # whole sections and single section.key items
    INPUTS = ("model", "tokenize")               # one --<name> PATH option each
    OUTPUTS = ("out", "metrics")

    def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict: ...

    def main(argv=None) -> dict:
        return stage.cli(sys.modules[__name__], argv)

``run`` reads params by section and key (``params.export.atol``,
``params.tokenize.max_length``); reading a key the stage did not declare in PARAMS raises, so
dvc.yaml's ``params:`` (checked against PARAMS by a test) is also what the code reads at run
time. ``inputs`` and ``outputs`` map each declared name to a ``Path``. A stage may also declare
``OPTIONS = ("api_cache",)``: optional ``--<name> PATH`` options for a path that is neither a
dep nor an out (a cache outside DVC); each is in ``inputs`` only when given.

Imports, the one rule: transformers and datasets (which read the HF_* variables when imported),
coremltools (which reports on import) and anything the ``pocketbert predict`` path does not need
(torch above all: cli, onnx_runner, batching, contract and evaluation never load it) are imported
inside the functions that use them. This module sets the offline environment below, so a stage
that imports it is offline whatever it imports later. Everything else is imported at the top.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from pocketbert.core import params as params_io
from pocketbert.core.errors import ParamsError, reported

# Nothing may download weights or data at run time.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from tokenizers

Paths = Mapping[str, Path]
"""A stage's inputs or outputs: declared name -> path (as written in dvc.yaml's cmd)."""


class UndeclaredParamError(LookupError):
    """A stage read a params key that its PARAMS (and so dvc.yaml) does not declare."""


@dataclass(frozen=True)
class _Keys:
    """The declared keys of a section a stage reads only in part."""

    section: str
    values: Mapping[str, Any]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        if key not in self.values:
            raise UndeclaredParamError(
                f"'{self.section}.{key}' is read but not declared; add it to the stage's "
                f"PARAMS and to its params in dvc.yaml")
        return self.values[key]


class Params:
    """The params a stage declared, by section: ``p.export`` is the whole ExportParams when
    the section is declared, ``p.tokenize.max_length`` a single declared key.

    Raises UndeclaredParamError on a section or key that is not declared.
    """

    def __init__(self, sections: Mapping[str, Any]) -> None:
        """``sections``: section name -> its params dataclass (the whole section is declared)
        or a mapping of its declared keys to values (part of it is)."""
        self._sections = {
            name: _Keys(name, dict(value)) if isinstance(value, Mapping) else value
            for name, value in sections.items()
        }

    @classmethod
    def load(cls, path: str | Path, spec: Sequence[str]) -> Params:
        """Read exactly the sections and ``section.key`` items of ``spec`` from a params file.

        Raises ParamsError (via pocketbert.core.params) on a missing file, bad YAML or bad value."""
        sections: dict[str, Any] = {}
        for item in spec:
            if "." in item:
                section, key = item.split(".", 1)
                sections.setdefault(section, {})[key] = params_io.load_key(path, item)
            else:
                sections[item] = params_io.load(path, item)
        return cls(sections)

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_"):
            raise AttributeError(section)
        if section not in self._sections:
            raise UndeclaredParamError(
                f"params section '{section}' is read but not declared; add it (or its keys) "
                f"to the stage's PARAMS and to its params in dvc.yaml")
        return self._sections[section]

    def resolved(self) -> dict[str, Any]:
        """The declared params as plain YAML/JSON values, for logging."""
        return {name: dict(value.values) if isinstance(value, _Keys)
                else params_io.as_dict(value) for name, value in self._sections.items()}


def parse_args(argv: Sequence[str] | None, doc: str | None, inputs: Sequence[str],
               outputs: Sequence[str], options: Sequence[str] = (),
               ) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """Parse ``--params``, one required ``--<name> PATH`` per input and output and one optional
    ``--<name> PATH`` per option; given options join the inputs."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    for name in (*inputs, *outputs):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True)
    for name in options:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
    args = vars(parser.parse_args(argv))
    given = [k for k in options if args[k] is not None]
    return (Path(args["params"]), {k: Path(args[k]) for k in (*inputs, *given)},
            {k: Path(args[k]) for k in outputs})


def log_params(name: str, p: Params) -> None:
    """Print the resolved params at a stage's start."""
    text = yaml.safe_dump(p.resolved(), sort_keys=False)
    print(f"[{name}] resolved params:\n{text}", file=sys.stderr, flush=True)


def cli(module: ModuleType, argv: Sequence[str] | None = None) -> Any:
    """A stage's main: parse the paths of ``module.INPUTS``/``OUTPUTS``, read exactly
    ``module.PARAMS``, log them and return ``module.run(p, inputs=..., outputs=...)``.

    Exits with status 2 and one line on stderr on bad input; a params error found while the
    stage runs names the params file it was given."""

    with reported():
        params_path, ins, outs = parse_args(argv, module.__doc__, module.INPUTS, module.OUTPUTS,
                                            getattr(module, "OPTIONS", ()))
        p = Params.load(params_path, module.PARAMS)
        log_params(module.__name__.rsplit(".", 1)[-1], p)
        try:
            return module.run(p, inputs=ins, outputs=outs)
        except ParamsError as exc:
            raise exc.read_from(params_path) from None
