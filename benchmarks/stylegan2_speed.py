"""Seconds per FreeDrag optimisation step and peak memory, StyleGAN2 on CPU.

Builds random-weight generators of the standard configurations (z/w 512, 8 mapping layers,
channel_base 32768, channel_max 512) and times one FreeDrag inner step: features to the
128 px block, the patch discrepancy at one handle, backward to the 6 trainable W+ vectors,
Adam. Three ways to compute the features (all give the same numbers where they are read):

* ``all-in-graph``: the W+ tensor is assembled before the layers read their styles, as the
  reference implementation does, so autograd also computes every layer's weight gradient;
* ``frozen-out``: the session's full-map path, frozen styles cached outside autograd;
* ``receptive``: the session's fast path over the receptive field of the handle's patch.

Each (resolution, mode) runs in its own process so that its peak RSS is its own. The
table shows the median and the fastest wall-clock step and the median CPU seconds per
step (all threads), which tells contention on a shared machine apart from real work.

    python benchmarks/stylegan2_speed.py                 # 256 and 512 px, 2 threads
    python benchmarks/stylegan2_speed.py --resolutions 256 --steps 3 --modes receptive
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("all-in-graph", "frozen-out", "receptive")


def build_backend(resolution: int):
    from napari_freedrag.testing import STANDARD, generator_config, random_backend

    return random_backend(generator_config(resolution, **STANDARD), f"random-{resolution}")


def worker(resolution: int, mode: str, steps: int, warmup: int) -> dict:
    """Time ``steps`` optimisation steps in this process; report peak RSS."""
    import torch

    from napari_freedrag.bench.memory import peak_memory_gib
    from napari_freedrag.engine.patches import (
        box_around,
        discrepancy,
        patch_features,
        patch_offsets,
    )

    backend = build_backend(resolution)
    state = backend.sample(0)
    session = backend.session(state, None, "freedrag")
    scale = session.feature_scale[0]
    feature_res = backend.feature_res
    offsets = patch_offsets(3, (3 * scale, 3 * scale))
    handle = torch.tensor([[resolution / 2 * scale, resolution / 2 * scale]], dtype=torch.float64)
    with torch.no_grad():
        templates = patch_features(session.features(session.latent), handle, offsets)
    boxes = [box_around(handle[0] + offsets, (feature_res, feature_res))]
    frozen = state.latent[:, session.latent.shape[1] :]
    synthesis = backend.generator.synthesis

    def features(latent):
        if mode == "all-in-graph":
            ws = torch.cat([latent, frozen], dim=1)
            return synthesis.run(ws, until=feature_res, with_img=False)[0][0]
        return session.features(latent, boxes if mode == "receptive" else None)

    latent = session.latent
    optimiser = torch.optim.Adam([latent], lr=0.002)
    times, cpu_times = [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = discrepancy(patch_features(features(latent), handle, offsets), templates).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    start = time.perf_counter()
    session.render(latent)
    render_s = time.perf_counter() - start
    peak_gib = peak_memory_gib("cpu")
    return {
        "resolution": resolution,
        "mode": mode,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "s_per_step_median": statistics.median(times),
        "s_per_step_min": min(times),
        "cpu_s_per_step_median": statistics.median(cpu_times),
        "render_s": render_s,
        "peak_rss_gib": peak_gib,
        "box": boxes[0],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", nargs=2, metavar=("RES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        result = worker(int(args.worker[0]), args.worker[1], args.steps, args.warmup)
        print(json.dumps(result))
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = []
    header = ("res", "mode", "s/step", "min", "cpu s", "render s", "peak GiB")
    print("{:>5} {:<13} {:>8} {:>7} {:>7} {:>9} {:>9}".format(*header))
    for resolution in args.resolutions:
        for mode in args.modes:
            command = [
                sys.executable, __file__, "--worker", str(resolution), mode,
                "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--threads", str(args.threads),
            ]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{resolution:>5} {mode:<13} {result['s_per_step_median']:>8.3f} "
                f"{result['s_per_step_min']:>7.3f} {result['cpu_s_per_step_median']:>7.3f} "
                f"{result['render_s']:>9.2f} "
                f"{result['peak_rss_gib']:>9.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
