"""The StyleGAN2 models known by category name: their files, where to get them, and the
one thing about them the drag presets depend on (large animals need larger patch steps).

Pure data (no torch, no package imports), so the registry and the StyleGAN2 backend's
preset both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
_SELF_DISTILLED = "https://storage.googleapis.com/self-distilled-stylegan/"
_TF_ERA = "http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/"


@dataclass(frozen=True)
class Category:
    name: str
    resolution: int
    filenames: tuple[str, ...]
    url: str
    description: str
    aliases: tuple[str, ...] = ()
    #: FreeDrag's authors drag elephants, lions, dogs and giraffes with l = 0.4, d = 4.
    large_animal: bool = False


def _self_distilled(name: str, resolution: int, description: str, **kwargs) -> Category:
    published = f"{name}_{resolution}_pytorch.pkl"
    return Category(
        name, resolution, (f"stylegan2_{published}", published), _SELF_DISTILLED + published,
        description, **kwargs,
    )  # fmt: skip


CATEGORIES: tuple[Category, ...] = (
    Category("faces", 512, ("stylegan2-ffhq-512x512.pkl",), _NGC + "stylegan2-ffhq-512x512.pkl",
             "human faces (FFHQ)", aliases=("face", "ffhq")),
    Category("cats", 512, ("stylegan2-afhqcat-512x512.pkl", "afhqcat.pkl"),
             _NGC + "stylegan2-afhqcat-512x512.pkl", "cat faces (AFHQ)",
             aliases=("cat", "afhqcat")),
    _self_distilled("dogs", 1024, "dogs (self-distilled, internet photos)", aliases=("dog",),
                    large_animal=True),
    Category("afhqdogs", 512, ("stylegan2-afhqdog-512x512.pkl", "afhqdog.pkl"),
             _NGC + "stylegan2-afhqdog-512x512.pkl", "dog faces (AFHQ)", aliases=("afhqdog",)),
    Category("wild", 512, ("stylegan2-afhqwild-512x512.pkl", "afhqwild.pkl"),
             _NGC + "stylegan2-afhqwild-512x512.pkl", "wild animal faces (AFHQ)",
             aliases=("afhqwild",)),
    _self_distilled("horses", 256, "horses (self-distilled)", aliases=("horse",)),
    _self_distilled("elephants", 512, "elephants (self-distilled)", aliases=("elephant",),
                    large_animal=True),
    _self_distilled("lions", 512, "lions (self-distilled)", aliases=("lion",), large_animal=True),
    _self_distilled("giraffes", 512, "giraffes (self-distilled)", aliases=("giraffe",),
                    large_animal=True),
    _self_distilled("bicycles", 256, "bicycles (self-distilled)", aliases=("bicycle",)),
    Category("cars", 512, ("stylegan2-car-config-f.pkl",), _TF_ERA + "stylegan2-car-config-f.pkl",
             "cars (LSUN, 512x384 content)", aliases=("car",)),
    Category("lsuncats", 256, ("stylegan2-cat-config-f.pkl",),
             _TF_ERA + "stylegan2-cat-config-f.pkl", "cats (LSUN)", aliases=("lsuncat",)),
    Category("churches", 256, ("stylegan2-church-config-f.pkl",),
             _TF_ERA + "stylegan2-church-config-f.pkl", "churches (LSUN)", aliases=("church",)),
    Category("metfaces", 1024, ("stylegan2-metfaces-1024x1024.pkl", "metfaces.pkl"),
             _NGC + "stylegan2-metfaces-1024x1024.pkl", "faces in artworks (MetFaces)"),
    Category("brecahad", 512, ("stylegan2-brecahad-512x512.pkl", "brecahad.pkl"),
             _NGC + "stylegan2-brecahad-512x512.pkl", "breast-cancer histology tiles (BreCaHAD)"),
)  # fmt: skip

BY_NAME = {name: c for c in CATEGORIES for name in (c.name, *c.aliases)}
BY_STEM = {Path(filename).stem.lower(): c for c in CATEGORIES for filename in c.filenames}


def freedrag_patch_steps(category: str | None) -> tuple[float, float]:
    """FreeDrag's ``(l, d)`` for a category name or alias (any case); others get 0.3, 3."""
    known = BY_NAME.get(category.lower()) if category else None
    return (0.4, 4.0) if known is not None and known.large_animal else (0.3, 3.0)
