"""Batch instructions and the checks made before any edit runs (no Dask cluster needed)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import napari_freedrag as nfd
from napari_freedrag.batching.instructions import check_duplicates, read_instructions
from napari_freedrag.cli import main
from napari_freedrag.errors import FreeDragError, InputError


def _errors(lines, base):
    items, _ = read_instructions(lines, base=base)
    check_duplicates(items)
    return {item.line: item.error for item in items}


def test_each_bad_line_is_named_by_its_number_and_good_lines_stay_runnable(tmp_path):
    (tmp_path / "start.npy").write_bytes(b"")
    lines = [
        '{"seed": 1, "drag": ["30,30:30,36"], "out": "a.png"}',
        '{"seed": 1, "drag": ["30,30:30,36"] "out": "b.png"}',
        "",
        '{"seed": 1, "drag": ["30,30:30,36"], "out": "c.png", "colour": "red"}',
        '{"seed": 1, "drag": ["30,30"], "out": "d.png"}',
        '{"seed": 1, "drag": ["30,30:30,36"], "out": "../e.png"}',
        '{"seed": 1, "drag": ["30,30:30,36"], "out": "a.png"}',
        '{"seed": "one", "drag": ["30,30:30,36"], "out": "f.png"}',
        '{"seed": 1, "latent": "start.npy", "drag": ["30,30:30,36"], "out": "g.png"}',
        '{"seed": 1, "drag": ["30,30:30,36"], "out": "h.jpg"}',
        '{"mask": "missing.png", "drag": ["30,30:30,36"], "out": "i.png"}',
        '{"drag": ["30,30:30,36"], "out": "k.png", "report": "summary.json"}',
        '{"max-steps": 5, "drag": [[30, 30], [30, 36]], "out": "sub/j.tif"}',
        "[1, 2]",
    ]
    errors = _errors(lines, tmp_path)
    assert 3 not in errors  # blank lines are not edits
    assert errors[1] is None and errors[13] is None
    expected = {
        2: "not valid JSON",
        4: "unknown key 'colour'",
        5: "needs a handle and a target",
        6: "inside the output folder",
        7: "same file as line 1",
        8: "'seed' must be a JSON int",
        9: "one of seed, image or latent",
        10: ".png or .tif",
        11: "mask missing.png: file not found",
        12: "summary file",
        14: "one JSON object",
    }
    for line, words in expected.items():
        assert errors[line].startswith(f"line {line}: ") and words in errors[line], errors[line]


def test_digest_follows_the_instruction_and_its_input_bytes_not_the_device(tmp_path):
    mask = tmp_path / "mask.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    line = {"seed": 2, "drag": ["30,30:30,36"], "mask": "mask.png", "out": "a.png"}

    def digest(**changes):
        items, _ = read_instructions([{**line, **changes}], base=tmp_path)
        return items[0].digest()

    first = digest()
    assert digest(device="cpu") == first
    assert digest(max_steps=7) != first
    assert digest(drag=[[[30, 30], [30, 36]]]) == first  # the same pair, written as numbers
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(mask)
    assert digest() != first


def test_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys):
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"seed": 1, "drag": ["30,30:30,36"], "out": "a.png"}\n')
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert main(["batch", str(edits), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write there" in err[0]
    assert main(["batch", str(edits), "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_missing_instructions_file_and_missing_out_are_one_line(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "instructions file not found" in capsys.readouterr().err
    edits = tmp_path / "edits.jsonl"
    edits.write_text("\n")
    assert main(["batch", str(edits), "--out", str(tmp_path / "o")]) == 2
    assert "no instructions" in capsys.readouterr().err
    assert main(["batch", str(edits)]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_without_dask_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    edits = [{"seed": 1, "drag": ["30,30:30,36"], "out": "a.png"}]
    with pytest.raises(FreeDragError, match=r'pip install "napari-freedrag\[batch\]"'):
        nfd.batch(edits, tmp_path / "out", progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"][0]["status"] == "pending"  # nothing ran, nothing was lost


def test_a_batch_of_only_finished_or_broken_lines_needs_no_cluster(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    summary = nfd.batch(['{"seed": 1}', "not json"], tmp_path, progress=False)
    assert summary["counts"] == {"done": 0, "skipped": 0, "error": 2, "pending": 0}
    assert 'no "out"' in summary["rows"][0]["error"]
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("line,out,status") and len(csv_lines) == 3


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(InputError, match="--workers must be 1 or more"):
        nfd.batch([{"seed": 1, "drag": ["30,30:30,36"], "out": "a.png"}], tmp_path,
                  workers=0, progress=False)  # fmt: skip
