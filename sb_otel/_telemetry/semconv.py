"""Names sb-otel emits: span and log attributes, metric instruments, span and event names.

Semantic-convention names first (``process.*``, ``host.*``, ``os.*``, ``error.type``); ``sb.*`` for what the
conventions do not cover. Dashboards and alerts query these names, so they are declared once, here, and
DESIGN.md's tables mirror them.
"""

from __future__ import annotations

from typing import Final

from sb_otel._tracking.session_counts import SESSION_DURATION_BUCKETS as BUCKETS

INSTRUMENTATION_SCOPE: Final = "sb_otel"

# -- attributes --------------------------------------------------------------------------------------------
SESSION_ID: Final = "session.id"
COMPONENT_NAME: Final = "sb.component.name"
SHELL_TYPE: Final = "sb.shell.type"
EVENT_ID: Final = "sb.event.id"
EVENT_VERSION: Final = "sb.event.version"
PROCESS_PID: Final = "process.pid"
PROCESS_OWNER: Final = "process.owner"
USER_NAME: Final = "user.name"
USER_HOME: Final = "sb.user.home"
HOST_NAME: Final = "host.name"
RUNTIME_VERSION: Final = "process.runtime.version"
RUNTIME_NAME: Final = "process.runtime.name"
OS_DESCRIPTION: Final = "os.description"
OS_TYPE: Final = "os.type"
WORKING_DIRECTORY: Final = "process.working_directory"
METADATA_PREFIX: Final = "sb.session.metadata."
EXIT_REASON: Final = "sb.session.exit_reason"
EXIT_CODE: Final = "process.exit.code"
SESSION_STATUS: Final = "sb.session.status"
RESULT: Final = "sb.result"
ERROR_TYPE: Final = "error.type"
LIFECYCLE_OPERATION: Final = "sb.lifecycle.operation"
PROJECT: Final = "sb.project.name"
CLOCK_SKEW: Final = "sb.clock_skew_s"
"""Seconds by which the shell's event timestamp disagreed with the tracker's clock, when it mattered."""

# -- metrics -----------------------------------------------------------------------------------------------
METRIC_STARTED: Final = "sb.session.started"
METRIC_ENDED: Final = "sb.session.ended"
METRIC_ACTIVE: Final = "sb.session.active"
METRIC_DURATION: Final = "sb.session.duration"
METRIC_LIFECYCLE_DURATION: Final = "sb.lifecycle.duration"

SESSION_DURATION_BUCKETS: Final = BUCKETS
"""Session lengths from a second to a day (defined with the store's counts, which bucket them)."""
LIFECYCLE_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- log events --------------------------------------------------------------------------------------------
EVENT_SESSION_START: Final = "session.start"
EVENT_SESSION_END: Final = "session.end"
