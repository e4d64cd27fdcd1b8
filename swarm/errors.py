"""Exceptions swarm raises to its callers."""

from __future__ import annotations

__all__ = ["ConfigError", "MessageTooLarge", "ProtocolError", "SwarmError"]


class SwarmError(Exception):
    """Base class of swarm's own exceptions."""


class ConfigError(SwarmError, ValueError):
    """An option or config file value is wrong; the message starts with the key's name."""


class MessageTooLarge(SwarmError, ValueError):
    """A message encodes to more than `maxMessageSize` bytes."""


class ProtocolError(SwarmError):
    """A peer sent bytes that break the wire protocol; its link is closed, nothing else is affected."""
