"""A real Prometheus server (the ``prometheus`` binary on PATH) on 127.0.0.1, for tests that query it.

Debian's ``prometheus`` package provides the binary (``.ci/run`` installs it). The server runs with a private
configuration and storage directory, scrapes the targets it is given, and is stopped on exit. Nothing here
sleeps for a fixed time: start-up waits on ``/-/ready``, and callers wait on scrapes and query results.

Usage::

    with PrometheusServer(tmp_path, targets=["127.0.0.1:9464"]) as prometheus:
        prometheus.wait_for_scrape()
        prometheus.query("sum(up)")
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["PrometheusError", "PrometheusNotInstalled", "PrometheusServer", "find_prometheus", "poll"]

_T = TypeVar("_T")

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")

INSTALL_HINT = (
    "the `prometheus` binary is not on PATH; the dashboard test runs a real Prometheus: "
    "install it with `apt-get install prometheus` (Debian/Ubuntu; `.ci/run` does this)"
)


class PrometheusNotInstalled(RuntimeError):
    """The ``prometheus`` binary is missing."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered a query with an error."""


def find_prometheus() -> str:
    """The path of the ``prometheus`` binary, or :class:`PrometheusNotInstalled` saying how to install it."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusNotInstalled(INSTALL_HINT)
    return binary


def poll(condition: Callable[[], _T | None], *, timeout: float, what: str, interval: float = 0.05) -> _T:
    """Call ``condition`` until it returns something other than ``None``/``False``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    """A Prometheus process scraping ``targets`` every ``scrape_interval``, answering on ``url``."""

    def __init__(self, workdir: Path, *, targets: list[str], scrape_interval: str = "500ms") -> None:
        self.binary = find_prometheus()
        self.workdir = workdir
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "prometheus.log"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML: no YAML writer needed
                {
                    "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval},
                    "scrape_configs": [{"job_name": "sb-otel", "static_configs": [{"targets": self.targets}]}],
                }
            )
        )
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            poll(self._ready, timeout=30, what=f"Prometheus to answer {self.url}/-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log(self) -> str:
        """What Prometheus wrote to stdout/stderr so far."""
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise PrometheusError(f"prometheus exited with code {self._process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    # -- HTTP API -----------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the response's ``data``, or :class:`PrometheusError` with its message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a bad query; the body says why
            body = json.load(error)
            error.close()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query, at ``at`` (Unix seconds) or now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        data = self.api("query", query=expr, **({"time": f"{at:.3f}"} if at is not None else {}))
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series ``match`` selects (what Grafana's ``label_values()`` lists)."""
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def wait_for_scrape(self, *, after: datetime | None = None, timeout: float = 30) -> None:
        """Wait until every target was scraped successfully (after ``after``, when given)."""
        since = after or datetime.fromtimestamp(0, timezone.utc)

        def scraped() -> bool:
            targets = self.api("targets", state="active")["activeTargets"]
            return bool(targets) and all(
                target["health"] == "up" and _parse_time(target["lastScrape"]) > since for target in targets
            )

        poll(scraped, timeout=timeout, what=f"a successful scrape of {self.targets} by Prometheus")

    def last_scrape(self) -> float:
        """The start time (Unix seconds) of the latest scrape of every target, whose samples are all stored.

        Prometheus reports a scrape in the targets API after appending its samples, and the next scrape's samples
        carry later timestamps, so queries evaluated at this instant give the same answers however long they run.
        """
        targets = self.api("targets", state="active")["activeTargets"]
        if not targets:
            raise PrometheusError("Prometheus has no active targets")
        return min(_parse_time(target["lastScrape"]).timestamp() for target in targets)


def _parse_time(text: str) -> datetime:
    """Prometheus's RFC 3339 timestamps carry nanoseconds; Python parses at most microseconds."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise PrometheusError(f"unexpected timestamp from Prometheus: {text!r}")
    head, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{micros}{'+00:00' if zone == 'Z' else zone}")
