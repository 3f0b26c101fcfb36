"""Waiting inside a trio test for something a real server or a run will do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio


async def wait_until(probe: Callable[[], Any], timeout: float, what: str, *, every: float) -> Any:
    """Poll ``probe`` (sync or async) every ``every`` seconds until it is truthy; return it.

    Raises:
        AssertionError: ``timeout`` seconds passed, naming ``what`` was awaited.
    """
    with trio.move_on_after(timeout):
        while True:
            value = probe()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await trio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
