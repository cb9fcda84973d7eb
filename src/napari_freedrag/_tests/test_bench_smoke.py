"""The benchmark in a tiny configuration: analytic blobs for accuracy, a 32 px random
StyleGAN2 for speed.  Checks the JSON a user would read: structure, finite and plausible
numbers, a drag that moves the dragged object closer to its target."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_freedrag import bench
from napari_freedrag.bench.instructions import PLANNERS
from napari_freedrag.bench.speed import in_subprocess
from napari_freedrag.errors import InputError
from napari_freedrag.io import write_report
from napari_freedrag.models.analytic import AnalyticBackend

TINY_GENERATOR = {
    "name": "tiny-32",
    "resolution": 32,
    "z_dim": 32,
    "w_dim": 32,
    "mapping_layers": 2,
    "channel_base": 512,
    "channel_max": 32,
    "max_steps": 12,
    "mode_steps": 3,
}


class SeparateBlobs(AnalyticBackend):
    """Two analytic blobs in opposite corners: each segments as one object, as cells do,
    and a drag of the benchmark's length cannot merge them."""

    def __init__(self):
        super().__init__(n_blobs=2)

    def sample(self, seed: int, truncation: float = 0.7):
        rng = np.random.default_rng(seed)
        corners = [[16, 16], [47, 47]] if rng.random() < 0.5 else [[16, 47], [47, 16]]
        centres = np.array(corners, dtype=np.float64) + rng.uniform(-3, 3, size=(2, 2))
        start = self.from_centres(centres)
        start.info["seed"] = seed
        return start


