"""Handing start-up's leftovers back to the kernel once the run has started.

Start-up is the high-water mark of a run's C heap: the compiler's trees
(modules imported from source), the discarded classes attrs rebuilds with
slots, the config's and the plugins' temporary data. Freed, those blocks stay
in glibc's heap, resident, for the whole run: a long-running server carries
its start-up peak forever. ``malloc_trim(0)`` returns every free page of
the heap (not only its top) to the kernel, once, when the systems have
started (``bench/run_rss.py`` measures what it gives).

Also dropped then: ``linecache``'s copies of the source attrs generates for
every class's methods (~0.7 MB for this package's classes), kept only so a
debugger can show those lines. A traceback through a generated ``__init__``
still names its file and line, without the line's text; real files' lines
are read again from disk when a traceback needs them.
"""

from __future__ import annotations

import ctypes
import linecache
import sys

__all__ = ["release_free_heap", "release_start_up_memory"]


def release_free_heap() -> bool:
    """Return the C heap's free pages to the kernel (glibc's ``malloc_trim(0)``).

    A no-op (False) where there is no glibc: another system, or musl, whose
    allocator has no such call. Takes a few milliseconds with a start-up's
    heap: call it outside the tick.

    Returns:
        True when memory was given back.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own libc
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def release_start_up_memory() -> bool:
    """Drop ``linecache``'s generated sources, then :func:`release_free_heap`.

    Call once, when the run's systems have started.

    Returns:
        True when C heap memory was given back.
    """
    linecache.clearcache()
    return release_free_heap()
