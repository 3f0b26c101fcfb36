"""Handing the C heap's free pages back to the kernel once the run has started.

Start-up is the high-water mark of a run's C heap: the compiler's trees
(modules imported from source), the discarded classes attrs rebuilds with
slots, the config's and the plugins' temporary data. Freed, those blocks stay
in glibc's heap, resident, for the whole run: a long-running server carries
its start-up peak forever. ``malloc_trim(0)`` returns every free page of
the heap (not only its top) to the kernel, once, when the systems have
started (``bench/run_rss.py`` measures what it gives).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["release_free_heap"]


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
