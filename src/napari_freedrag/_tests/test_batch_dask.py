"""Batches on real Dask clusters: a 2-process LocalCluster, and a separately started
``dask scheduler`` + ``dask worker`` reached through its address (the CLI path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed  # the batch extra: tools/setup.sh and tox install it
import numpy as np
import pytest

import napari_freedrag as nfd
from napari_freedrag import io
from napari_freedrag.cli import main
from napari_freedrag.errors import InputError

EDITS = [
    {"model": "cells", "seed": 3, "drag": ["30,30:30,36"], "max_steps": 4, "out": "cell3.png"},
    {"model": "cells", "seed": 4, "drag": [[20, 20], [24, 24]], "max_steps": 4,
     "out": "sub/cell4.tif", "save_latent": "sub/cell4.npy"},
    '{"model": "cells", "seed": 5 "drag": []}',
    {"model": "no-such-model", "seed": 5, "drag": ["30,30:30,36"], "out": "x.png"},
    {"model": "cells", "seed": 6, "drag": ["30,30:33,33"], "max_steps": 4, "out": "cell6.png"},
]  # fmt: skip


@pytest.fixture(scope="module")
def client():
    """The LocalCluster ``batch --workers 2`` starts, shared by this module's tests."""
    from napari_freedrag.batching.runner import local_client

    with local_client(2, edits=2) as dask_client:
        yield dask_client


def _rows(summary):
    return {row["line"]: row for row in summary["rows"]}


def test_two_workers_write_every_output_and_bad_lines_become_error_rows(client, tmp_path):
    summary = nfd.batch(EDITS, tmp_path, client=client, progress=False)
    rows = _rows(summary)
    assert summary["counts"] == {"done": 3, "skipped": 0, "error": 2, "pending": 0}
    assert "line 3: not valid JSON" in rows[3]["error"]
    assert "unknown model 'no-such-model'" in rows[4]["error"]
    for line, name in ((1, "cell3.png"), (2, "sub/cell4.tif"), (5, "cell6.png")):
        image = io.read_image(tmp_path / name)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        report = json.loads((tmp_path / name).with_suffix(".json").read_text())
        assert report["batch"]["line"] == line and report["batch"]["digest"] == rows[line]["digest"]
        assert rows[line]["final_points"] == report["final_points"]
        moved = np.subtract(report["content_points"], report["handles"])
        assert np.allclose(rows[line]["content_displacement"], moved, atol=1e-3)
        assert io.read_provenance(tmp_path / name)["model"] == "cells"
    assert np.load(tmp_path / "sub" / "cell4.npy").ndim == 3  # the W+ latent
    loads = {}
    for line in (1, 2, 5):
        batch_info = json.loads((tmp_path / rows[line]["out"]).with_suffix(".json").read_text())
        worker = batch_info["batch"]["worker"]
        loads[worker] = loads.get(worker, 0) + bool(batch_info["batch"]["model_loaded"])
    assert all(count <= 1 for count in loads.values())  # each worker loaded the model once
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert len(threads) == 2 and set(threads.values()) == {1}  # one process per core
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["counts"] == summary["counts"] and on_disk["finished"]
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(EDITS)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left


def test_a_rerun_skips_finished_edits_and_reruns_changed_ones(client, tmp_path):
    edits = [line for line in EDITS if isinstance(line, dict)]
    nfd.batch(edits, tmp_path, client=client, progress=False)
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix != ".csv"}
    again = nfd.batch(edits, tmp_path, client=client, progress=False)
    assert again["counts"]["skipped"] == 3 and again["counts"]["done"] == 0
    for path, mtime in written.items():
        if path.name != "summary.json":
            assert path.stat().st_mtime_ns == mtime, path
    changed = [dict(edits[0], max_steps=2), *edits[1:]]
    (tmp_path / "cell6.png").unlink()  # a lost output makes its edit run again too
    third = _rows(nfd.batch(changed, tmp_path, client=client, progress=False))
    assert [third[line]["status"] for line in (1, 2, 3, 4)] == ["done", "skipped", "error", "done"]


def test_cells_ground_truth_labels_and_displacements_agree(client, tmp_path):
    from napari_freedrag.batching import cells_instructions

    edits = list(cells_instructions(2, max_steps=20, device="cpu"))
    assert all(edit["truth"] and edit["model"] == "cells" for edit in edits)
    summary = nfd.batch(edits, tmp_path, client=client, progress=False)
    assert summary["counts"]["done"] == 2
    import tifffile

    for row in summary["rows"]:
        out = tmp_path / row["out"]
        before = tifffile.imread(out.with_name(out.stem + ".labels-before.tif"))
        after = tifffile.imread(out.with_name(out.stem + ".labels-after.tif"))
        truth = json.loads(out.with_suffix(".json").read_text())["ground_truth"]
        moved = [cell for cell in truth["cells"] if cell["intended_displacement"] is not None]
        assert len(moved) == 1 and before.max() >= 1
        cell = moved[0]
        centroid = np.argwhere(before == cell["id"]).mean(axis=0)
        assert np.allclose(centroid, cell["centroid_before"])
        if cell["displacement"] is not None:  # found again after the edit: same id there
            shifted = np.argwhere(after == cell["id"]).mean(axis=0) - centroid
            assert np.allclose(shifted, cell["displacement"])
            assert row["cell_displacement"] == [cell["displacement"]]


def test_a_scheduler_that_does_not_answer_is_one_message_within_the_timeout(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    began = time.monotonic()
    with pytest.raises(InputError, match="no Dask scheduler answered at"):
        nfd.batch(EDITS[:1], tmp_path, scheduler=address, connect_timeout=2, progress=False)
    assert time.monotonic() - began < 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def scheduler_address(tmp_path):
    """A ``dask scheduler`` and one ``dask worker`` as separate processes on 127.0.0.1."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    source = str(Path(nfd.__file__).resolve().parents[1])  # this checkout, not another install
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    common = dict(env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [
        subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                          "--port", str(port), "--no-dashboard"], **common),
        subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                          "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                          "--death-timeout", "60"], **common),
    ]  # fmt: skip
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as probe:
            probe.wait_for_workers(1, timeout=90)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def test_cli_runs_a_batch_through_a_separately_started_scheduler(
    scheduler_address, tmp_path, capsys
):
    edits = tmp_path / "edits.jsonl"
    lines = [json.dumps(EDITS[0]), json.dumps(EDITS[4])]
    edits.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results"
    status = main(["batch", str(edits), "--out", str(out), "--scheduler", scheduler_address,
                   "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "2 done, 0 skipped" in captured.out
    assert {row["status"] for row in json.loads((out / "summary.json").read_text())["rows"]} == {
        "done"
    }
    report = json.loads((out / "cell3.json").read_text())
    assert report["batch"]["worker"].startswith("tcp://127.0.0.1:")
    assert Path(out / "cell6.png").is_file()
