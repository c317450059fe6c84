"""User-facing errors: one clear paragraph, exit code 2, no stack trace."""

import reprlib


class TuneLMError(Exception):
    """Base of every error caused by user input (flags, YAML, data files, servers).

    The message names the file/field/flag at fault and the fix. Command-line entry
    points print it and exit with ``exit_code``; anything else is a bug and keeps its
    stack trace.
    """

    exit_code = 2


class ConfigError(TuneLMError):
    """An invalid configuration value or combination of values."""


class RefusedAtStart(ConfigError):
    """Refused once the experiment was pinned (its space.json and search.json written),
    before it ran: those go with the folder, as with any refusal (e.g. a search of the
    same name from another folder took the MLflow experiment at the same moment)."""


class DataError(TuneLMError):
    """A corpus that is missing, malformed, or too small."""


def short_repr(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for echoing input in a message:
    a 10,000-item list (or an expanded YAML alias) must not become the message."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 12
    shortener.maxlevel = 3
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
