"""The exceptions that reach the user as a single line, and the exit codes they map to.

A leaf module: every part of preftune may import it, it imports nothing of preftune.
The CLI catches :class:`PreftuneError` and prints ``error: <message>`` with exit code
:data:`EXIT_USAGE`; :class:`IncompleteRun` prints ``incomplete: <message>`` with
:data:`EXIT_INCOMPLETE`. Any other exception is a bug and keeps its traceback.
"""

EXIT_USAGE = 2
"""What was asked cannot be done as asked (input, config, specification): nothing, or nothing more, was done."""

EXIT_INCOMPLETE = 3
"""The run did what it could and kept it, but some of the work failed (judge calls that got no verdict,
an endpoint that could not be reached); rerunning the same command asks only for what is missing."""


class PreftuneError(Exception):
    """A problem with what the user asked for (input, config, specification)."""


class SpecError(PreftuneError, ValueError):
    """An objective specification or setting that cannot work."""


class IncompleteRun(PreftuneError):
    """Part of the work failed; what succeeded is kept (written, or in a verdict store).

    The message says how much failed and what a rerun does. The CLI exits with :data:`EXIT_INCOMPLETE`.
    """
