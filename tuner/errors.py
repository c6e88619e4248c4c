"""Errors the command line turns into a one-line message and exit status 2."""

from __future__ import annotations


class UsageError(ValueError):
    """A flag, a path or a server the user named cannot work; the message names the fix."""
