"""Speed and peak memory of real-image editing with the latent diffusion backend.

    python benchmarks/ldm_speed.py --out ldm_speed.json                  # tiny random pipeline
    python benchmarks/ldm_speed.py --model ldm:/path/to/sd15 --device cuda --out sd15.json
    python benchmarks/ldm_speed.py --sd15-unet --out unet.json           # SD 1.5-size UNet only

The default builds the tests' tiny random-weight SD-1.x pipeline, so it runs anywhere
offline. ``--sd15-unet`` times one drag step's UNet work on a random-weight UNet of
Stable Diffusion 1.5's size (``--latent 64``: a 512 px working size; 32 for 256 px):
the drag step as the session runs it (forward up to ``up_blocks[2]``, backward from its
features to ``z_t``) against a full UNet forward + backward from the noise prediction,
the cost of a step that ran the whole UNet. Peak memory is CUDA's max allocated on a
GPU, the process's max RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_freedrag.bench.memory import peak_memory_gib, reset_peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    _sync(device)
    began = time.perf_counter()
    value = fn()
    _sync(device)
    return value, time.perf_counter() - began


def bench_pipeline(args) -> dict:
    import napari_freedrag as nfd
    from napari_freedrag.models.ldm import load_ldm

    if args.model is None:
        from napari_freedrag._tests.ldm_tiny import build_tiny_pipeline

        model = str(build_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd"))
    else:
        model = args.model
    gen, load_s = _timed(
        torch.device("cpu"),
        lambda: load_ldm(model, args.device, cpu_offload=args.cpu_offload),
    )
    device = gen.device
    reset_peak(device)
    size = gen.native_size
    rows, cols = np.mgrid[:size, :size]
    image = 255 * np.exp(-((rows - size / 2) ** 2 + (cols - size / 2) ** 2) / (size**2 / 20))
    image = image.astype(np.uint8)
    result = {"model": gen.name, "device": str(device), "working_size": size, "load_s": load_s}
    with tempfile.TemporaryDirectory() as home:
        os.environ["NAPARI_FREEDRAG_HOME"] = home
        if args.lora_steps:
            _, lora_s = _timed(device, lambda: gen.invert(image, lora_steps=args.lora_steps))
            _, invert_s = _timed(device, lambda: gen.invert(image))
            result["lora_s_per_step"] = (lora_s - invert_s) / args.lora_steps
        start, invert_s = _timed(device, lambda: gen.invert(image))
        result["invert_and_reconstruct_s"] = invert_s
        handle, target = [[size * 0.5, size * 0.25]], [[size * 0.5, size * 0.75]]
        for method in ("freedrag", "draggan"):
            steps = nfd.drag_steps(gen, start, handle, target, method=method, max_steps=args.steps)
            began, times = time.perf_counter(), []
            for _ in steps:  # the last step includes the final render
                _sync(device)
                times.append(time.perf_counter() - began)
            between = np.diff([0.0, *times])
            result[method] = {
                "steps": len(times),
                "seconds": times[-1],
                "optimiser_s_per_step": float(np.median(between[:-1])) if len(times) > 1 else None,
                "last_step_with_render_s": float(between[-1]),
            }
    result["peak_memory_mib"] = peak_memory_gib(device) * 1024
    return result


def bench_sd15_unet(args) -> dict:
    """One drag step's UNet work at SD 1.5 size (random weights)."""
    from diffusers import UNet2DConditionModel

    from napari_freedrag._tests.ldm_tiny import SD15_UNET
    from napari_freedrag.models.registry import resolve_device

    device = resolve_device(args.device)
    unet = UNet2DConditionModel(**SD15_UNET).to(device).requires_grad_(False).eval()
    params = sum(p.numel() for p in unet.parameters())
    embeds = torch.zeros(1, 77, 768, device=device)
    on_cuda = device.type == "cuda"

    class Stop(Exception):
        pass

    def step(drag_step: bool):
        latent = torch.randn(1, 4, args.latent, args.latent, device=device, requires_grad=True)
        captured = {}

        def hook(module, inputs, output):
            captured["f"] = output
            if drag_step:
                raise Stop

        handle = unet.up_blocks[2].register_forward_hook(hook)
        try:
            with torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
                noise = unet(latent, 681, encoder_hidden_states=embeds).sample
        except Stop:
            pass
        finally:
            handle.remove()
        out = captured["f"] if drag_step else noise
        out.float().abs().mean().backward()

    result = {"device": str(device), "unet_parameters": params, "latent": [args.latent] * 2}
    for drag_step in (True, False):
        if on_cuda:
            step(drag_step)  # warm-up (kernel selection)
        times, cpu = [], []
        for _ in range(args.repeats):
            cpu_began = time.process_time()
            times.append(_timed(device, lambda e=drag_step: step(e))[1])
            cpu.append(time.process_time() - cpu_began)
        key = "drag_step" if drag_step else "full_unet_forward_backward"
        result[f"{key}_s"] = float(np.median(times))
        result[f"{key}_cpu_s"] = float(np.median(cpu))  # all threads: robust to a shared CPU
    result["drag_step_over_full"] = result["drag_step_s"] / result["full_unet_forward_backward_s"]
    result["drag_step_over_full_cpu"] = (
        result["drag_step_cpu_s"] / result["full_unet_forward_backward_cpu_s"]
    )
    result["peak_memory_mib"] = peak_memory_gib(device) * 1024
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ldm:PATH_OR_ID (default: the tiny random pipeline)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per method")
    parser.add_argument("--lora-steps", type=int, default=0, help="also time LoRA training")
    parser.add_argument("--cpu-offload", action="store_true")
    parser.add_argument("--sd15-unet", action="store_true", help="time an SD 1.5-size UNet")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latent", type=int, default=64, help="latent size for --sd15-unet")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    result = bench_sd15_unet(args) if args.sd15_unet else bench_pipeline(args)
    result["torch_threads"] = torch.get_num_threads()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