def tiny_config(**changes) -> bench.BenchConfig:
    settings = dict(
        model="analytic",
        device="cpu",
        counts={"move": 2, "stretch": 1, "border": 1, "pair": 1},
        max_steps=60,
        masked_categories=("move",),
        examples=1,
        variants={**bench.VARIANTS, **bench.CALIBRATED},
        speed_generators=[TINY_GENERATOR],
        isolate=False,
    )
    settings.update(changes)
    return bench.BenchConfig(**settings)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One tiny run, written and read back as a user of the JSON would."""
    result = bench.run_benchmark(tiny_config(), backend=SeparateBlobs())
    path = write_report(tmp_path_factory.mktemp("bench") / "bench.json", result)
    return json.loads(path.read_text())


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_report_records_environment_config_and_presets(report):
    assert report["schema"] == "napari-freedrag-bench/1"
    assert report["environment"]["versions"]["torch"]
    assert report["config"]["counts"] == {"move": 2, "stretch": 1, "border": 1, "pair": 1}
    assert report["config"]["max_steps"] == 60
    assert set(report["presets"]) == {"freedrag", "draggan"}
    assert report["presets"]["freedrag"]["lr"] > 0
    assert report["model"]["name"] == "analytic"


def test_every_instruction_has_measured_results_for_both_methods(report):
    rows = report["accuracy"]["instructions"]
    assert [r["category"] for r in rows].count("move") == 2
    assert {"stretch", "border", "pair"} <= {r["category"] for r in rows}
    for row in rows:
        assert (
            len(row["handles"])
            == len(row["targets"])
            == (1 if row["category"] in ("move", "border") else 2)
        )
        for method in ("freedrag", "draggan"):
            result = row["results"][method]
            assert 1 <= result["steps"] <= 60
            assert finite(result["seconds"]) and result["seconds"] > 0
            assert finite(result["error_px"]) and result["error_px"] >= 0
            assert 0 <= result["outside_mae"] <= 255
            assert -1 <= result["outside_ssim"] <= 1
            reverse = result["reverse"]
            assert 0 <= reverse["mae"] <= 255 and -1 <= reverse["ssim"] <= 1
            if row["category"] == "move":
                assert result["masked"]["steps"] >= 1


def test_calibrated_variant_runs_freedrag_with_a_measured_l(report):
    for row in report["accuracy"]["instructions"]:
        result = row["results"]["freedrag-calibrated-l"]
        assert finite(result["overrides"]["l"]) and result["overrides"]["l"] > 0
        assert "overrides" not in row["results"]["freedrag"]
    assert report["accuracy"]["summary"]["all"]["freedrag-calibrated-l"]["n"] == 5


def test_dragging_brings_the_object_closer_to_its_target(report):
    moves = [r for r in report["accuracy"]["instructions"] if r["category"] == "move"]
    for row in moves:
        result = row["results"]["freedrag"]
        assert result["found"]
        assert result["error_px"] < 0.5 * row["drag_px"][0]
        # dragging back restores more of the start image than the drag changed
        assert result["reverse"]["mae"] < result["outside_mae"] + 1


def test_summary_agrees_with_the_raw_rows(report):
    rows = report["accuracy"]["instructions"]
    summary = report["accuracy"]["summary"]
    for method in ("freedrag", "draggan"):
        errors = [r["results"][method]["error_px"] for r in rows]
        assert summary["all"][method]["n"] == len(rows)
        assert summary["all"][method]["error_px_mean"] == pytest.approx(np.mean(errors))
        successes = [r["results"][method]["success"] for r in rows if r["category"] == "move"]
        assert summary["move"][method]["success_rate"] == pytest.approx(np.mean(successes))
        assert summary["move"][method]["masked_n"] == 2
    example = report["accuracy"]["examples"][0]
    assert {"start", "freedrag", "draggan"} <= set(example)


def test_speed_runs_cover_every_mode_and_method_with_finite_numbers(report):
    runs = report["speed"]["runs"]
    assert {(r["mode"], r["method"]) for r in runs} == {
        (mode, method) for mode in bench.MODES for method in ("freedrag", "draggan")
    }
    calibrated = [r for r in runs if r["variant"] == "freedrag-calibrated-l"]
    assert [r["mode"] for r in calibrated] == ["receptive"]
    assert calibrated[0]["overrides"]["l"] > 0
    for run in runs:
        assert run["resolution"] == 32 and run["device"] == "cpu"
        assert finite(run["s_per_step_median"]) and run["s_per_step_median"] > 0
        assert run["steps"] <= run["max_steps"]
        assert run["peak_memory_gib"] > 0
        if run["mode"] != "receptive":
            assert run["max_steps"] == 3


def test_feature_modes_follow_the_same_trajectory(report):
    """The modes differ in cost only: the same steps give the same points."""
    runs = {(r["mode"], r["method"]): r for r in report["speed"]["runs"]}
    for method in ("freedrag", "draggan"):
        first = runs[("feature-map", method)]
        for mode in ("full-synthesis",):
            np.testing.assert_allclose(
                runs[(mode, method)]["final_points"], first["final_points"], atol=1e-3
            )


def test_a_speed_job_runs_in_its_own_process():
    job = {
        "generator": TINY_GENERATOR,
        "device": "cpu",
        "method": "freedrag",
        "mode": "receptive",
        "max_steps": 4,
        "drag_fraction": 0.125,
        "truncation": 0.7,
    }
    result = in_subprocess(job)
    assert result["memory_kind"] == "process peak RSS"
    assert result["peak_memory_gib"] >= result["rss_before_drag_gib"] > 0
    assert 1 <= result["steps"] <= 4


def test_every_category_has_one_planner():
    assert tuple(PLANNERS) == bench.CATEGORIES


def test_unknown_category_is_refused_with_the_allowed_names():
    with pytest.raises(InputError, match="unknown instruction category 'twist'.*move"):
        bench.run_benchmark(tiny_config(counts={"twist": 1}), backend=SeparateBlobs())


def test_cli_names_a_missing_model_in_one_line(tmp_path, capsys):
    from napari_freedrag.cli import main

    status = main(
        [
            "bench",
            "--quick",
            "--model",
            str(tmp_path / "missing.pt"),
            "--out",
            str(tmp_path / "bench.json"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "missing.pt" in err
    assert not (tmp_path / "bench.json").exists()
