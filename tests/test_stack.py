"""docker-compose.yml, collector-config.yaml and the configs under deploy/, checked without a Docker engine.

What can be proven from the files alone: every pipeline is wired to components that exist, every address one
service uses is a service and port the compose file has, every file a container mounts is in the repository,
images are pinned, only the UIs (and sb-otel's endpoint) are published, and sb-otel is configured with
settings it really reads.
"""

from __future__ import annotations

import re
import shlex
import sys
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
SB_OTEL_PORT = 8000
PINNED_IMAGES = {
    "otel-collector": "otel/opentelemetry-collector-contrib",
    "jaeger": "jaegertracing/jaeger",
    "prometheus": "prom/prometheus",
    "loki": "grafana/loki",
    "grafana": "grafana/grafana",
}


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
    assert {"otlp/jaeger", "spanmetrics"} <= set(pipelines["traces"]["exporters"])
    assert "spanmetrics" in pipelines["metrics"]["receivers"]
    assert collector["connectors"]["spanmetrics"]["exemplars"]["enabled"] is True
    assert "otlphttp/prometheus" in pipelines["metrics"]["exporters"]
    assert exporters["otlphttp/prometheus"]["endpoint"].endswith("/api/v1/otlp")
    assert "otlphttp/loki" in pipelines["logs"]["exporters"]
    assert exporters["otlphttp/loki"]["endpoint"].endswith("/otlp")
    assert exporters["debug"]["verbosity"] == "${env:OTELCOL_DEBUG_VERBOSITY:-basic}"


def test_memory_limiter_runs_first_and_batch_in_every_pipeline(collector: dict[str, Any]) -> None:
    """The memory limiter must see data before anything buffers it."""
    for name, pipeline in collector["service"]["pipelines"].items():
        processors = [component_type(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", name
        assert "batch" in processors, name


def test_component_names_are_known_to_old_and_new_collectors(collector: dict[str, Any]) -> None:
    """``otlphttp``/``spanmetrics`` work before and after v0.144's renames; the file says which versions."""
    types = {component_type(name) for kind in ("receivers", "exporters", "connectors") for name in collector[kind]}
    assert types == {"otlp", "otlphttp", "spanmetrics", "debug"}
    header = COLLECTOR.read_text().split("\n\n")[0]
    assert "v0.104" in header
    assert "otlp_http" in header
    assert "span_metrics" in header


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
    assert targets == {"otlp/jaeger": "jaeger", "otlphttp/prometheus": "prometheus", "otlphttp/loki": "loki"}


def test_sb_otel_exports_to_the_collector_with_the_matching_protocol(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector's gRPC receiver, and the protocol says grpc."""
    environment = services["sb-otel"]["environment"]
    host, port = host_port(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert host == "otel-collector"
    by_port = {
        host_port(settings["endpoint"])[1]: protocol
        for protocol, settings in collector["receivers"]["otlp"]["protocols"].items()
    }
    expected = {"grpc": "grpc", "http": "http/protobuf"}[by_port[port]]
    assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == expected
    assert environment["SB_OTEL_DATA_DIR"] == "/data"


def test_sb_otel_serves_mcp_over_http_on_its_published_port(services: dict[str, dict[str, Any]]) -> None:
    """``sb-otel serve --transport http`` on 0.0.0.0:8000, published on the host's loopback only."""
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
    known = {setting.env for setting in SETTINGS} | {OTEL_METRIC_EXPORT_INTERVAL}
    environment = set(services["sb-otel"]["environment"])
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
    assert config["otlp"]["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert 9090 in exposed(service)


def test_loki_stores_structured_metadata_on_its_exposed_port(services: dict[str, dict[str, Any]]) -> None:
    """Native OTLP ingestion needs the v13 schema on TSDB and structured metadata."""
    config = load(DEPLOY / "loki" / "loki.yaml")
    assert config["server"]["http_listen_port"] in exposed(services["loki"])
    assert [(c["store"], c["schema"]) for c in config["schema_config"]["configs"]] == [("tsdb", "v13")]
    assert config["limits_config"]["allow_structured_metadata"] is True
    assert services["loki"]["command"] == ["-config.file=/etc/loki/loki.yaml"]


def test_health_checks_probe_the_ports_services_expose(services: dict[str, dict[str, Any]]) -> None:
    """Every service but the collector (its image has no shell to run a probe) has a health check on itself."""
    assert "healthcheck" not in services["otel-collector"]
    for name, service in services.items():
        if name == "otel-collector":
            continue
        test = " ".join(service["healthcheck"]["test"])
        ports = {int(port) for port in re.findall(r"(?:localhost|127\.0\.0\.1)'?[:,]\s*(\d+)", test)}
        assert ports, f"{name}: no port in {test}"
        assert ports <= exposed(service), f"{name}: {test}"


def test_depends_on_waits_on_conditions_that_exist(services: dict[str, dict[str, Any]]) -> None:
    """``service_healthy`` only for services with a health check; the collector only ``service_started``."""
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_healthy" if "healthcheck" in services[dependency] else "service_started"
            assert condition == {"condition": expected}, f"{name} → {dependency}"
    assert set(services["otel-collector"]["depends_on"]) == {"jaeger", "prometheus", "loki"}
    assert set(services["grafana"]["depends_on"]) == {"jaeger", "prometheus", "loki"}


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
    """Exact versions, never ``latest``: Jaeger v2 and Prometheus v3 as the stack needs."""
    for name, repository in PINNED_IMAGES.items():
        image, _, tag = services[name]["image"].partition(":")
        assert image == repository, name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {tag!r} is not an exact version"
    assert services["jaeger"]["image"].split(":")[1].startswith("2.")
    assert services["prometheus"]["image"].split(":")[1].startswith("v3.")
    built = {name for name, service in services.items() if "build" in service}
    assert built == {"sb-otel"}
    assert set(services) == set(PINNED_IMAGES) | built


def test_sb_otel_image_is_built_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    """The Dockerfile exists, starts from a pinned Python, copies files that exist, and runs the same command."""
    build = services["sb-otel"]["build"]
    assert build["context"] == "."
    dockerfile = REPO / build["dockerfile"]
    text = dockerfile.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
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
    assert any(requirement.startswith("mcp") for requirement in extras[extra]), "the image needs the MCP server"


def test_only_the_uis_and_sb_otel_are_published_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    """OTLP, Loki and health ports stay inside the compose network."""
    published_ports = {}
    for name, service in services.items():
        for host_ip, host, container in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}"
            assert host == container
            published_ports[name] = container
    assert published_ports == {**UI_PORTS, "sb-otel": SB_OTEL_PORT}


def test_every_service_has_a_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    """Limits keep one runaway service from starving the host; the collector's memory_limiter uses its own."""
    for name, service in services.items():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        assert re.fullmatch(r"\d+[MG]", limit), f"{name}: {limit!r}"


def test_no_secrets_in_the_compose_file(services: dict[str, dict[str, Any]]) -> None:
    """Nothing named like a credential is set; Grafana's admin password stays Grafana's to ask for."""
    for name, service in services.items():
        for key in service.get("environment", {}):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", key), f"{name} sets {key}"
    text = COMPOSE.read_text()
    assert not re.search(r"(?i)password\s*[:=]", text)


def test_readme_lists_every_published_url(services: dict[str, dict[str, Any]]) -> None:
    """The README's stack section names each URL the compose file publishes, and the command that starts it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Run the observability stack\n", 1)[1].split("\n## ", 1)[0]
    assert "docker compose up -d --build" in section
    for service in services.values():
        for _, port, _ in published(service):
            assert f"http://localhost:{port}" in section, port
