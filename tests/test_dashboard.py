"""The Sessions dashboard (deploy/grafana/dashboards/sessions.json): Grafana's essentials, names, and real data.

The dashboard is shareable: it names its datasources through datasource variables, never by uid, so it imports
into any Grafana. Its LogQL is parsed with Grafana's own grammar and held to Loki's matcher rule under every
variable value (tests/logql_check.py). The last test is the proof for PromQL: a real Prometheus scrapes
sb-otel's metrics while a realistic scenario runs through the real instrumented tracker, and every PromQL
expression in the dashboard — with its template variables filled in from Prometheus, as Grafana does, the
"All" value included — returns data.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, MetricsData, Sum
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server

from sb_otel import SessionLifecycleManager, SessionTracker, instrument
from sb_otel._service.metrics_endpoint import MetricsEndpoint
from sb_otel._service.server import listening_socket
from sb_otel._telemetry import semconv as sc
from sb_otel._telemetry.instrumentation import InstrumentedSessionTracker
from sb_otel._telemetry.store_metrics import METRIC_OPEN_START_TIME, register_open_sessions
from sb_otel._tracking.outcome import ABANDONED
from sb_otel._tracking.sqlite_store import SqliteSessionStore
from sb_otel._tracking.store import SessionEnding
from sb_otel.testing import capture_telemetry
from tests.logql_check import INSTALL_HINT as LOGQL_INSTALL_HINT
from tests.logql_check import LogQLParserMissing, loki_refuses, parse_logql
from tests.otlp_to_prometheus import Kind, label_name, series_names
from tests.prometheus_server import INSTALL_HINT, PrometheusNotInstalled, PrometheusServer, find_prometheus, poll

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "sessions.json"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"

GRAFANA_BUILTIN_DATASOURCE = {"type": "grafana", "uid": "-- Grafana --"}  # the built-in annotations source
# Grafana's global variables, with the values the test gives them: the rate window must hold at least two of
# the test's 250 ms scrapes, and $__range covers the whole scenario.
GRAFANA_GLOBALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "10m"}
SERVICE = "sb-otel"
ALL = "$__all"  # Grafana's value for the "All" selection
DATASOURCE_VARIABLES = {"DS_PROMETHEUS": "prometheus", "DS_LOKI": "loki"}
"""The dashboard's datasource variables (name → datasource type): each picks a datasource of the user's Grafana."""
COMPONENTS = {"mahavishnu": "MahavishnuShell", "oneiric": "OneiricShell", "session-buddy": "SessionBuddyShell"}


# -- reading the dashboard ------------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def provisioned_datasources() -> list[dict[str, Any]]:
    """The datasources our stack's Grafana provisions (deploy/grafana/provisioning)."""
    found: list[dict[str, Any]] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return found


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query on the dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def targets_of_type(dashboard: dict[str, Any], datasource_type: str) -> list[tuple[str, str]]:
    """(``panel title/refId``, expression) for every query of one datasource type."""
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel, target in panel_targets(dashboard)
        if (target.get("datasource") or panel["datasource"])["type"] == datasource_type
    ]


