"""What the method loops report to the run after each optimiser step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Progress:
    """One optimiser step as seen by a method loop (``points`` and ``targets`` in image px).

    ``last`` is true when no further step will follow (all points done or the step budget
    spent), so the run renders the result once instead of a preview.  A loop ends only by
    running out of steps to yield.
    """

    points: np.ndarray
    targets: np.ndarray
    point_losses: np.ndarray
    loss: float
    decisions: list[str | None] | None
    done: np.ndarray
    last: bool = False


class Diverged(Exception):
    """Raised by a loop on NaN/inf, carrying the last state whose loss was finite."""

    def __init__(self, latent: torch.Tensor, steps: int, points: np.ndarray, at_step: int):
        super().__init__(f"non-finite loss at step {at_step}")
        self.latent = latent
        self.steps = steps
        self.points = points
        self.at_step = at_step
