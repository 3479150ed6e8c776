"""The detector's errors, in a module of their own: the command line catches them without importing numpy."""

from __future__ import annotations


class ModelError(Exception):
    """A model file that cannot be used: missing, malformed, or not matching its arrays."""


class CorpusError(Exception):
    """A corpus line that does not follow the label guide; the message names file and line."""
