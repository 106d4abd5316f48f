"""Errors that are the user's to fix (a config key, a data file, a checkpoint path), and how the CLI reports them.

``train.py`` and ``eval.py`` print such an error as one line naming the file or key and exit with code 1,
without a traceback; ``HYDRA_FULL_ERROR=1`` re-raises it so that the traceback is there when it is wanted.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Base of the errors a user fixes by changing a config value, a file or a path."""


class ConfigError(UserError, ValueError):
    """A config value is missing, misspelt or out of range; the message names the key."""


class DataError(UserError, ValueError):
    """The data does not have the layout or content the config asks for; the message names the file or folder."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder named by the config does not exist; the message names it and its key."""


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint to resume or evaluate is missing, or a run folder already belongs to another run."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint needs full unpickling (which can run code) and the run did not say ``trust_checkpoint=true``."""


class WeightsMismatchError(UserError, KeyError):
    """A weights file lacks (or has other shapes for) the weights of the network it is loaded into."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DivergenceError(UserError, RuntimeError):
    """Training stopped on a non-finite or exploding loss; the message names the step and the last good checkpoint."""


def _omegaconf_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
    )

    return MissingMandatoryValue, ConfigKeyError, ConfigAttributeError, InterpolationResolutionError


def user_facing(error: BaseException) -> BaseException | None:
    """The user error inside ``error`` (Hydra wraps instantiation failures), or None for a genuine bug."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (UserError, *_omegaconf_errors())):
            return error
        error = error.__cause__ or error.__context__
    return None


def one_line(error: BaseException) -> str:
    """``error: <message>`` on a single line (OmegaConf appends the full key and object type on new lines)."""
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    key = getattr(error, "full_key", None)
    if key and key not in message:
        message = f"{message} (config key `{key}`)"
    return f"error: {message}"


def report_user_errors(main: F) -> F:
    """Decorate a CLI entry point: user errors become one line on stderr and exit code 1."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as error:
            cause = user_facing(error)
            if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(one_line(cause), file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
