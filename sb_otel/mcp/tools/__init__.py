"""``sb_otel.mcp.tools``: session-buddy's tool modules that sb-otel provides (session tracking only)."""
