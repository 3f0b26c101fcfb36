"""The runtime core: time, the system table and the rules.

It imports no server, CLI or metrics library (tests/test_layers.py).
"""
