"""Seconds per FreeDrag optimisation step and peak memory, StyleGAN2 on CPU.

Builds random-weight generators of the standard configurations (z/w 512, 8 mapping layers,
channel_base 32768, channel_max 512) and times one FreeDrag inner step: features to the
128 px block, the patch discrepancy at one handle, backward to the 6 trainable W+ vectors,
Adam. Three ways to compute the features (all give the same numbers where they are read):

* ``all-in-graph``: the W+ tensor is assembled before the layers read their styles, as the
  reference implementation does, so autograd also computes every layer's weight gradient;
* ``frozen-out``: the session's full-map path, frozen styles cached outside autograd;
* ``receptive``: the session's fast path over the receptive field of the handle's patch.

``--edit`` times whole edits instead, as a user runs them: ``drag_steps`` for a
10-step FreeDrag drag from the image centre a third of the width to the right, a
preview every 5 steps (``--preview-every``), once without and once with a mask (the
middle half editable): set-up and first step, plain steps, steps that show a frame,
total up to the result (the arrival measurement after the last step included), CPU
seconds, peak RSS. The process has built one Adam optimiser before timing
(torch imports ``torch._dynamo``, ~1.3 s, on the first one in a process; a napari
session pays that once). ``--flops`` runs each edit a second time, untimed, counting the
floating-point work of its convolutions and matrix products (forward and backward, with
PyTorch's own per-operator formulas), and times a 2048^3 matrix product with the same
threads: work divided by that rate is what the edit would take if every operation ran as
fast as this CPU multiplies matrices, the floor no code change gets under.

Each (resolution, mode) runs in its own process so that its peak RSS is its own. The
table shows the median and the fastest wall-clock step and the median CPU seconds per
step (all threads), which tells contention on a shared machine apart from real work.

    python benchmarks/stylegan2_speed.py                 # 256 and 512 px, 2 threads
    python benchmarks/stylegan2_speed.py --resolutions 256 --steps 3 --modes receptive
    python benchmarks/stylegan2_speed.py --edit          # whole edits, with and without mask
    python benchmarks/stylegan2_speed.py --edit --flops  # ... and their floating-point work
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
EDIT_MODES = ("edit", "edit-mask")


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
    from napari_freedrag.models.stylegan2.partial import run_blocks

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
            return run_blocks(synthesis, ws, until=feature_res, with_img=False)[0][0]
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


def edit_worker(
    resolution: int, mode: str, steps: int, preview_every: int, flops: bool = False
) -> dict:
    """One whole FreeDrag edit through ``drag_steps``, timed step by step."""
    import numpy as np
    import torch

    from napari_freedrag.bench.memory import peak_memory_gib
    from napari_freedrag.engine.run import drag_steps
    from napari_freedrag.engine.warmup import warm_up_optimiser

    backend = build_backend(resolution)
    state = backend.sample(0)
    warm_up_optimiser()  # the one-off torch._dynamo import, as the viewer does early
    mask = None
    if mode == "edit-mask":
        mask = np.zeros((resolution, resolution), np.uint8)
        mask[resolution // 4 : 3 * resolution // 4, resolution // 4 : 3 * resolution // 4] = 1
    centre = resolution / 2
    handle, target = [[centre, centre]], [[centre, centre + resolution / 3]]

    def edit():
        return drag_steps(
            backend, state, handle, target, mask, max_steps=steps, preview_every=preview_every
        )

    began, cpu_began = time.perf_counter(), time.process_time()
    rows, last, cpu_last = [], began, cpu_began
    for step in edit():
        now, cpu_now = time.perf_counter(), time.process_time()
        rows.append((now - last, cpu_now - cpu_last, step.image is not None))
        last, cpu_last = now, cpu_now
    # the loop ends once the result exists: the arrival measurement and the report count
    end, cpu_end = time.perf_counter(), time.process_time()
    plain = [r for r in rows[1:] if not r[2]]
    framed = [r for r in rows[1:] if r[2]]
    peak_gib = peak_memory_gib("cpu")  # before the counted run below
    work = count_work(edit) if flops else {}
    return {
        "resolution": resolution,
        "mode": mode,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "steps": len(rows),
        "total_s": end - began,
        "total_cpu_s": cpu_end - cpu_began,
        "result_cpu_s": cpu_end - cpu_last,
        "first_step_s": rows[0][0],
        "first_step_cpu_s": rows[0][1],
        "plain_step_s": statistics.median(r[0] for r in plain) if plain else None,
        "frame_step_s": statistics.median(r[0] for r in framed) if framed else None,
        "plain_step_cpu_s": statistics.median(r[1] for r in plain) if plain else None,
        "frame_step_cpu_s": statistics.median(r[1] for r in framed) if framed else None,
        "peak_rss_gib": peak_gib,
        **work,
    }


def matmul_rate() -> float:
    """GFLOP/s of a 2048^3 float32 matrix product with this process's threads (wall time)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ b
    return repeats * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def count_work(edit) -> dict:
    """Run ``edit()`` once more, untimed, adding up PyTorch's FLOP formulas
    (``torch.utils.flop_counter``) of every operator it dispatches, per step. Not
    ``FlopCounterMode`` itself: its module tracker hooks every module's forward and fails
    on the session's layers that run outside autograd."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    by_op = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                name = str(func._overloadpacket).removeprefix("aten.")
                by_op[name] += formula(*args, **kwargs, out_val=out)
            return out

    frame_work, before = 0, 0
    with Count():
        for step in edit():
            done = sum(by_op.values())
            if step.image is not None:
                frame_work += done - before
            before = done
    total = sum(by_op.values())
    rate = matmul_rate()
    return {
        "gflop": total / 1e9,
        "gflop_frame_steps": frame_work / 1e9,
        "gflop_by_op": {name: n / 1e9 for name, n in by_op.items()},
        "matmul_gflops": rate,
        "floor_s": total / 1e9 / rate,
    }


def edit_table(args, env) -> list[dict]:
    results = []
    header = ("res", "mode", "steps", "total s", "cpu s", "first", "plain", "frame",
              "cpu: first", "plain", "frame", "peak GiB")  # fmt: skip
    print(
        "{:>5} {:<9} {:>5} {:>8} {:>7} {:>6} {:>6} {:>6} {:>11} {:>6} {:>6} {:>9}".format(*header)
    )
    for resolution in args.resolutions:
        for mode in EDIT_MODES:
            result = run_worker(args, env, resolution, mode)
            results.append(result)
            print(
                f"{resolution:>5} {mode:<9} {result['steps']:>5} {result['total_s']:>8.2f} "
                f"{result['total_cpu_s']:>7.2f} {result['first_step_s']:>6.2f} "
                f"{result['plain_step_s']:>6.3f} {result['frame_step_s']:>6.2f} "
                f"{result['first_step_cpu_s']:>11.2f} {result['plain_step_cpu_s']:>6.3f} "
                f"{result['frame_step_cpu_s']:>6.2f} {result['peak_rss_gib']:>9.2f}",
                flush=True,
            )
    if args.flops:
        print("\n  res mode      GFLOP  in frame steps  matmul GFLOP/s  floor s  total s / floor")
        for r in results:
            print(
                f"{r['resolution']:>5} {r['mode']:<9} {r['gflop']:>6.1f} "
                f"{r['gflop_frame_steps']:>15.1f} {r['matmul_gflops']:>15.0f} "
                f"{r['floor_s']:>8.2f} {r['total_s'] / r['floor_s']:>16.1f}"
            )
    return results


def run_worker(args, env, resolution: int, mode: str) -> dict:
    command = [
        sys.executable, __file__, "--worker", str(resolution), mode,
        "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--preview-every", str(args.preview_every),
    ]  # fmt: skip
    if args.flops:
        command.append("--flops")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=None, help="default: 8 (--edit: 10)")
    parser.add_argument("--edit", action="store_true", help="time whole edits with previews")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preview-every", type=int, default=5, help="--edit: 0 = final only")
    parser.add_argument("--flops", action="store_true", help="--edit: count each edit's work")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", nargs=2, metavar=("RES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 10 if args.edit else 8

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        resolution, mode = int(args.worker[0]), args.worker[1]
        if mode in EDIT_MODES:
            result = edit_worker(resolution, mode, args.steps, args.preview_every, args.flops)
        else:
            result = worker(resolution, mode, args.steps, args.warmup)
        print(json.dumps(result))
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.edit:
        results = edit_table(args, env)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1)
        return 0
    results = []
    header = ("res", "mode", "s/step", "min", "cpu s", "render s", "peak GiB")
    print("{:>5} {:<13} {:>8} {:>7} {:>7} {:>9} {:>9}".format(*header))
    for resolution in args.resolutions:
        for mode in args.modes:
            result = run_worker(args, env, resolution, mode)
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
