"""Polis: an open city data platform that counts and never watches."""

__version__ = "0.1.0"
