"""Ringside: watch public feeds for challenges and rivalries."""

__version__ = "0.1.0"
