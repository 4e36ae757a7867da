"""The long-running parts: the MCP server, its token auth, and the reaper of abandoned sessions."""
