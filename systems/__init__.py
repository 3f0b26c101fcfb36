"""The game systems shipped with supervisor, registered by entry point like any plugin."""
