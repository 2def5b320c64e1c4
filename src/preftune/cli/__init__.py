"""Command-line entry points: ``preftune <command> ...`` (see :mod:`preftune.cli.main`)."""
