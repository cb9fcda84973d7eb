"""Speed: seconds per optimiser step, time to target and peak memory for both methods, one
process per (generator, device, mode, method) so that each peak is its own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import torch

from napari_freedrag.bench.accuracy import calibrated_l
from napari_freedrag.bench.config import BenchConfig
from napari_freedrag.bench.memory import memory_kind, peak_memory_gib, reset_peak, rss_gib
from napari_freedrag.engine.protocol import METHODS
from napari_freedrag.models.stylegan2.partial import run_blocks
from napari_freedrag.testing import BackendWrapper


def speed(config: BenchConfig, generators: list[dict], log) -> dict[str, Any]:
    """Every (generator, device, mode, method); calibrated variants on the shipped path."""
    calibrated = [name for name, v in config.variants.items() if v.get("calibrate_l")]
    runs = []
    for spec in generators:
        for device in config.speed_devices:
            for mode in config.speed_modes:
                names = [*METHODS, *(calibrated if mode == "receptive" else [])]
                for name in names:
                    variant = config.variants.get(name, {"method": name})
                    job = {
                        "generator": spec,
                        "device": device,
                        "variant": name,
                        "method": variant["method"],
                        "calibrate_l": bool(variant.get("calibrate_l")),
                        "mode": mode,
                        "max_steps": spec["max_steps"]
                        if mode == "receptive"
                        else min(spec["max_steps"], spec["mode_steps"]),
                        "drag_fraction": config.speed_drag_fraction,
                        "truncation": config.truncation,
                    }
                    result = in_subprocess(job) if config.isolate else speed_run(job)
                    runs.append(result)
                    log(
                        f"  speed {spec['name']:<10} {device:<4} {mode:<14} {name:<8} "
                        f"{result['s_per_step_median']:.3f} s/step, {result['steps']} steps, "
                        f"converged {result['converged']}, peak {result['peak_memory_gib']} GiB"
                    )
    return {"runs": runs}


def in_subprocess(job: dict) -> dict[str, Any]:
    """:func:`speed_run` in a fresh Python process (its peak RSS is the job's own)."""
    command = [sys.executable, "-m", "napari_freedrag.bench", "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"speed worker failed for {job}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_speed_backend(spec: dict, device: str):
    """The generator a speed job names: a MODEL string, or a random-weight StyleGAN2."""
    if "model" in spec:
        from napari_freedrag.models.registry import load_generator

        return load_generator(spec["model"], device=device)
    from napari_freedrag.testing import generator_config, random_backend

    config = generator_config(
        spec["resolution"],
        z_dim=spec["z_dim"],
        w_dim=spec["w_dim"],
        mapping_layers=spec["mapping_layers"],
        channel_base=spec["channel_base"],
        channel_max=spec["channel_max"],
        num_fp16_res=spec.get("num_fp16_res", 0),
        conv_clamp=spec.get("conv_clamp"),
    )
    return random_backend(config, spec["name"], device, seed=spec.get("seed", 0))


class ModeBackend(BackendWrapper):
    """A StyleGAN2 backend whose sessions compute features another way (speed only)."""

    def __init__(self, inner, mode: str):
        super().__init__(inner)
        self.mode = mode

    def session(self, start, mask, method):
        return ModeSession(self.inner, self.inner.session(start, mask, method), start, self.mode)


class ModeSession:
    """Delegates to the real session but ignores the engine's read boxes, and in
    ``full-synthesis`` mode also runs the blocks above the feature block every step."""

    def __init__(self, backend, inner, start, mode: str):
        self._backend, self._inner, self._mode = backend, inner, mode
        self._start_ws = start.latent.detach().to(backend.device)
        self.latent = inner.latent
        self.image_size = inner.image_size
        self.feature_scale = inner.feature_scale

    def features(self, latent, boxes=None):
        features = self._inner.features(latent, None)
        if self._mode == "full-synthesis":
            synthesis = self._backend.generator.synthesis
            ws = torch.cat([latent, self._start_ws[:, latent.shape[1] :]], dim=1)
            run_blocks(synthesis, ws, after=self._backend.feature_res, x=features[None])
        return features

    def mask_term(self, latent, features):
        return self._inner.mask_term(latent, features)

    def render(self, latent):
        return self._inner.render(latent)

    def finish(self, latent):
        return self._inner.finish(latent)


def speed_run(job: dict) -> dict[str, Any]:
    """Drag from the image centre by ``drag_fraction`` of the width; time every step."""
    from napari_freedrag.engine.run import drag, drag_steps

    device = job["device"]
    backend = build_speed_backend(job["generator"], device)
    if job["mode"] != "receptive":
        backend = ModeBackend(backend, job["mode"])
    start = backend.sample(0, truncation=job["truncation"])
    height, width = start.image_size
    handle = np.array([[(height - 1) / 2, (width - 1) / 2]])
    target = handle + [0.0, round(job["drag_fraction"] * width)]
    cuda = device.startswith("cuda")
    reset_peak(device)
    overrides = {}
    if job.get("calibrate_l"):
        overrides["l"] = calibrated_l(backend, start, handle, target)
    # Warm up (first-call allocations, lazy initialisation) outside the timed run.
    drag(backend, start, handle, target, None, job["method"], max_steps=2, preview_every=0)
    rss_before = rss_gib()
    steps = drag_steps(
        backend,
        start,
        handle,
        target,
        None,
        job["method"],
        max_steps=job["max_steps"],
        preview_every=0,
        **overrides,
    )
    times = []
    for step in steps:
        if cuda:
            torch.cuda.synchronize()
        times.append(step.seconds)
    result = steps.result
    durations = np.diff([0.0, *times])
    timed = durations[1:] if len(durations) > 1 else durations
    generator = getattr(backend, "inner", backend).generator
    return {
        **{k: job[k] for k in ("device", "method", "mode", "max_steps")},
        "variant": job.get("variant", job["method"]),
        "overrides": overrides,
        "generator": job["generator"]["name"],
        "resolution": height,
        "parameters_m": sum(p.numel() for p in generator.parameters()) / 1e6,
        "torch_threads": torch.get_num_threads(),
        "handle": handle[0].tolist(),
        "target": target[0].tolist(),
        "steps": result.steps,
        "converged": result.converged,
        "seconds": result.seconds,
        "time_to_target": result.seconds if result.converged else None,
        "first_step_s": float(durations[0]) if len(durations) else None,
        "s_per_step_median": float(np.median(timed)) if len(timed) else None,
        "s_per_step_mean": float(np.mean(timed)) if len(timed) else None,
        "final_points": result.points.tolist(),
        "peak_memory_gib": round(peak_memory_gib(device), 3),
        "memory_kind": memory_kind(device),
        "rss_before_drag_gib": round(rss_before, 3),
    }
