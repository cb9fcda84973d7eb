"""Turn a ``napari-freedrag bench`` JSON into docs/benchmarks.md tables and plots.

Only the part between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers is
rewritten; the hand-written reading of the figures around it stays.  Plots go to
``docs/images/bench-*.png``.

    python benchmarks/make_benchmark_docs.py bench.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
METHODS = ("freedrag", "draggan")
LABELS = {
    "freedrag": "FreeDrag",
    "draggan": "DragGAN",
    "freedrag-calibrated-l": "FreeDrag, calibrated l",
}
COLOURS = {"freedrag": "#1f77b4", "draggan": "#d62728", "freedrag-calibrated-l": "#2ca02c"}
CATEGORY_DOCS = {
    "move": "move a cell's centroid by 6-10 px",
    "stretch": "two handles on a cell's major axis pulled apart (6-9 px)",
    "border": "move a cell until it is 3 px from the image edge",
    "pair": "two handles on the two most alike cells, both moved by the same vector",
    "large": "move a cell by 14-18 px (a quarter of the 64 px image)",
    "all": "every instruction",
}


def fmt(value, digits: int = 2, percent: bool = False) -> str:
    if value is None:
        return "–"
    if percent:
        return f"{100 * value:.0f} %"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_table(report: dict) -> str:
    env, model, config = report["environment"], report["model"], report["config"]
    counts = ", ".join(f"{k} {v}" for k, v in config["counts"].items())
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    rows = [
        ["created", report["created"]],
        ["wall time", f"{report['wall_seconds'] / 60:.1f} min"],
        ["configuration", config["name"]],
        [
            "machine",
            f"{env['processor']}, {env['cpu_count']} CPUs, "
            f"torch threads {env['torch_threads']}, CUDA: {env['cuda'] or 'none'}",
        ],
        ["versions", versions],
        [
            "model",
            f"{model['name']} {model.get('image_size')} sha256 "
            f"`{model.get('sha256', 'n/a')[:16]}…`",
        ],
        ["instructions", counts],
        [
            "settings",
            f"max_steps {config['max_steps']}, success ≤ {config['success_px']} px, "
            f"edit region = cells + expected cells dilated {config['region_dilation']} px, "
            f"seed {config['seed']}, image seeds from {config['first_image_seed']}, "
            f"truncation {config['truncation']}",
        ],
    ]
    return table(["", ""], rows)


def accuracy_table(summary: dict) -> str:
    header = [
        "instructions",
        "method",
        "n",
        "centroid error px (mean / median)",
        "success",
        "tracked error px",
        "converged",
        "steps",
        "s per drag",
        "time to target s",
        "outside MAE",
        "outside SSIM",
        "reverse SSIM",
        "reverse MAE",
    ]
    rows = []
    for category, by_method in summary.items():
        for k, method in enumerate(by_method):
            s = by_method[method]
            rows.append(
                [
                    category if k == 0 else "",
                    label(method),
                    str(s["n"]),
                    f"{fmt(s['error_px_mean'])} / {fmt(s['error_px_median'])}",
                    fmt(s["success_rate"], percent=True),
                    fmt(s["tracked_error_px_mean"]),
                    fmt(s["converged_rate"], percent=True),
                    fmt(s["steps_mean"], 0),
                    fmt(s["seconds_mean"], 1),
                    fmt(s["time_to_target_mean"], 1),
                    fmt(s["outside_mae_mean"]),
                    fmt(s["outside_ssim_mean"], 3),
                    fmt(s["reverse_ssim_mean"], 3),
                    fmt(s["reverse_mae_mean"]),
                ]
            )
    return table(header, rows)


def masked_table(summary: dict) -> str | None:
    rows = []
    for category, by_method in summary.items():
        if category == "all":
            continue
        for method in by_method:
            s = by_method[method]
            if not s["masked_n"]:
                continue
            rows.append(
                [
                    category,
                    label(method),
                    str(s["masked_n"]),
                    f"{fmt(s['error_px_mean'])} → {fmt(s['masked_error_px_mean'])}",
                    f"{fmt(s['success_rate'], percent=True)} → "
                    f"{fmt(s['masked_success_rate'], percent=True)}",
                    f"{fmt(s['outside_mae_mean'])} → {fmt(s['masked_outside_mae_mean'])}",
                    f"{fmt(s['outside_ssim_mean'], 3)} → {fmt(s['masked_outside_ssim_mean'], 3)}",
                ]
            )
    if not rows:
        return None
    header = [
        "instructions",
        "method",
        "n",
        "centroid error px",
        "success",
        "outside MAE",
        "outside SSIM",
    ]
    return table(header, rows)


def speed_table(runs: list[dict]) -> str:
    header = [
        "generator",
        "px",
        "params (M)",
        "device",
        "features",
        "method",
        "s/step (median)",
        "steps",
        "reached target",
        "time to target s",
        "peak memory GiB",
    ]
    rows = []
    for r in runs:
        rows.append(
            [
                short(r["generator"]),
                str(r["resolution"]),
                f"{r['parameters_m']:.1f}",
                r["device"],
                r["mode"],
                label(r.get("variant", r["method"])),
                f"{r['s_per_step_median']:.3f}",
                f"{r['steps']} / {r['max_steps']}",
                "yes" if r["converged"] else "no",
                fmt(r["time_to_target"], 1),
                f"{r['peak_memory_gib']:.2f}",
            ]
        )
    return table(header, rows)


def preset_table(presets: dict) -> str:
    rows = []
    for method, params in presets.items():
        text = ", ".join(f"{k}={v}" for k, v in params.items())
        rows.append([label(method), text])
    return table(["method", "parameters (spec presets, as run)"], rows)


# plots ------------------------------------------------------------------------------------


def short(name: str) -> str:
    """A model path as its file stem (plots and tables have little room)."""
    return Path(name).stem if "/" in name or "\\" in name else name


def label(method: str) -> str:
    return LABELS.get(method, method)


def bar_offset(k: int, count: int) -> float:
    return (k - (count - 1) / 2) * 0.8 / count


def grouped_bars(ax, categories, values_by_method, ylabel, title, percent=False):
    width = 0.8 / len(values_by_method)
    x = np.arange(len(categories))
    for k, (method, values) in enumerate(values_by_method.items()):
        values = [np.nan if v is None else v for v in values]
        values = np.asarray(values, dtype=float) * (100 if percent else 1)
        offset = bar_offset(k, len(values_by_method))
        ax.bar(x + offset, values, width, label=label(method), color=COLOURS.get(method))
    ax.set_xticks(x, categories)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def plot_accuracy(summary: dict, path: Path) -> None:
    categories = [c for c in summary if c != "all"] + ["all"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label, title, percent in (
        (axes[0], "error_px_mean", "px", "mean distance of the cell from its target", False),
        (axes[1], "success_rate", "%", "success (within 2 px)", True),
        (axes[2], "steps_mean", "optimiser steps", "mean steps used", False),
    ):
        values = {m: [summary[c][m][key] for c in categories] for m in summary["all"]}
        grouped_bars(ax, categories, values, label, title, percent)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_preservation(summary: dict, path: Path) -> None:
    categories = [c for c in summary if c != "all"] + ["all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in (
        (axes[0], "outside_ssim_mean", "SSIM outside the edited region (1 = unchanged)"),
        (axes[1], "reverse_ssim_mean", "SSIM after drag + reverse drag vs original"),
    ):
        values = {m: [summary[c][m][key] for c in categories] for m in summary["all"]}
        grouped_bars(ax, categories, values, "SSIM", title)
        finite = [v for vs in values.values() for v in vs if v is not None]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.05), 1.0)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pairs(rows: list[dict], path: Path) -> None:
    """Per instruction: each FreeDrag variant's error against DragGAN's (below the
    diagonal: FreeDrag closer)."""
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    categories = sorted({r["category"] for r in rows})
    markers = dict(zip(categories, "osD^v<>", strict=False))
    variants = [v for v in rows[0]["results"] if v != "draggan"] if rows else []
    top = 1.0
    for variant in variants:
        for category in categories:
            chosen = [r for r in rows if r["category"] == category]
            x = [r["results"]["draggan"].get("error_px", np.nan) for r in chosen]
            y = [r["results"][variant].get("error_px", np.nan) for r in chosen]
            top = max(top, np.nanmax(x + y))
            ax.scatter(
                x,
                y,
                marker=markers[category],
                color=COLOURS.get(variant),
                alpha=0.7,
                label=f"{label(variant)}: {category}",
            )
    ax.plot([0, top], [0, top], color="grey", lw=1)
    ax.axhline(2, color="grey", lw=0.6, ls=":")
    ax.axvline(2, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("DragGAN: distance from target (px)")
    ax.set_ylabel("FreeDrag: distance from target (px)")
    ax.set_title("per instruction (below the line: FreeDrag closer)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(runs: list[dict], path: Path) -> None:
    """Seconds per step for every feature mode; time to target on the shipped path."""
    keys = []
    for r in runs:
        key = (r["generator"], r["device"], r["mode"])
        if key not in keys:
            keys.append(key)
    labels = [f"{short(g)}\n{m}" + ("" if d == "cpu" else f"\n{d}") for g, d, m in keys]
    by = {(r["generator"], r["device"], r["mode"], r.get("variant", r["method"])): r for r in runs}
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.6), gridspec_kw={"width_ratios": [3, 1.5]})
    values = {m: [by.get((*k, m), {}).get("s_per_step_median") for k in keys] for m in METHODS}
    grouped_bars(axes[0], labels, values, "s per optimiser step (log)", "seconds per step")
    axes[0].set_yscale("log")
    axes[0].tick_params(axis="x", labelsize=7)
    axes[0].legend()
    reach = [k for k in keys if k[2] == "receptive"]
    variants = list(dict.fromkeys(r.get("variant", r["method"]) for r in runs))
    ttt = {}
    for m in variants:
        ttt[m] = []
        for k in reach:
            r = by.get((*k, m), {})
            ttt[m].append(r.get("time_to_target") if r.get("converged") else None)
    grouped_bars(axes[1], [short(k[0]) for k in reach], ttt, "s", "time to target (shipped path)")
    for k, m in enumerate(variants):
        for i, value in enumerate(ttt[m]):
            if value is None:
                axes[1].text(
                    i + bar_offset(k, len(variants)),
                    0,
                    "not\nreached",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    color=COLOURS.get(m),
                )
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(report: dict, path: Path) -> bool:
    import imageio.v3 as iio

    examples = report["accuracy"]["examples"]
    if not examples:
        return False
    rows = {r["id"]: r for r in report["accuracy"]["instructions"]}
    variants = list(report["accuracy"]["summary"]["all"])
    columns = 1 + len(variants)
    fig, axes = plt.subplots(
        len(examples), columns, figsize=(2.6 * columns, 2.6 * len(examples)), squeeze=False
    )
    for i, example in enumerate(examples):
        row = rows[example["id"]]
        for j, key in enumerate(("start", *variants)):
            image = iio.imread(io.BytesIO(base64.b64decode(example[key])))
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            handles, targets = np.asarray(row["handles"]), np.asarray(row["targets"])
            ax.scatter(handles[:, 1], handles[:, 0], c="white", s=18, edgecolors="k")
            ax.scatter(targets[:, 1], targets[:, 0], c="yellow", s=18, marker="x")
            for h, t in zip(handles, targets, strict=True):
                ax.annotate(
                    "",
                    xy=(t[1], t[0]),
                    xytext=(h[1], h[0]),
                    arrowprops={"arrowstyle": "->", "color": "yellow", "lw": 1},
                )
            if key != "start":
                result = row["results"][key]
                ax.set_title(
                    f"{label(key)}: {result['error_px']:.1f} px, {result['steps']} st", fontsize=8
                )
            else:
                ax.set_title(
                    f"#{row['id']} {row['category']} (seed {row['image_seed']})", fontsize=8
                )
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def generated_section(report: dict, images: Path, docs: Path) -> str:
    images.mkdir(parents=True, exist_ok=True)
    summary = report["accuracy"]["summary"]
    rows = report["accuracy"]["instructions"]
    runs = report["speed"]["runs"]
    rel = Path("images") if images.resolve().parent == docs.parent.resolve() else images
    plot_accuracy(summary, images / "bench-accuracy.png")
    plot_preservation(summary, images / "bench-preservation.png")
    plot_pairs(rows, images / "bench-per-instruction.png")
    plot_speed(runs, images / "bench-speed.png")
    has_examples = plot_examples(report, images / "bench-examples.png")
    parts = [
        BEGIN,
        "<!-- generated by benchmarks/make_benchmark_docs.py from the bench JSON; "
        "do not edit by hand -->",
        "### The run",
        run_table(report),
        "### Accuracy on the cells model",
        "\n".join(f"- **{c}**: {CATEGORY_DOCS.get(c, c)}" for c in summary),
        accuracy_table(summary),
        "Centroid error: distance of the dragged cell's centroid (segmented result) from the "
        "target (stretch: |length change − requested stretch|); tracked error: where the "
        "method's own point tracking thinks the handle is. Outside MAE/SSIM: pixel change "
        "(0-255) and mean SSIM over pixels outside the edited region. Reverse: drag back "
        "from the result (targets → handles) and compare with the start image.",
        f"![accuracy]({rel / 'bench-accuracy.png'})",
        f"![per instruction]({rel / 'bench-per-instruction.png'})",
        f"![preservation]({rel / 'bench-preservation.png'})",
    ]
    calibrated = {
        v: s["calibrated_l_mean"] for v, s in summary["all"].items() if s.get("calibrated_l_mean")
    }
    for variant, value in calibrated.items():
        parts.append(
            f"{label(variant)}: l measured per instruction on the start image (the patch "
            f"discrepancy of one sub-motion of d along the drag), mean {value:.4f}; the "
            f"preset's l is {report['presets']['freedrag']['l']}."
        )
    masked = masked_table(summary)
    if masked:
        parts += ["### With a mask (edited region painted): unmasked → masked", masked]
    if has_examples:
        parts.append(f"![examples]({rel / 'bench-examples.png'})")
    parts += [
        "### Speed",
        "\n".join(f"- **{k}**: {v}" for k, v in report["mode_docs"].items()),
        speed_table(runs),
        f"![speed]({rel / 'bench-speed.png'})",
        "### Presets",
        preset_table(report["presets"]),
        END,
    ]
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="output of napari-freedrag bench")
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    section = generated_section(report, args.images, args.docs)
    if args.docs.is_file():
        text = args.docs.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
    else:
        text = "# Benchmarks: FreeDrag against DragGAN\n\n" + section + "\n"
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    args.docs.write_text(text)
    print(f"wrote {args.docs} and {args.images}/bench-*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
