"""Gauges off ``ctx.report``'s fast path: new names, refused values, redaction of the table."""

from __future__ import annotations

import math

from ._context import GAUGE_INT_LIMIT, GAUGE_NAME, MAX_GAUGE_NAME, MAX_GAUGES, GaugeError
from ._failures import FailureRecorder
from ._kernel import Kernel
from ._safecall import safe_type_name
from ._slots import Slot

__all__ = ["GaugeDesk"]

#: Gauge errors recorded per system per second at most; the rest are counted in errors.dropped.
GAUGE_ERROR_INTERVAL = 1.0


def _gauge_number(value: object) -> float | None:
    """``value`` if it is a gauge's number (an int within 64 bits, a finite float), else None."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int and -GAUGE_INT_LIMIT < value < GAUGE_INT_LIMIT:
        return value
    return None


class GaugeDesk:
    """Validates, names and publishes what systems report (the table lives in the kernel)."""

    def __init__(self, kernel: Kernel, recorder: FailureRecorder) -> None:
        self._k = kernel
        self._recorder = recorder

    def report(self, slot: Slot, name: object, value: object) -> None:
        """``ctx.report`` off its fast path: a new name, or a value that is not a plain number.

        A bad gauge is the reporting system's error (kind ``"gauge"``), never
        raised into it and never published, so ``/metrics`` cannot fail on it.
        A ``bool`` is published as 0 or 1.
        """
        k = self._k
        if type(value) is bool:
            value = int(value)
        key = k.gauge_keys.get(name) if type(name) is str else None
        problem = None
        if not isinstance(name, str) or type(name) is not str:
            problem = f"a gauge name must be a str, not {safe_type_name(name)}"
        elif key is None:
            if len(name) > MAX_GAUGE_NAME or GAUGE_NAME.fullmatch(name) is None:
                shown = name[:MAX_GAUGE_NAME] + ("..." if len(name) > MAX_GAUGE_NAME else "")
                problem = (
                    f"gauge name {shown!r} refused: it must match [A-Za-z_][A-Za-z0-9_]* "
                    f"and be at most {MAX_GAUGE_NAME} characters"
                )
            elif len(k.gauge_keys) >= MAX_GAUGES:
                k.errors.dropped["gauge_limit"] += 1
                problem = f"gauge {name!r} refused: at most {MAX_GAUGES} gauges in all"
        number = _gauge_number(value)
        if problem is None and number is None:
            what = "a non-finite float" if type(value) is float else safe_type_name(value)
            problem = (
                f"gauge {key or name!r} refused: its value must be a finite int or float, "
                f"not {what}"
            )
        if problem is not None or number is None:
            self._error(slot, problem or "gauge refused")
            return
        if key is None:
            assert isinstance(name, str)
            key = k.redactor.text(name)
            k.gauge_keys[name] = key
        k.gauges[key] = number

    def _error(self, slot: Slot, problem: str) -> None:
        """Record a refused gauge, at most once a GAUGE_ERROR_INTERVAL per system."""
        now = self._k.loop.now
        if now - slot.gauge_error_at < GAUGE_ERROR_INTERVAL:
            self._k.errors.dropped["gauge_error"] += 1
            return
        slot.gauge_error_at = now
        record = self._recorder.record(
            slot, "report", GaugeError(problem), kind="gauge", failed=False
        )
        self._recorder.log(record)

    def redact(self) -> None:
        """Redact the published names, in place (a redacting phase begins)."""
        k = self._k
        text = k.redactor.text
        keys = {raw: text(key) for raw, key in k.gauge_keys.items()}
        values = {text(key): value for key, value in k.gauges.items()}
        k.gauge_keys.clear()
        k.gauge_keys.update(keys)
        k.gauges.clear()
        k.gauges.update(values)
