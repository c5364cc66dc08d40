"""Memory before compute: what this process may still allocate, and a refusal with the estimate.

A job states what it needs as :class:`Need` items (bytes, the config field that drives
them and how to shrink them); :func:`check_needs` refuses it with the estimate when the
total does not fit, before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import os

from wgflow.errors import InputError

#: share of the available memory a job may plan to use (the rest: Python, XLA, the figures)
USABLE_FRACTION = 0.8


def available_memory() -> float:
    """Bytes of memory available to this process: psutil's, else ``MemAvailable`` of
    /proc/meminfo, else ``os.sysconf``; a cgroup limit if lower."""
    avail = None
    try:
        import psutil  # optional

        avail = float(psutil.virtual_memory().available)
    except Exception:  # not installed, or no reading on this platform
        pass
    if avail is None:
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = float(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    if avail is None:
        try:
            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = float("inf")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
            if raw.isdigit():
                avail = min(avail, float(raw))
        except OSError:
            pass
    return avail


def gib(nbytes: float) -> str:
    """``1.5 GiB``, ``12 MiB``: a byte count for a message."""
    if nbytes >= 2**40:
        return f"{nbytes / 2**40:.3g} TiB"
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.3g} GiB"
    return f"{nbytes / 2**20:.3g} MiB"


@dataclasses.dataclass(frozen=True)
class Need:
    """``nbytes`` of memory for ``item``, driven by the config field ``field``; ``fix`` shrinks it."""

    item: str
    nbytes: float
    field: str
    fix: str


def check_needs(needs: list[Need], what: str, *, limit: float | None = None) -> float:
    """The total of ``needs``; :class:`InputError` naming the largest item's field, the estimate
    and the fix when it exceeds ``limit`` (default: 80 % of the memory available now)."""
    total = float(sum(n.nbytes for n in needs))
    limit = USABLE_FRACTION * available_memory() if limit is None else float(limit)
    if total > limit:
        big = max(needs, key=lambda n: n.nbytes)
        parts = ", ".join(f"{n.item} {gib(n.nbytes)}" for n in sorted(needs, key=lambda n: -n.nbytes) if n.nbytes >= 0.01 * total)
        raise InputError(big.field, f"{what} needs about {gib(total)} of memory ({parts}) but about {gib(limit)} is available", big.fix)
    return total
