"""The one usage-error type: bad input a user can fix (a config field, a flag, a file, a peer).

Every CLI subcommand raises `UsageError` for bad input; `splitrl.cli.main` prints it once as
``splitrl <command>: error: <message>`` and exits with status 2. Library code may raise it too
(it is a ``ValueError``, so callers that catch ``ValueError`` keep working). The message names
the field and what is allowed.
"""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A user error: printed as one line, exit status 2."""
