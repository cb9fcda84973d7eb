"""Work a process does once before its first drag, done early where a face can hide it."""

from __future__ import annotations

import torch


def warm_up_optimiser() -> None:
    """Build (and drop) one torch optimiser.

    The first optimiser a process builds imports ``torch._dynamo`` (~1.2 s of CPU). The
    viewer calls this while it loads a model, so the first Run starts at once.
    """
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
