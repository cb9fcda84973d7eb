"""Targets a running drag reads at each of its decisions, settable from any thread.

The widget (or a script) calls :meth:`TargetSource.set` while a run goes on; FreeDrag takes
the new targets at its next sub-motion, DragGAN at its next step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


class TargetSource:
    """The current targets ``(N, 2)`` in image pixels ``(row, col)`` and a change counter.

    A run binds the source to its rule (image bounds, one target per handle): from then on
    :meth:`set` refuses bad targets at once, in the caller's thread, with an InputError.
    """

    def __init__(self, targets):
        self._lock = threading.Lock()
        self._targets = targets
        self._version = 0
        self._check: Callable[[object], np.ndarray] | None = None

    def set(self, targets) -> None:
        """Replace the targets (checked by the bound run's rule, if any)."""
        checked = self._check(targets) if self._check is not None else targets
        with self._lock:
            self._targets = checked
            self._version += 1

    def read(self) -> tuple[int, np.ndarray]:
        """``(version, targets)``: the version grows by one with every :meth:`set`."""
        with self._lock:
            return self._version, np.array(self._targets, dtype=np.float64, copy=True)

    def bind(self, check: Callable[[object], np.ndarray]) -> tuple[int, np.ndarray]:
        """Check the current targets with ``check`` and keep it for later sets."""
        with self._lock:
            self._targets = check(self._targets)
            self._check = check
            return self._version, np.array(self._targets, copy=True)