def promql_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return targets_of_type(dashboard, "prometheus")


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dashboard["templating"]["list"]
    return found


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``"datasource": {...}`` reference anywhere in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def uid_values(node: Any) -> Iterator[str]:
    """Every value of a ``uid`` / ``datasourceUid`` key anywhere in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("uid", "datasourceUid") and isinstance(value, str):
                yield value
            else:
                yield from uid_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from uid_values(item)


_LABEL_VALUES = re.compile(r"label_values\((?P<match>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_VARIABLE = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)")
_VARIABLE_REF = re.compile(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)\}|\$([a-zA-Z_][a-zA-Z0-9_]*)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Fill in ``$name`` / ``${name}`` as Grafana would; every variable must have a value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"{expr!r} uses ${name}, which is neither a dashboard variable nor a Grafana global"
        return values[name]

    return _VARIABLE_REF.sub(value, expr)


_REGEX_META = re.compile(r"[$^*{}\[\]'+?.()|]")


def regex_literal(value: str) -> str:
    """``value`` as a regex matching it literally, written inside a query's string literal (Grafana's escape)."""
    doubled = value.replace("\\", "\\\\\\\\")
    return _REGEX_META.sub(lambda match: "\\\\" + match.group(0), doubled)


def grafana_value(variable: dict[str, Any], selected: list[str], datasource_type: str) -> str:
    """The text Grafana puts in place of ``$variable`` in a Prometheus or Loki query, for a selection.

    "All" becomes the variable's ``allValue``; chosen values of a multi-value variable are regex-escaped as in a
    PromQL/LogQL string literal and joined as alternatives (Prometheus in parentheses, Loki without).
    """
    if selected == [ALL]:
        assert variable.get("allValue"), f"{variable['name']}: All without an allValue expands to every option"
        value: str = variable["allValue"]
        return value
    assert variable["multi"], f"{variable['name']} is not multi-value"
    escaped = [regex_literal(value) for value in selected]
    if len(escaped) == 1:
        return escaped[0]
    joined = "|".join(escaped)
    return f"({joined})" if datasource_type == "prometheus" else joined


def metric_names(expr: str) -> set[str]:
    return set(_SELECTOR.findall(expr))


def label_names(expr: str) -> set[str]:
    labels = set(_MATCHER.findall(expr))
    for group in _GROUPING.findall(expr):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    return labels


# -- sb-otel's instruments, as the code declares them ---------------------------------------------------------


def metric_kinds(data: MetricsData | None) -> dict[str, tuple[str, Kind]]:
    """name → (unit, kind) for every sb-otel metric in ``data``."""
    found: dict[str, tuple[str, Kind]] = {}
    for resource_metrics in data.resource_metrics if data is not None else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind: Kind
                if isinstance(metric.data, Histogram):
                    kind = "histogram"
                elif isinstance(metric.data, Sum):
                    kind = "counter" if metric.data.is_monotonic else "gauge"
                else:
                    kind = "gauge"
                found[metric.name] = (metric.unit or "", kind)
    return found


def instrument_names() -> set[str]:
    return {
        sc.METRIC_STARTED,
        sc.METRIC_ENDED,
        sc.METRIC_ACTIVE,
        sc.METRIC_DURATION,
        sc.METRIC_LIFECYCLE_DURATION,
        METRIC_OPEN_START_TIME,
    }


def attribute_keys() -> set[str]:
    """Every attribute name sb-otel declares (metric attributes are among them)."""
    return {
        value
        for name, value in vars(sc).items()
        if name.isupper() and isinstance(value, str) and not name.startswith(("METRIC_", "EVENT_", "INSTRUMENTATION"))
    }


@pytest.fixture(scope="module")
def sb_otel_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Kind]]:
    """The instruments' names, units and kinds, from one real session through the instrumented tracker, and the
    store's open sessions while it was open."""
    cwd = tmp_path_factory.mktemp("project")
    with capture_telemetry() as telemetry:
        tracker = instrument(SessionTracker(SessionLifecycleManager(), store="memory"), **telemetry.providers)
        register_open_sessions(telemetry.meter_provider, lambda: tracker.store.oldest_open_sessions(20))
        scenario = Scenario(tracker, cwd)
        session_id = asyncio.run(scenario.start("mahavishnu", timedelta(minutes=5)))
        assert session_id is not None
        kinds = metric_kinds(telemetry.metric_reader.get_metrics_data())
        asyncio.run(scenario.end(session_id, timedelta(minutes=1), exit_reason="user_exit"))
        kinds.update(metric_kinds(telemetry.metric_reader.get_metrics_data()))
        tracker.uninstrument()
    assert set(kinds) == instrument_names()
    return kinds


# -- Grafana's essentials ---------------------------------------------------------------------------------------


def test_dashboard_has_a_stable_uid_title_and_schema() -> None:
    """Provisioning keys the dashboard by uid; Grafana migrates from schemaVersion."""
    dashboard = load_dashboard()
    assert dashboard["uid"] == "sb-otel-sessions"
    assert dashboard["title"] == "Sessions"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None  # ids belong to the Grafana instance, not to a provisioned file


def test_panels_have_unique_ids_grid_positions_and_targets() -> None:
    """Every panel has its own id, a place on the 24-column grid, and queries with unique refIds."""
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"], grid["x"] + 1) > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, panel["title"]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target.get("expr") for target in panel["targets"]), panel["title"]


