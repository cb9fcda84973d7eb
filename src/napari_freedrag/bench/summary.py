"""Per-category summaries of the accuracy rows: what docs/benchmarks.md tabulates."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_freedrag.bench.config import CATEGORIES, BenchConfig


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict], config: BenchConfig) -> dict[str, Any]:
    """Per category (and ``all``) and method: means, rates and counts."""
    out: dict[str, Any] = {}
    for category in (*CATEGORIES, "all"):
        chosen = [r for r in rows if category in ("all", r["category"])]
        if chosen:
            out[category] = {
                method: _summarise_method([r["results"][method] for r in chosen])
                for method in config.variants
            }
    return out


def _summarise_method(results: list[dict]) -> dict[str, Any]:
    ran = [r for r in results if "error_px" in r]
    reverse = [r.get("reverse", {}) for r in ran]
    masked = [r["masked"] for r in ran if "error_px" in r.get("masked", {})]
    return {
        "n": len(results),
        "diverged": sum(bool(r["diverged"]) for r in results),
        "error_px_mean": _mean(r["error_px"] for r in ran),
        "error_px_median": float(np.median([r["error_px"] for r in ran])) if ran else None,
        "success_rate": _mean(float(r["success"]) for r in ran),
        "tracked_error_px_mean": _mean(r["tracked_error_px"] for r in ran),
        "converged_rate": _mean(float(r["converged"]) for r in ran),
        "steps_mean": _mean(r["steps"] for r in ran),
        "seconds_mean": _mean(r["seconds"] for r in ran),
        "seconds_per_step_mean": _mean(r["seconds_per_step"] for r in ran),
        "time_to_target_mean": _mean(r["time_to_target"] for r in ran),
        "outside_mae_mean": _mean(r["outside_mae"] for r in ran),
        "outside_ssim_mean": _mean(r["outside_ssim"] for r in ran),
        "reverse_ssim_mean": _mean(r.get("ssim") for r in reverse),
        "reverse_mae_mean": _mean(r.get("mae") for r in reverse),
        "calibrated_l_mean": _mean(r.get("overrides", {}).get("l") for r in ran),
        "masked_n": len(masked),
        "masked_error_px_mean": _mean(r["error_px"] for r in masked),
        "masked_success_rate": _mean(float(r["success"]) for r in masked),
        "masked_outside_mae_mean": _mean(r["outside_mae"] for r in masked),
        "masked_outside_ssim_mean": _mean(r["outside_ssim"] for r in masked),
    }
