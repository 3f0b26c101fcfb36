"""The HTTP API: listener, ASGI app, audit log and metrics exposition, around the core."""