def test_panels_do_not_overlap() -> None:
    """Grafana would shuffle overlapping panels; the layout in the file is the layout on screen."""
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def query_variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The variables that filter the queries (not the datasource pickers or the Jaeger address)."""
    return {variable["name"]: variable for variable in variables(dashboard) if variable["type"] == "query"}


def test_dashboard_names_no_datasource_uid_of_ours() -> None:
    """Shareable: every datasource reference is a datasource variable (or Grafana's built-in annotations source),
    so the dashboard imports into any Grafana and picks that Grafana's own Prometheus and Loki."""
    dashboard = load_dashboard()
    pickers = {variable["name"]: variable for variable in variables(dashboard) if variable["type"] == "datasource"}
    assert {name: variable["query"] for name, variable in pickers.items()} == DATASOURCE_VARIABLES
    for variable in pickers.values():
        assert not variable.get("current"), f"{variable['name']} must not preselect a datasource of ours"
        assert not variable["multi"]
        assert not variable["includeAll"]
    refs = list(datasource_refs(dashboard))
    assert len(refs) > len(panel_targets_list := list(panel_targets(dashboard))) >= 10, len(panel_targets_list)
    for ref in refs:
        if ref == GRAFANA_BUILTIN_DATASOURCE:
            continue
        assert isinstance(ref, dict), f"datasource given by name: {ref!r}"
        match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", ref["uid"])
        assert match is not None, f"{ref} names a fixed datasource uid"
        assert DATASOURCE_VARIABLES.get(match[1]) == ref["type"], f"{ref}: no datasource variable of that type"
    # Nothing of our stack's provisioning leaks in: no uid anywhere in the file (links too) is one of its uids.
    ours = {source["uid"] for source in provisioned_datasources()}
    assert not set(uid_values(dashboard)) & ours
    # Import ("Export for sharing externally" convention): what the dashboard needs is listed, no input left open.
    assert "__inputs" not in dashboard, "an __inputs entry would ask for a datasource the variables already pick"
    required = {(item["type"], item["id"]) for item in dashboard["__requires"]}
    assert {("datasource", kind) for kind in DATASOURCE_VARIABLES.values()} <= required
    assert {("panel", panel["type"]) for panel in dashboard["panels"]} <= required


def test_our_stack_provisions_one_datasource_per_picker_with_prometheus_the_default() -> None:
    """In the compose stack the pickers need no choice: one Prometheus (Grafana's default) and one Loki."""
    provisioned = provisioned_datasources()
    by_type = Counter(source["type"] for source in provisioned)
    for kind in DATASOURCE_VARIABLES.values():
        assert by_type[kind] == 1, kind
    (default,) = [source for source in provisioned if source.get("isDefault")]
    assert default["type"] == "prometheus"


def test_template_variables_are_service_name_and_component_from_prometheus() -> None:
    """Templated by service_name and component, both listed from the started-sessions counter, All by default."""
    dashboard = load_dashboard()
    found = query_variables(dashboard)
    assert set(found) == {"service_name", "component"}
    for variable in found.values():
        assert variable["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert _LABEL_VALUES.fullmatch(variable["definition"]), variable["definition"]
        assert variable["query"]["query"] == variable["definition"]
        assert variable["includeAll"]
        assert variable["multi"]
        assert variable["current"]["value"] == [ALL]
    # service_name stands alone in Loki's stream selector, where "All" must still select (.+, not .*);
    # component only filters (a Loki pipeline stage, a PromQL matcher beside the metric name), where .* is fine.
    assert found["service_name"]["allValue"] == ".+"
    assert found["component"]["allValue"] == ".*"
    labels = {name: _LABEL_VALUES.fullmatch(variable["definition"]) for name, variable in found.items()}
    assert {name: match["label"] for name, match in labels.items() if match} == {
        "service_name": "service_name",
        "component": label_name(sc.COMPONENT_NAME),
    }
    (jaeger,) = [variable for variable in variables(dashboard) if variable["type"] == "textbox"]
    assert jaeger["name"] == "jaeger_url"
    assert dashboard["links"][0]["url"] == "${jaeger_url}/search"
    assert "${jaeger_url}/trace/${__value.raw}" in DASHBOARD.read_text()
    assert "localhost" not in DASHBOARD.read_text().replace(jaeger["query"], "")


def test_every_variable_a_query_uses_is_defined() -> None:
    """A typo in ``$componnent`` would silently match nothing in Grafana."""
    dashboard = load_dashboard()
    defined = set(query_variables(dashboard)) | set(GRAFANA_GLOBALS)
    for panel, target in panel_targets(dashboard):
        used = set(_VARIABLE.findall(target["expr"]))
        assert used <= defined, f"{panel['title']}: undefined {used - defined}"
        assert "service_name" in used, f"{panel['title']} ignores the service_name variable"


def test_promql_queries_the_prometheus_names_of_sb_otel_instruments(
    sb_otel_metrics: dict[str, tuple[str, Kind]],
) -> None:
    """OTLP names translated as Prometheus does (dots → _, unit suffix, _total on counters), and all five used."""
    dashboard = load_dashboard()
    expected = set().union(*(series_names(name, *details) for name, details in sb_otel_metrics.items()))
    queried: set[str] = set()
    for title, expr in promql_targets(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric selector with braces in {expr!r}"
        assert names <= expected, f"{title}: {names - expected} is not a Prometheus name of an sb-otel metric"
        queried |= names
    for variable in query_variables(dashboard).values():
        match = _LABEL_VALUES.fullmatch(variable["definition"])
        assert match is not None
        selector = match["match"].split("{")[0].strip()
        assert selector in expected
    families = {name: series_names(name, *details) for name, details in sb_otel_metrics.items()}
    unused = [name for name, series in families.items() if not series & queried]
    assert not unused, f"no panel shows {unused}"
    assert "sb_session_started_total" in queried
    assert "sb_session_duration_seconds_bucket" in queried


def test_promql_labels_are_translated_sb_otel_attributes() -> None:
    """Labels in matchers, ``by (...)`` and legends are sb-otel attribute keys with dots as underscores."""
    allowed = {label_name(key) for key in attribute_keys()} | {"le", "service_name"}
    for panel, target in panel_targets(load_dashboard()):
        if panel["datasource"]["type"] != "prometheus":
            continue
        used = label_names(target["expr"]) | set(_LEGEND.findall(target.get("legendFormat", "")))
        assert used <= allowed, f"{panel['title']}: {used - allowed} is not an sb-otel attribute"
    assert label_name(sc.COMPONENT_NAME) == "sb_component_name"
    assert label_name(sc.ERROR_TYPE) == "error_type"


def test_failed_sessions_table_reads_session_end_records_from_loki() -> None:
    """The table filters Loki's structured metadata by the translated status and component attributes."""
    dashboard = load_dashboard()
    loki = [(panel, target) for panel, target in panel_targets(dashboard) if panel["datasource"]["type"] == "loki"]
    assert len(loki) == 1
    panel, target = loki[0]
    assert panel["type"] == "table"
    expr = target["expr"]
    assert expr.startswith('{service_name=~"$service_name"}')
    assert f'| {label_name(sc.SESSION_STATUS)}=~"crashed|abnormal"' in expr
    assert f'| {label_name(sc.COMPONENT_NAME)}=~"$component"' in expr
    organize = next(step for step in panel["transformations"] if step["id"] == "organize")
    columns = set(organize["options"]["includeByName"]) - {"Time"}
    allowed = {label_name(key) for key in attribute_keys()} | {"trace_id"}
    assert columns <= allowed, columns - allowed
    assert {label_name(sc.SESSION_ID), "trace_id"} <= columns


SELECTIONS: dict[str, list[list[str]]] = {
    "service_name": [[ALL], [SERVICE], [SERVICE, "svc.v2"]],
    "component": [[ALL], ["mahavishnu"], ["mahavishnu", "oneiric"]],
}
"""Selections the LogQL check fills in: All, one value, several (one with a regex metacharacter)."""


def logql_under_every_selection(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, query) for every LogQL target under every combination of the selections above."""
    found = query_variables(dashboard)
    assert set(found) == set(SELECTIONS)
    filled = []
    for title, expr in targets_of_type(dashboard, "loki"):
        for service in SELECTIONS["service_name"]:
            for component in SELECTIONS["component"]:
                values = {
                    **GRAFANA_GLOBALS,
                    "service_name": grafana_value(found["service_name"], service, "loki"),
                    "component": grafana_value(found["component"], component, "loki"),
                }
                filled.append((f"{title} service_name={service} component={component}", substitute(expr, values)))
    return filled


def parse_or_fail(queries: list[str]) -> list[Any]:
    try:
        return parse_logql(queries)
    except LogQLParserMissing:
        pytest.fail(LOGQL_INSTALL_HINT)


def test_every_logql_query_is_accepted_by_loki_under_every_variable_value() -> None:
    """Grafana's LogQL grammar parses each query, and each stream selector keeps a matcher that does not match
    the empty string — whatever the variables hold, "All" (the default) included."""
    filled = logql_under_every_selection(load_dashboard())
    assert len(filled) == 9
    for (what, _), parsed in zip(filled, parse_or_fail([query for _, query in filled]), strict=True):
        assert loki_refuses(parsed) is None, f"{what}: {loki_refuses(parsed)}"
        assert any(matcher.label == "service_name" for selector in parsed.selectors for matcher in selector), what


def test_the_logql_check_refuses_what_loki_refuses() -> None:
    """The check can fail: ``.*`` as the All value (the old dashboard's), a matcher-less selector, a syntax error,
    and a negative matcher alone all match the empty string or do not parse; ``.+`` and ``!=""`` pass."""
    dashboard = load_dashboard()
    old = json.loads(json.dumps(dashboard))
    for variable in query_variables(old).values():
        variable["allValue"] = ".*"
    refused_old = [query for what, query in logql_under_every_selection(old) if "service_name=['$__all']" in what]
    queries = [
        *refused_old,
        '{service_name=~".*"} | sb_session_status="crashed"',
        '{service_name!~"sb-otel"}',
        '{service_name=~"sb-otel" | x="y"',
        '{service_name=~".+"}',
        '{service_name!=""}',
        '{service_name=~"a|b", x=~".*"} | logfmt',
    ]
    verdicts = [loki_refuses(parsed) for parsed in parse_or_fail(queries)]
    assert all(verdicts[: len(refused_old) + 3]), verdicts
    assert "syntax error" in (verdicts[len(refused_old) + 2] or "")
    assert verdicts[len(refused_old) + 3 :] == [None, None, None]


# -- the proof: a real Prometheus, a realistic scenario, every query ------------------------------------------


class Scenario:
    """Drives the instrumented tracker the way shells do: JSON events, concurrent starts, realistic times."""

    def __init__(self, tracker: InstrumentedSessionTracker, cwd: Path) -> None:
        self.tracker = tracker
        self.cwd = cwd
        self.now = datetime.now(timezone.utc)
        self.started: dict[str, datetime] = {}
        self.start_events = 0
        self.pid = 4000

    async def start(
        self, component: str, ago: timedelta, *, cwd: str | None = None, pid: int | None = None
    ) -> str | None:
        """A start event timestamped ``ago`` before now; the session id, or ``None`` when tracking refused it."""
        self.pid += 1
        self.start_events += 1
        started = self.now - ago
        result = await self.tracker.handle_session_start(
            {
                "event_version": "1.0",
                "event_id": str(uuid.uuid4()),
                "component_name": component,
                "shell_type": COMPONENTS.get(component, "Shell"),
                "timestamp": started.isoformat(),
                "pid": self.pid if pid is None else pid,
                "user": {"username": "sre", "home": "/home/sre"},
                "hostname": "ops01",
                "environment": {"python_version": "3.13.0", "platform": "Linux", "cwd": cwd or str(self.cwd)},
            }
        )
        if result.status != "tracked":
            return None
        self.started[result.session_id] = started
        return result.session_id

    async def end(self, session_id: str, after: timedelta, **metadata: Any) -> str:
        """An end event ``after`` the session's start; the result status."""
        ended = self.started.get(session_id, self.now - timedelta(minutes=1)) + after
        result = await self.tracker.handle_session_end(
            {"session_id": session_id, "timestamp": ended.isoformat(), "metadata": metadata}
        )
        return result.status

    def abandon(self, session_id: str) -> None:
        """What the reaper does to a session that never ended: store it as abnormal, then its telemetry."""
        finished = self.tracker.store.finish(session_id, SessionEnding("abnormal", self.now, None))
        assert finished is not None
        assert finished[1]
        self.tracker.finish_session_telemetry(finished[0], ABANDONED)

    async def failures(self) -> None:
        """The tracker's error paths: an invalid start, a start the lifecycle manager refuses, an unknown end."""
        assert await self.start("oneiric", timedelta(minutes=1), pid=0) is None  # pid must be ≥ 1
        assert await self.start("mahavishnu", timedelta(minutes=1), cwd=str(self.cwd / "gone")) is None
        assert await self.end("mahavishnu-20000101-000000", timedelta(seconds=1)) == "not_found"


async def phase_one(scenario: Scenario) -> dict[str, str]:
    """Shells start at once; some exit, one crashes, some stay open."""
    m = timedelta(minutes=1)
    ids = await asyncio.gather(
        scenario.start("mahavishnu", 120 * m),
        scenario.start("mahavishnu", 90 * m),
        scenario.start("mahavishnu", 30 * m),
        scenario.start("oneiric", 180 * m),
        scenario.start("oneiric", 60 * m),
        scenario.start("session-buddy", 300 * m),
        scenario.start("session-buddy", 20 * m),
    )
    assert all(ids), ids
    named = dict(zip(["m1", "m2", "m3", "o1", "o2", "b1", "b2"], [i for i in ids if i is not None], strict=True))
    statuses = await asyncio.gather(
        scenario.end(named["m1"], 45 * m, exit_reason="user_exit"),
        scenario.end(named["m2"], timedelta(seconds=30), exit_code=0),
        scenario.end(named["o1"], 120 * m, exit_reason="crash"),
        scenario.end(named["o2"], 10 * m, exit_reason="user_exit"),
        scenario.end(named["b2"], 5 * m, exit_reason="user_exit"),
    )
    assert statuses == ["ended"] * 5
    await scenario.failures()
    return named


async def phase_two(scenario: Scenario, named: dict[str, str]) -> None:
    """More shells come and go: a non-zero exit, a killed shell, the five-hour session abandoned."""
    m = timedelta(minutes=1)
    ids = await asyncio.gather(
        scenario.start("mahavishnu", 10 * m),
        scenario.start("mahavishnu", 5 * m),
        scenario.start("oneiric", 15 * m),
        scenario.start("oneiric", 9 * m),
        scenario.start("oneiric", 3 * m),
        scenario.start("session-buddy", 8 * m),
    )
    assert all(ids), ids
    m4, _m5_open, o3, o4, _o5_open, b3 = (i for i in ids if i is not None)
    statuses = await asyncio.gather(
        scenario.end(m4, 2 * m, exit_code=1),
        scenario.end(named["m3"], 25 * m, exit_reason="user_exit"),
        scenario.end(o3, 12 * m, exit_reason="user_exit"),
        scenario.end(o4, 4 * m, exit_reason="signal"),
        scenario.end(b3, 1 * m, exit_reason="user_exit"),
    )
    assert statuses == ["ended"] * 5
    scenario.abandon(named["b1"])
    await scenario.failures()


def series_values(answers: dict[str, list[dict[str, Any]]]) -> dict[str, dict[frozenset[tuple[str, str]], str]]:
    """Each query's answer as labels → value (Prometheus lists the series of a result in no fixed order)."""
    return {
        title: {frozenset(sample["metric"].items()): sample["value"][1] for sample in result}
        for title, result in answers.items()
    }


def values_of(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_find_prometheus_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No binary is a failure that names the fix, never a skip."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusNotInstalled, match=r"apt-get install prometheus"):
        find_prometheus()


def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    """Prometheus scrapes sb-otel's metrics while sessions run; each PromQL query of the dashboard has data.

    The scrape path (opentelemetry-exporter-prometheus) names metrics as Prometheus v3's OTLP receiver does in the
    compose stack (see tests/otlp_to_prometheus.py); ``service.name`` becomes the ``service_name`` label here
    through the reader's resource attribute filter, there through ``promote_resource_attributes``.
    """
    try:
        find_prometheus()
    except PrometheusNotInstalled:
        pytest.fail(INSTALL_HINT)

    registry = CollectorRegistry()
    scrape_reader = PrometheusMetricReader(
        registry=registry, resource_attribute_filter=lambda key: key == "service.name"
    )
    names_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(
        metric_readers=[scrape_reader, names_reader], resource=Resource.create({"service.name": SERVICE})
    )
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    target = f"127.0.0.1:{server.server_address[1]}"
    try:
        with (
            capture_telemetry() as telemetry,
            PrometheusServer(tmp_path / "prometheus", targets=[target], scrape_interval="250ms") as prometheus,
        ):
            tracker = instrument(
                SessionTracker(SessionLifecycleManager(), store="memory"),
                **{**telemetry.providers, "meter_provider": meter_provider},
            )
            register_open_sessions(meter_provider, lambda: tracker.store.oldest_open_sessions(20))
            try:
                scenario = Scenario(tracker, tmp_path)
                prometheus.wait_for_scrape()

                named = asyncio.run(phase_one(scenario))
                wait_for_samples(prometheus, scrapes=2, started=scenario.start_events)
                asyncio.run(phase_two(scenario, named))
                # Series that first appear in phase two need two samples before rate() has a value.
                wait_for_samples(prometheus, scrapes=3, started=scenario.start_events)

                check_names(prometheus, names_reader)
                check_every_query(prometheus, tracker)
            finally:
                tracker.uninstrument()
    finally:
        meter_provider.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def wait_for_samples(prometheus: PrometheusServer, *, scrapes: int, started: int) -> None:
    """Wait for ``scrapes`` more scrapes (each one's samples are stored before the next begins), then for the
    started-sessions total Prometheus reports to equal ``started`` (every start event, tracked or not)."""
    for _ in range(scrapes):
        prometheus.wait_for_scrape(after=datetime.now(timezone.utc))

    def total() -> bool:
        values = values_of(prometheus.query("sum(sb_session_started_total)"))
        return values == [float(started)]

    poll(total, timeout=10, what=f"Prometheus to report {started} session starts")


def check_names(prometheus: PrometheusServer, names_reader: InMemoryMetricReader) -> None:
    """The names Prometheus stored are exactly those tests/otlp_to_prometheus.py derives from the instruments."""
    kinds = metric_kinds(names_reader.get_metrics_data())
    assert set(kinds) == instrument_names()
    expected = set().union(*(series_names(name, *details) for name, details in kinds.items()))
    stored = set(prometheus.label_values("__name__", '{__name__=~"sb_.*"}'))
    assert stored == expected


def check_every_query(prometheus: PrometheusServer, tracker: InstrumentedSessionTracker) -> None:
    dashboard = load_dashboard()
    values = dict(GRAFANA_GLOBALS)

    # The variables, resolved as Grafana resolves them: label_values() → /api/v1/label/<label>/values.
    found = query_variables(dashboard)
    service_query = _LABEL_VALUES.fullmatch(found["service_name"]["definition"])
    assert service_query is not None
    services = prometheus.label_values(service_query["label"], substitute(service_query["match"], values))
    assert services == [SERVICE]
    component_query = _LABEL_VALUES.fullmatch(found["component"]["definition"])
    assert component_query is not None
    for service_selection in ([ALL], services):  # the component list under the default and a chosen service
        values["service_name"] = grafana_value(found["service_name"], service_selection, "prometheus")
        components = prometheus.label_values(component_query["label"], substitute(component_query["match"], values))
        assert set(components) == set(COMPONENTS), service_selection

    # One evaluation instant for every panel, as one dashboard refresh, at a scrape whose samples are all stored:
    # a later scrape cannot change the answers. Every query twice: under the default selection (All, All) and
    # with the service chosen; there is one service here, so both must give the same answers.
    at = prometheus.last_scrape()
    by_selection: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for service_selection in ([ALL], services):
        values["service_name"] = grafana_value(found["service_name"], service_selection, "prometheus")
        values["component"] = grafana_value(found["component"], [ALL], "prometheus")
        answers: dict[str, list[dict[str, Any]]] = {}
        for title, expr in promql_targets(dashboard):
            result = prometheus.query(substitute(expr, values), at=at)
            numbers = values_of(result)
            assert numbers, f"{title}: no data for {substitute(expr, values)}"
            assert all(math.isfinite(number) for number in numbers), f"{title}: {numbers}"
            assert any(number > 0 for number in numbers), f"{title}: only zeros"
            answers[title] = result
        by_selection[values["service_name"]] = answers
    results = by_selection[".+"]
    assert series_values(by_selection[SERVICE]) == series_values(results)
    assert len(results) == len(promql_targets(dashboard)) >= 10

    # Exact where the scenario fixes the answer: open sessions per component, as the store has them.
    open_sessions = Counter(record.component_name for record in tracker.store.list_sessions(status="open"))
    active = {
        sample["metric"]["sb_component_name"]: float(sample["value"][1])
        for sample in results["Active sessions by component/A"]
    }
    assert active == {component: float(open_sessions[component]) for component in COMPONENTS}
    assert sum(values_of(results["Active sessions/A"])) == sum(open_sessions.values())
    # The open sessions, each with its age at the evaluation instant: the store's, from its start time.
    ages = {sample["metric"]["session_id"]: float(sample["value"][1]) for sample in results["Open sessions/A"]}
    stored = {record.session_id: record.started_at for record in tracker.store.list_sessions(status="open")}
    assert set(ages) == set(stored)
    for session_id, started in stored.items():
        assert ages[session_id] == pytest.approx(at - started.timestamp(), abs=0.01)
    (crash_free,) = values_of(results["Crash-free sessions/A"])
    assert 0 < crash_free < 1


# -- the Open sessions panel, for bash shells ------------------------------------------------------------------


def open_sessions_query(dashboard: dict[str, Any]) -> tuple[dict[str, Any], str]:
    (found,) = [(panel, target) for panel, target in panel_targets(dashboard) if panel["title"] == "Open sessions"]
    return found[0], found[1]["expr"]


def test_open_sessions_panel_is_a_table_of_ages_oldest_first() -> None:
    """An instant table of the open sessions (session, component, shell, age in seconds), sorted by age,
    oldest first."""
    panel, expr = open_sessions_query(load_dashboard())
    target = panel["targets"][0]
    assert (panel["type"], target["format"], target["instant"]) == ("table", "table", True)
    assert metric_names(expr) == {"sb_session_open_start_time_seconds"}
    assert expr.startswith("time() - ")
    organize = next(step for step in panel["transformations"] if step["id"] == "organize")["options"]
    assert organize["renameByName"]["Value"] == "age"
    assert {label_name(sc.SESSION_ID), label_name(sc.COMPONENT_NAME), label_name(sc.SHELL_TYPE)} <= set(
        organize["includeByName"]
    )
    (sort,) = next(step for step in panel["transformations"] if step["id"] == "sortBy")["options"]["sort"]
    assert sort == {"field": "age", "desc": True}


def _emit(store: Path, *args: str) -> str:
    """One ``sb-otel emit`` process, as a bash shell's profile and exit trap run it; its stdout."""
    env = {**os.environ, "SB_OTEL_STORE": str(store), "SB_OTEL_EMIT_DRAIN": "0"}
    env.pop("TRACEPARENT", None)
    done = subprocess.run(
        [sys.executable, "-m", "sb_otel", "emit", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_open_sessions_of_bash_shells_from_a_real_prometheus(tmp_path: Path) -> None:
    """Three bash shells start (``sb-otel emit start``, real processes); Prometheus scrapes the store's series
    (``serve --metrics-port``'s endpoint, the same collection the exporter sends over OTLP): the panel's query
    lists exactly the open shells with their ages, the oldest the largest. After one shell's ``emit end`` the next
    scrape drops it; and a session whose series stopped coming for 2 minutes leaves the panel (OTLP-fed series
    get no staleness marker: Prometheus would show their last sample for 5 minutes)."""
    try:
        find_prometheus()
    except PrometheusNotInstalled:
        pytest.fail(INSTALL_HINT)
    store_path = tmp_path / "sessions.db"
    shells: list[str] = []
    for pid in (7001, 7002, 7003):
        out = _emit(store_path, "start", "--component", "mahavishnu", "--shell-type", "bash", "--pid", str(pid))
        shells.append(out.split("SB_OTEL_SESSION_ID=")[1].split()[0].strip("'"))
    store = SqliteSessionStore(store_path)
    endpoint = MetricsEndpoint(store, listening_socket("127.0.0.1", 0), Resource({"service.name": SERVICE}))
    endpoint.start()
    target = endpoint.url.removeprefix("http://").removesuffix("/metrics")
    dashboard = load_dashboard()
    found = query_variables(dashboard)
    values = {
        **GRAFANA_GLOBALS,
        "service_name": grafana_value(found["service_name"], [ALL], "prometheus"),
        "component": grafana_value(found["component"], [ALL], "prometheus"),
    }
    expr = substitute(open_sessions_query(dashboard)[1], values)
    try:
        with PrometheusServer(tmp_path / "prometheus", targets=[target], scrape_interval="250ms") as prometheus:
            prometheus.wait_for_scrape()
            at = prometheus.last_scrape()
            ages = {
                sample["metric"]["session_id"]: float(sample["value"][1]) for sample in prometheus.query(expr, at=at)
            }
            starts = {sid: record.started_at for sid in shells if (record := store.get(sid)) is not None}
            assert set(ages) == set(shells)
            for session_id, started in starts.items():
                assert ages[session_id] == pytest.approx(at - started.timestamp(), abs=0.01)
            assert sorted(ages, key=ages.__getitem__, reverse=True) == shells  # the first shell is the oldest

            _emit(store_path, "end", shells[1], "--exit-code", "0")
            prometheus.wait_for_scrape(after=datetime.now(timezone.utc))
            at = prometheus.last_scrape()
            assert {sample["metric"]["session_id"] for sample in prometheus.query(expr, at=at)} == {
                shells[0],
                shells[2],
            }
            # Evaluated 2 minutes after the last sample (as if the exporter had stopped): the panel is empty,
            # though the series' last samples are still within Prometheus's 5-minute lookback.
            selector = "sb_session_open_start_time_seconds"
            assert len(prometheus.query(selector, at=at + 121)) == 2
            assert prometheus.query(expr, at=at + 121) == []
    finally:
        endpoint.stop()
        store.close()
