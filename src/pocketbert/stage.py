"""What every DVC stage shares: offline mode, argv parsing, params logging, error exits."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from pocketbert import params
from pocketbert.errors import PocketbertError
from pocketbert.params import as_dict

# Nothing may download weights or data at run time.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from tokenizers


def parse_args(argv: Sequence[str] | None, doc: str | None, inputs: Sequence[str],
               outputs: Sequence[str]) -> tuple[str, dict[str, str], dict[str, str]]:
    """Parse ``--params`` and one ``--<name> PATH`` per input and output."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    for name in (*inputs, *outputs):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True)
    args = vars(parser.parse_args(argv))
    return (args["params"], {k: args[k] for k in inputs}, {k: args[k] for k in outputs})


def log_params(section: str, params: Any) -> None:
    """Print the resolved params at a stage's start."""
    text = yaml.safe_dump({section: as_dict(params)}, sort_keys=False)
    print(f"[{section}] resolved params:\n{text}", file=sys.stderr, flush=True)


def guarded(body: Callable[[], Any]) -> Any:
    """Run a stage body; bad input becomes one 'error:' line on stderr and exit status 2."""
    try:
        return body()
    except PocketbertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cli(argv: Sequence[str] | None, doc: str | None, spec: tuple[str, ...],
        inputs: Sequence[str], outputs: Sequence[str], run: Callable[..., Any]) -> Any:
    """A stage's main: parse paths, read exactly the params in ``spec`` (sections and
    ``section.key`` items, in order), log them, and call ``run(*values, inputs, outputs)``."""

    def body() -> Any:
        params_path, ins, outs = parse_args(argv, doc, inputs, outputs)
        values = [params.load_key(params_path, item) if "." in item
                  else params.load(params_path, item) for item in spec]
        for item, value in zip(spec, values, strict=True):
            if "." not in item:
                log_params(item, value)
        return run(*values, ins, outs)

    return guarded(body)
