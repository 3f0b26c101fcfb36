"""The command line: the client commands and the `run` command."""
