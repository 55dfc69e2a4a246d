"""Typed errors for impossible input. Each message names the file, row, column or params key
and says what to do; ``reported`` turns them into one line on stderr and exit status 2."""

import contextlib
import sys
from collections.abc import Iterator


class PocketbertError(ValueError):
    """Base class: bad input the user can fix."""


class ParamsError(PocketbertError):
    """A params.yaml key is unknown, of the wrong type, or has an impossible value.

    ``key``: the full key at fault ('train_student.alpha') where one is; ``fix``: what to do;
    ``source``: the params file the value came from, shown before the message (None: the
    message is shown as is). :func:`pocketbert.core.params.load` sets it to the file it read.
    """

    def __init__(self, message: str, *, key: str | None = None, fix: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(message)
        self.message, self.key, self.fix, self.source = message, key, fix, source

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message

    def read_from(self, path: object) -> "ParamsError":
        """This error, named after the params file ``path`` its value came from (an error
        shown as is, ``source`` None, stays so); returned for ``raise``."""
        if self.source is not None:
            self.source = str(path)
        return self


class DataError(PocketbertError):
    """An input data file cannot be used as it is."""


class ModelError(PocketbertError):
    """A model folder is missing, of the wrong family, or does not match the labels."""


class ApiError(PocketbertError):
    """A teacher endpoint (teacher.mode api) is unreachable or answered something unusable."""


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """The one way a command ends on bad input: a PocketbertError raised inside becomes one
    'error: ...' line on stderr and exit status 2 (SystemExit(2), argparse's status for a
    usage error), without a traceback. Every entry point (stages, the pocketbert command, the
    drivers under runs/) runs its body inside it."""
    try:
        yield
    except PocketbertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
