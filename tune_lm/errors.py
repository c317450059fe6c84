"""User-facing errors: one clear paragraph, exit code 2, no stack trace."""


class TuneLMError(Exception):
    """Base of every error caused by user input (flags, YAML, data files, servers).

    The message names the file/field/flag at fault and the fix. Command-line entry
    points print it and exit with ``exit_code``; anything else is a bug and keeps its
    stack trace.
    """

    exit_code = 2


class ConfigError(TuneLMError):
    """An invalid configuration value or combination of values."""


class DataError(TuneLMError):
    """A corpus that is missing, malformed, or too small."""
