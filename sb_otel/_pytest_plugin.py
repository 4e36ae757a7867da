"""sb-otel's pytest plugin (entry point ``pytest11``): tests never touch the user's real session store.

Installed with sb-otel, it gives every test ``SB_OTEL_STORE=memory`` and a throw-away ``SB_OTEL_DATA_DIR``,
so a tracker built with the defaults in a test (yours, or session-buddy's suite run against sb-otel) starts
from an empty store and cannot meet event ids from last week's run. Turn it off with ``sb_otel_isolate =
false`` in the pytest ini section, or ``-p no:sb_otel``. Fixtures: ``sb_otel_isolated`` (the data directory
of this test) and ``sb_otel_telemetry`` (:func:`sb_otel.testing.capture_telemetry`).

Kept free of heavy imports: it loads in every pytest run of an environment that has sb-otel installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_INI = "sb_otel_isolate"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI,
        type="bool",
        default=True,
        help="sb-otel: give every test a memory session store and a temporary data directory (default true)",
    )


@pytest.fixture
def sb_otel_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A memory session store and a private data directory for this test; returns the directory."""
    data_dir = tmp_path_factory.mktemp("sb-otel-data")
    monkeypatch.setenv("SB_OTEL_STORE", "memory")
    monkeypatch.setenv("SB_OTEL_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture(autouse=True)
def _sb_otel_isolation(request: pytest.FixtureRequest) -> None:
    if request.config.getini(_INI):
        request.getfixturevalue("sb_otel_isolated")


@pytest.fixture
def sb_otel_telemetry() -> Iterator[Any]:
    """Spans, metrics and logs captured in memory; pass ``sb_otel_telemetry.providers`` to ``instrument``."""
    from sb_otel.testing import capture_telemetry

    with capture_telemetry() as captured:
        yield captured
