"""The durable error store (issue 11): records on disk, analytics, SLOs and the report.

A capability layer between the core and the server: it reads the core's
public views and receives records through ``sup.record_sinks``; the server
and the CLI read it. The package imports nothing heavy on its own (no trio
outside :mod:`._shipper`), so ``supervisor report`` opens the file directly.
"""
