"""How much memory reading one weight file may take, checked before anything is allocated.

A small crafted file can declare huge tensors: a stride-0 view of one float, a zip member
that inflates to gigabytes, an array header with a large shape. Every reader here asks
:class:`LoadBudget` for the bytes an object *will* occupy (a view counts as the copy it
becomes) before building it, and stops with a :class:`ModelError` naming the limit.

The default budget is 512 MiB plus twice the file's size: a real 1024 px generator file
fits, while a file of a few MB cannot make the loader take more than about half a GiB.
``NAPARI_FREEDRAG_LOAD_BUDGET_MB`` sets a fixed budget instead (for a trusted, larger file).
"""

from __future__ import annotations

import math
import os

from napari_freedrag.config import LOAD_BUDGET_ENV as ENV_VAR
from napari_freedrag.errors import ModelError

BASE_BYTES = 512 * 2**20
MIB = 2**20


def budget_bytes(file_size: int) -> int:
    """The loading budget for a file of ``file_size`` bytes (environment override first)."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return BASE_BYTES + 2 * max(int(file_size), 0)
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise ModelError(f"{ENV_VAR}={text!r} is not a positive number of MiB")
    return int(megabytes * MIB)


def element_count(size) -> int:
    """Elements of a tensor of shape ``size`` (an int; no overflow in Python)."""
    return math.prod(int(n) for n in size)


class LoadBudget:
    """Running total of the bytes one load builds; refuses the first object past the limit."""

    def __init__(self, source: str, file_size: int, limit: int | None = None):
        self.source = source
        self.file_size = int(file_size)
        self.limit = budget_bytes(file_size) if limit is None else int(limit)
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Reserve ``nbytes`` for ``what`` or raise before the caller allocates it."""
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ModelError(f"{self.source}: {what} declares a negative size (corrupt file)")
        if self.used + nbytes > self.limit:
            raise ModelError(
                f"{self.source}: {what} needs {_human(nbytes)}, past the loading budget of "
                f"{_human(self.limit)} ({_human(self.used)} already used); the file is corrupt "
                f"or crafted, or set {ENV_VAR} to a larger budget if you trust it"
            )
        self.used += nbytes

    def check_stored(self, declared: int, available: int, what: str) -> None:
        """A stored block must actually be in the file: ``declared`` bytes <= ``available``."""
        if declared > available:
            raise ModelError(
                f"{self.source}: {what} declares {_human(declared)} but the file holds "
                f"only {_human(available)} for it (truncated or crafted file)"
            )


def _human(nbytes: int) -> str:
    if nbytes >= 2**40:
        return f"{nbytes / 2**40:.1f} TiB"
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / MIB:.1f} MiB"
