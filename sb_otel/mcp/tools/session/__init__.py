"""``sb_otel.mcp.tools.session``: the session tracking tools, registrable on your own FastMCP server."""
