"""Alert rules evaluated off the tick, delivered to Alertmanager and webhooks (CONTRACT §9).

A capability layer above the core and below the server: it reads the
supervisor's public counters once a second, runs each ``[[alerts.rules]]``
through pending -> firing -> resolved, and posts notifications from bounded
queues. :func:`attach_alerts` plugs it into a run; :func:`engine_for` and
:func:`slo_burn_rates` are how the server finds it.
"""

from ._engine import AlertEngine, alerts_view, attach_alerts, engine_for, slo_burn_rates

__all__ = ["AlertEngine", "alerts_view", "attach_alerts", "engine_for", "slo_burn_rates"]
