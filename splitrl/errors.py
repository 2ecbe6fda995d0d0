"""The one usage-error type: bad input a user can fix (a config field, a flag, a file, a peer).

Every CLI subcommand raises `UsageError` for bad input; `splitrl.cli.main` prints it once as
``splitrl <command>: error: <message>`` and exits with status 2. Library code may raise it too
(it is a ``ValueError``, so callers that catch ``ValueError`` keep working). The message names
the field and what is allowed.
"""
from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["UsageError", "UsageArgumentParser", "DefaultsFormatter"]


class UsageError(ValueError):
    """A user error: printed as one line, exit status 2."""


class UsageArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the project's error shape: a bad flag is ONE line on stderr
    (``prog: error: message (see prog --help)``), exit status 2 — no usage block, no traceback.
    Subparsers made from it inherit the behaviour. ``--help`` shows every option's default
    (`DefaultsFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option that has a default worth stating (once: not when the
    help already states it, with ``%(default)s`` or in words as ``(default: ...)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "(default:" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        if isinstance(action.default, list) and not action.default:
            return text
        return f"{text} (default: %(default)s)".strip()
