"""The doors into a running system: the CLI (later the dashboard and the MCP server)."""
