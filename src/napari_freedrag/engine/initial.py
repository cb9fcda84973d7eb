"""The start's feature map, computed only where the run reads it.

Without a mask, every read of the start's features is a box: the patches around the
handles (FreeDrag's templates, DragGAN's tracking features), the first line search's
candidates, the handles' features for the arrival measurement.  :class:`InitialFeatures`
computes those boxes from the start latent, once, instead of the whole map: at 512 px
that is most of a drag's set-up.  With a mask the mask term needs the whole map anyway,
so it computes the whole map once.
"""

from __future__ import annotations

import torch

from .patches import Box


def feature_shape(session) -> tuple[int, int]:
    """``(h, w)`` of the session's feature map, from its image size and feature scale."""
    (height, width), (sy, sx) = session.image_size, session.feature_scale
    return round(height * sy), round(width * sx)


class InitialFeatures:
    """The start's ``(C, h, w)`` feature map, exact inside every box asked for.

    ``full`` computes the whole map at the first read (a mask term needs it).  Otherwise
    :meth:`read` computes, in one backend call, the boxes it is asked for that no earlier
    call covered, together with those announced by :meth:`want`; pixels never asked for
    hold whatever the backend left there (zeros, or NaN on a strict test backend).
    """

    def __init__(self, session, full: bool):
        self._session = session
        self._latent = session.latent.detach().clone()  # the start: the run changes its own
        self.shape = feature_shape(session)
        self._full = full
        self._map: torch.Tensor | None = None
        self._known = torch.zeros(self.shape, dtype=torch.bool)
        self._wanted: list[Box] = []

    def want(self, boxes: list[Box] | None) -> None:
        """Announce boxes a later read will need, so that they are computed with it."""
        if boxes is None:
            self._full = True
        else:
            self._wanted.extend(boxes)

    def read(self, boxes: list[Box] | None) -> torch.Tensor:
        """The map, exact inside ``boxes`` (``None``: everywhere); no gradient."""
        if boxes is None:
            self._full = True
        if self._full:
            if not bool(self._known.all()):
                self._map = self._compute(None)
                self._known[:] = True
            return self._map
        missing = [box for box in [*self._wanted, *boxes] if not self._covered(box)]
        self._wanted = []
        if missing:
            computed = self._compute(missing)
            fresh = torch.zeros_like(self._known)
            for r0, c0, r1, c1 in missing:
                fresh[r0:r1, c0:c1] = True
            if self._map is None:
                self._map = computed
            else:
                self._map = torch.where(fresh.to(computed.device), computed, self._map)
            self._known |= fresh
        return self._map

    def _covered(self, box: Box) -> bool:
        r0, c0, r1, c1 = box
        return bool(self._known[r0:r1, c0:c1].all())

    def _compute(self, boxes: list[Box] | None) -> torch.Tensor:
        with torch.no_grad():
            return self._session.features(self._latent, boxes).detach()
