"""Session tracking without telemetry: models, the tracker, lifecycle managers, identity, outcomes and stores.

Imports only ``sb_otel._settings`` and ``sb_otel._exceptions`` from outside this package (DESIGN.md, "Layout")."""
