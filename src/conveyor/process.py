"""The node's process: its id, its allocator, and what a leak would show in (memory,
descriptors, tasks)."""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket

import trio

from .metrics import Sample

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 256 * 1024
# the collector's thresholds while serving: the young generation every 10,000 allocations net of
# frees (CPython's default: 700), the middle one every 20 of those (10); see tune_collector
GC_THRESHOLDS = (10_000, 20, 10)


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def process_samples() -> list[Sample]:
    """Resident memory, open descriptors and live trio tasks: what a leak would show in."""
    out: list[Sample] = []
    try:
        with open("/proc/self/statm") as statm:
            rss_pages = int(statm.read().split()[1])
        out.append(("process_resident_memory_bytes", (), rss_pages * os.sysconf("SC_PAGE_SIZE")))
        out.append(("process_open_fds", (), len(os.listdir("/proc/self/fd"))))
    except OSError:
        pass  # not Linux: no /proc

    def tasks(task: trio.lowlevel.Task) -> int:
        return 1 + sum(tasks(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    if root is not None:
        out.append(("conveyor_trio_tasks", (), tasks(root)))
    return out


def tune_allocator() -> None:
    """Have glibc's malloc map every block of MMAP_THRESHOLD bytes or more on its own, and give it
    back to the system when freed. By default the threshold grows with the blocks freed (up to
    32 MiB), and the memory of a burst of large request bodies stayed with the process (issue 11
    saw 2 GB resident after 250 concurrent 1 MiB submissions). Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3
    if not mallopt(m_mmap_threshold, MMAP_THRESHOLD):
        log.warning("could not set malloc's mmap threshold; memory after large requests may stay high")


def tune_collector() -> None:
    """Once start-up is done: what it made lives as long as the node, so out of the collector's
    generations (gc.freeze); and collect the young generations less often. Serving allocates
    fast (fan-out to 1,000 WebSockets is hundreds of thousands of objects a second), and with
    CPython's thresholds the objects in flight at each of hundreds of young collections a
    second were promoted, until a full collection every few seconds walked every connection's
    objects: 90-275 ms pauses (gc.callbacks) with 300,000 objects, in which nothing was sent.
    bench/fanout.py, the same hour: p99 54 ms, max 309 ms with the defaults; with these, p99
    31-40 ms, max 50-58 ms, no full collection in the run."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
