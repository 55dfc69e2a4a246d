"""Typed errors for impossible input. Each message names the file, row, column or params key
and says what to do; stages turn them into one line on stderr and a non-zero exit."""


class PocketbertError(ValueError):
    """Base class: bad input the user can fix."""


class ParamsError(PocketbertError):
    """A params.yaml key is unknown, of the wrong type, or has an impossible value."""


class DataError(PocketbertError):
    """An input data file cannot be used as it is."""


class ModelError(PocketbertError):
    """A model folder is missing, of the wrong family, or does not match the labels."""


class ApiError(PocketbertError):
    """A teacher endpoint (teacher.mode api) is unreachable or answered something unusable."""
