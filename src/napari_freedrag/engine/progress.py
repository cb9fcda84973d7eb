"""What the method loops report to the runner after each optimiser step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Progress:
    """One optimiser step as seen by a method loop (``points`` in image pixels).

    ``final`` is true when no further step will follow (all points done or the step
    budget spent), so the runner can render the result once instead of a preview.
    """

    points: np.ndarray
    point_losses: np.ndarray
    loss: float
    decisions: list[str | None] | None
    done: np.ndarray
    final: bool = False


class Diverged(Exception):
    """Raised by a loop on NaN/inf, carrying the last state whose loss was finite."""

    def __init__(self, latent: torch.Tensor, steps: int, points: np.ndarray, at_step: int):
        super().__init__(f"non-finite loss at step {at_step}")
        self.latent = latent
        self.steps = steps
        self.points = points
        self.at_step = at_step
