"""Errors raised for search spaces a user named or wrote wrongly."""

from __future__ import annotations


class SpaceError(ValueError):
    """A search space, or an override of one, is not usable; the message says why."""
