"""What runs in the user's process: ToolSystem, handles, the socket and asyncio
clients, and the seam to Thespian (transport)."""
