"""Exceptions raised for programmer misuse only.

Runtime problems caused by clients (bad events, a failing lifecycle manager, a broken store) never raise out of
the tracker: they become ``status="error"`` results. These exceptions exist for the places where raising is the
kind thing to do — a misconfiguration found while setting things up::

    SbOtelError
    ├── ConfigError   a setting has a value we cannot use
    └── StoreError    the session store cannot be opened or written
"""

from __future__ import annotations


class SbOtelError(Exception):
    """Base class of every exception sb-otel raises on purpose."""


class ConfigError(SbOtelError):
    """A setting (argument or environment variable) has a value sb-otel cannot use."""


class StoreError(SbOtelError):
    """The session store cannot be opened, migrated or written."""
