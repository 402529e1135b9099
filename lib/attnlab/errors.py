"""Errors raised by attnlab before any work starts."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value: the message names the field, the bad value and the valid choices."""
