"""Errors that carry a message meant for the user, and the one way entry points report them."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeepArtError(Exception):
    """Base class: a problem the user can fix (bad config, missing file, unreadable checkpoint)."""


class ConfigError(DeepArtError):
    """A config key has an impossible value."""


class DataError(DeepArtError):
    """A dataset file is missing or malformed."""


class CheckpointError(DeepArtError):
    """A checkpoint is missing, unreadable or not a deepart checkpoint."""


def bad_value(key: str, value: Any, allowed: str) -> ConfigError:
    """The one message for a config value that cannot work: the key, the value and what is allowed."""
    return ConfigError(f"{key}={value!r} is not allowed: expected {allowed}.")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise `bad_value(key, value, allowed)` unless `ok`."""
    if not ok:
        raise bad_value(key, value, allowed)


def require_choice(key: str, value: Any, choices: tuple | list) -> None:
    """`value` must be one of `choices` (listed in the message as `a | b | c`)."""
    require(value in choices, key, value, " | ".join(str(c) for c in choices))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty: the reason
    quoted in a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report_errors(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn`; a DeepArtError becomes one clear line on stderr (or the job's log) and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except DeepArtError as exc:
        if logging.getLogger().handlers:  # inside a Hydra job: console and the job's log file
            logging.getLogger("deepart").error("%s", exc)
        else:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
