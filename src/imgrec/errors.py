"""User-facing errors: each is printed as one line and the process exits non-zero.

Anything else that escapes is a bug and keeps its traceback.
"""


class ImgrecError(Exception):
    """Base class for errors caused by the user's input (config, files, network)."""


class ConfigError(ImgrecError):
    """A config value is invalid; the message names the key."""


class DataNotFoundError(ImgrecError):
    """Dataset files are missing; the message lists where they were looked for."""


class DataFileError(ImgrecError):
    """A dataset file is truncated, corrupted or not in the expected format; the message names it."""


class CheckpointWriteError(ImgrecError):
    """A checkpoint could not be written (no space, a read-only folder); the message names it."""


def one_line(err: BaseException) -> str:
    """An exception's message collapsed onto one line (for the one-line errors above)."""
    return " ".join(str(err).split()) or type(err).__name__
