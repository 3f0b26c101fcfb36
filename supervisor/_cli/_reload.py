"""``run --reload``: watch the enabled systems' source files, reload what changed.

The watcher is a supervised service (off the tick): ``watchfiles.awatch``
runs its Rust notify watcher in a worker thread through AnyIO, so it runs
under trio as it is; it debounces a burst of writes (an editor's save is
often several) into one set of changes. Each set becomes one reload
request (``Supervisor.reloader``), done between two ticks. The folders of
the watched files are watched, not the files: an editor that saves by
writing a new file and renaming it over the old one is seen too.
watchfiles is imported only for a run with ``--reload``.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from .._core._runtime import Supervisor
from .._logging import get_logger

__all__ = ["attach_reload"]

#: Milliseconds a burst of changes is gathered before one reload.
DEBOUNCE_MS: Final = 150


def attach_reload(sup: Supervisor) -> None:
    """Watch and reload for this run; ``status`` gets its ``reload`` section."""
    sup.services.append(watch_sources)
    sup.status_sections["reload"] = sup.reloader.section


async def watch_sources(sup: Supervisor, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The service: one reload per debounced set of changes to a watched source file."""
    from watchfiles import awatch  # noqa: PLC0415 - only a run with --reload loads it

    files = sup.reloader.watched()
    task_status.started()
    if not files:
        get_logger().warning("reload.nothing_to_watch", reason="no system can be reloaded")
        return
    # Keyed by the resolved path as text: watchfiles reports paths under the
    # (resolved) folders given, so no filesystem call is needed per change.
    by_path = {str(path): module for path, module in files.items()}
    folders = sorted({str(path.parent) for path in files})

    def wanted(_change: object, path: str) -> bool:
        return path in by_path

    async for changes in awatch(
        *folders,
        watch_filter=wanted,
        debounce=DEBOUNCE_MS,
        step=50,
        stop_event=sup.closing,
        recursive=False,
    ):
        modules = {by_path[path] for _change, path in changes}
        await sup.reloader.reload(modules)
