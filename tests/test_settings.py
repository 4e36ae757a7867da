"""Settings: declared once, each documented by the generated settings page, and read as documented."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sb_otel import ConfigError
from sb_otel._settings import MAX_DURATION, SB_OTEL_DATA_DIR, SETTINGS, data_dir, parse_bool, parse_duration

REPO = Path(__file__).resolve().parent.parent
SETTINGS_PAGE = REPO / "docs" / "pages" / "reference" / "settings.md"
PYTHON_GUIDE = REPO / "docs" / "pages" / "guides" / "python.md"


def test_every_setting_is_documented_with_its_default_and_meaning() -> None:
    """The settings page's table is generated from SETTINGS (docs/hooks.py): each has a default and a meaning."""
    assert "<!-- settings-table -->" in SETTINGS_PAGE.read_text(encoding="utf-8")
    assert len({setting.env for setting in SETTINGS}) == len(SETTINGS)
    for setting in SETTINGS:
        assert re.fullmatch(r"(SB_OTEL|OTEL|SESSION_BUDDY)_[A-Z0-9_]+", setting.env), setting.env
        assert setting.default.strip(), setting.env
        assert setting.description.strip().endswith("."), setting.env
        assert "|" not in setting.description.replace("\\|", ""), setting.env  # one table cell


def test_every_setting_the_code_reads_is_declared() -> None:
    """No module (nor shell integration) of any layer reads an SB_OTEL_* variable that SETTINGS does not declare."""
    declared = {setting.env for setting in SETTINGS}
    package = REPO / "sb_otel"
    read = set()
    for module in [*package.rglob("*.py"), *package.rglob("shells/init.*")]:
        read |= set(re.findall(r"\b(SB_OTEL_[A-Z0-9_]*[A-Z0-9])\b", module.read_text(encoding="utf-8")))
    assert len(read) > len(declared) // 2  # the modules in the layer folders are read too
    assert read <= declared


def test_standard_settings_are_the_sdks_own_variables() -> None:
    """Every OTEL_* row names a variable the OpenTelemetry SDK defines, so a misspelt one cannot be documented."""
    import opentelemetry.sdk.environment_variables as sdk_variables

    standard = [setting.env for setting in SETTINGS if setting.env.startswith("OTEL_")]
    assert standard
    assert [getattr(sdk_variables, env, None) for env in standard] == standard


def test_the_python_guide_names_every_configure_argument() -> None:
    """The Python guide's "Export telemetry" section names each of configure()'s settings arguments."""
    import inspect

    import sb_otel

    section = PYTHON_GUIDE.read_text(encoding="utf-8").split("## Export telemetry", 1)[1].split("\n## ", 1)[0]
    arguments = set(inspect.signature(sb_otel.configure).parameters) - {"set_global"}
    assert {argument for argument in arguments if f"`{argument}`" not in section} == set()


def test_blank_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exported-but-empty variable falls back to the default instead of meaning ''."""
    monkeypatch.setenv("SB_OTEL_DATA_DIR", "   ")
    assert SB_OTEL_DATA_DIR.read() is None


def test_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without SB_OTEL_DATA_DIR the platform convention applies: $XDG_DATA_HOME/sb-otel on Linux."""
    monkeypatch.delenv("SB_OTEL_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "sb-otel"


def test_data_dir_override_expands_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """SB_OTEL_DATA_DIR wins and may start with ~."""
    monkeypatch.setenv("SB_OTEL_DATA_DIR", "~/sbo")
    assert data_dir() == Path("~/sbo").expanduser()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("3650d", 3650 * 86400)],
)
def test_parse_duration_accepts_the_documented_forms_up_to_ten_years(text: str, seconds: int) -> None:
    """Seconds, s, m, h, d, up to MAX_DURATION."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["3651d", "99999999d", "99999999999d", "1" + "0" * 400, "87601h", "5256001m", "315360001"]
)
def test_parse_duration_refuses_more_than_ten_years_naming_the_limit(text: str) -> None:
    """Beyond ten years dates and timers overflow (a traceback on main): a ConfigError naming the limit."""
    with pytest.raises(ConfigError, match=rf"^--ttl must be at most 3650d \(ten years\), not '{text}'$"):
        parse_duration(text, name="--ttl")


@given(st.text(max_size=40))
def test_parse_duration_raises_only_config_error(text: str) -> None:
    """Any text: a timedelta within (0, MAX_DURATION], or a ConfigError, never another exception."""
    try:
        parsed = parse_duration(text)
    except ConfigError:
        return
    assert timedelta(0) < parsed <= MAX_DURATION


def _switches() -> list[Any]:
    """Every SB_OTEL_* switch with the function the process that uses it reads it through."""
    from sb_otel._cli.emit_fast import drain_enabled
    from sb_otel._service.server import allow_unauthenticated_setting, mcp_spans_setting
    from sb_otel._telemetry.session_buddy_metrics import session_buddy_metrics_setting

    return [
        pytest.param("SB_OTEL_EMIT_DRAIN", drain_enabled, id="emit-drain"),
        pytest.param("SB_OTEL_MCP_SPANS", mcp_spans_setting, id="mcp-spans"),
        pytest.param("SB_OTEL_ALLOW_UNAUTHENTICATED", allow_unauthenticated_setting, id="allow-unauthenticated"),
        pytest.param("SB_OTEL_SESSION_BUDDY_METRICS", session_buddy_metrics_setting, id="session-buddy-metrics"),
    ]


@pytest.mark.parametrize(("variable", "read"), _switches())
@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        *((word, True) for word in ("true", "TRUE", " On ", "yes", "1")),
        *((w, False) for w in ("false", "Off", "NO", "0")),
    ],
)
def test_every_switch_accepts_the_same_spellings(
    monkeypatch: pytest.MonkeyPatch, variable: str, read: Callable[[], bool], spelling: str, expected: bool
) -> None:
    """true/1/yes/on and false/0/no/off, in any case, mean the same for every SB_OTEL_* switch."""
    monkeypatch.setenv(variable, spelling)
    assert read() is expected


def test_parse_bool_names_the_setting_and_the_spellings() -> None:
    """A typo is a ConfigError that says what works; blank is the default."""
    assert parse_bool("  ", name="X", default=True) is True
    with pytest.raises(ConfigError, match=r"X must be true or false, not 'ture' \(1/0, yes/no and on/off also work\)"):
        parse_bool("ture", name="X", default=False)
