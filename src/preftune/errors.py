"""The one exception type that reaches the user as a single line.

A leaf module: every part of preftune may import it, it imports nothing of preftune.
The CLI catches :class:`PreftuneError` and prints ``error: <message>`` with exit code 2;
any other exception is a bug and keeps its traceback.
"""


class PreftuneError(Exception):
    """A problem with what the user asked for (input, config, specification)."""


class SpecError(PreftuneError, ValueError):
    """An objective specification or setting that cannot work."""
