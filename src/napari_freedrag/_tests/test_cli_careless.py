"""A careless user's command lines: each is one stderr line and exit status 2, nothing lost.

The cases are what people type by mistake: malformed points and numbers, outputs in
places that cannot be written or that would overwrite an input or another output,
corrupt or wrong input files, hostile or missing models. Outputs are checked before any
model work, so most cases end in milliseconds.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_freedrag.cli import main
from napari_freedrag.testing import save_random_checkpoint

from . import hostile_files

DRAG = ["--drag", "10,10:10,14"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Files a user has lying around: a model, images, latents, text, a hostile pickle."""
    root = tmp_path_factory.mktemp("careless")
    paths = {"root": root, "model": save_random_checkpoint(root)}
    paths["photo"] = root / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(paths["photo"])
    paths["mask"] = root / "mask.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(paths["mask"])
    paths["small_mask"] = root / "small-mask.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(paths["small_mask"])
    paths["corrupt"] = root / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    paths["text"] = root / "notes.txt"
    paths["text"].write_text("not an image\n")
    paths["folder"] = root / "a-folder"
    paths["folder"].mkdir()
    paths["file_parent"] = root / "plain-file"
    paths["file_parent"].write_text("x")
    for name, value in (
        ("strings", np.array(["a", "b"])),
        ("nan", np.full((1, 6, 16), np.nan, np.float32)),
        ("complex", np.zeros((1, 6, 16), np.complex64)),
        ("bools", np.zeros((1, 6, 16), bool)),
    ):
        paths[f"latent_{name}"] = root / f"latent-{name}.npy"
        np.save(paths[f"latent_{name}"], value)
    paths["latent_object"] = root / "latent-object.npy"
    np.save(paths["latent_object"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths["latent_empty"] = root / "latent-empty.npy"
    paths["latent_empty"].write_bytes(b"")
    paths["latent_npz"] = root / "latent.npz"
    np.savez(paths["latent_npz"], w=np.zeros(3))
    paths["hostile"] = root / "hostile.pkl"
    marker = root / "code-was-run"
    paths["marker"] = marker
    paths["hostile"].write_bytes(b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    paths["random_pkl"] = root / "random.pkl"
    # Seeded, so a failure replays (unseeded draws differed per run; some held opcodes
    # that once cost the loader 45 s and 15 GiB, see hostile_files.memo_slot).
    paths["random_pkl"].write_bytes(np.random.default_rng(3000).bytes(3000))
    paths["truncated_pkl"] = root / "truncated.pkl"
    paths["truncated_pkl"].write_bytes(pickle.dumps({"G_ema": list(range(100))})[:-20])
    crafted = root / "crafted"
    crafted.mkdir()
    paths["stride0"] = hostile_files.stride0_views(crafted)
    paths["json_res"] = hostile_files.json_resolution_32768(crafted)
    return paths


def _edit(world, *extra, out="out.png", model=None, drag=True) -> list[str]:
    argv = ["edit", "--model", str(model or world["model"])]
    argv += DRAG if drag else []
    argv += ["--out", str(world["root"] / out)] if out else []
    return argv + [str(value).format(**world) for value in extra]


def _model(name):
    return lambda w: _edit(w, model=w[name])


#: (case id, argv builder, phrase the one line must contain)
CASES = [
    # --- points
    *[
        (
            f"drag {text!r}",
            lambda w, t=text: [
                "edit",
                "--model",
                str(w["model"]),
                "--drag",
                t,
                "--out",
                str(w["root"] / "out.png"),
            ],
            phrase,
        )
        for text, phrase in [
            ("10,10", "needs a handle and a target"),
            ("10,10:", "needs a handle and a target"),
            (":", "R0,C0:R1,C1"),
            ("", "needs a handle and a target"),
            ("10;10:20,20", "R0,C0:R1,C1"),
            ("a,b:1,2", "R0,C0:R1,C1"),
            ("1,2,3:4,5", "R0,C0:R1,C1"),
            ("1,2:3,4:5,6", "needs a handle and a target"),
            ("1 2:3 4", "R0,C0:R1,C1"),
            ("1,,2:3,4", "R0,C0:R1,C1"),
            ("1,2:3", "R0,C0:R1,C1"),
            (",:,", "R0,C0:R1,C1"),
            ("1,2:3,4,", "R0,C0:R1,C1"),
            ("0x1,2:3,4", "R0,C0:R1,C1"),
            ("nan,1:2,2", "NaN or infinite"),
            ("1,inf:2,2", "NaN or infinite"),
            ("1,2:-inf,2", "NaN or infinite"),
            ("10,10:10,400", "outside"),
            ("-5,0:1,1", "--drag=R0,C0:R1,C1"),
            ("=-5,0:1,1", "R0,C0:R1,C1"),
            ("1e9,1:1,1", "outside"),
        ]
    ],
    ("no drag", lambda w: _edit(w, drag=False), "--drag"),
    ("no drag, max-steps 3", lambda w: _edit(w, "--max-steps", "3", drag=False), "--drag"),
    # --- numbers and options
    ("max-steps -1", lambda w: _edit(w, "--max-steps", "-1"), "--max-steps"),
    ("max-steps abc", lambda w: _edit(w, "--max-steps", "abc"), "invalid int"),
    ("max-steps 1.5", lambda w: _edit(w, "--max-steps", "1.5"), "invalid int"),
    ("seed -1", lambda w: _edit(w, "--seed", "-1"), "--seed must be"),
    ("seed 2^40", lambda w: _edit(w, "--seed", str(2**40)), "--seed must be"),
    ("seed x", lambda w: _edit(w, "--seed", "x"), "invalid int"),
    ("l -1", lambda w: _edit(w, "--l", "-1"), "--l must be"),
    ("l nan", lambda w: _edit(w, "--l", "nan"), "--l must be"),
    ("l inf", lambda w: _edit(w, "--l", "inf"), "--l must be"),
    ("l abc", lambda w: _edit(w, "--l", "abc"), "invalid float"),
    ("d 0", lambda w: _edit(w, "--d", "0"), "--d must be"),
    ("d -3", lambda w: _edit(w, "--d", "-3"), "--d must be"),
    ("lora-steps -2", lambda w: _edit(w, "--lora-steps", "-2"), "--lora-steps"),
    ("method magic", lambda w: _edit(w, "--method", "magic"), "invalid choice"),
    ("seed and latent", lambda w: _edit(w, "--seed", "1", "--latent", "w.npy"), "not allowed"),
    ("seed and image", lambda w: _edit(w, "--seed", "1", "--image", "{photo}"), "not allowed"),
    ("latent and image", lambda w: _edit(w, "--latent", "w.npy", "--image", "x"), "not allowed"),
    ("unknown flag", lambda w: _edit(w, "--frobnicate"), "unrecognized"),
    ("no --out", lambda w: _edit(w, out=None), "--out"),
    ("bare edit", lambda w: ["edit"], "required"),
    ("unknown command", lambda w: ["frobnicate"], "invalid choice"),
    ("device gpu9", lambda w: _edit(w, "--device", "gpu9"), "device"),
    ("device cuda:99", lambda w: _edit(w, "--device", "cuda:99"), "cuda"),
    ("flag without value", lambda w: [*_edit(w), "--mask"], "expected one argument"),
    # --- outputs, all refused before the model loads
    ("out .jpg", lambda w: _edit(w, out="x.jpg"), ".png or .tif"),
    ("out without suffix", lambda w: _edit(w, out="x"), ".png or .tif"),
    ("out .pngx", lambda w: _edit(w, out="x.pngx"), ".png or .tif"),
    ("out .npy", lambda w: _edit(w, out="x.npy"), ".png or .tif"),
    (
        "out is a folder",
        lambda w: (
            _edit(w, out="a-folder.png", model=w["model"])
            and ["edit", "--model", str(w["model"]), *DRAG, "--out", str(w["folder"])]
        ),
        ".png or .tif",
    ),
    ("out folder missing", lambda w: _edit(w, out="missing/x.png"), "does not exist"),
    ("out under a file", lambda w: _edit(w, out="plain-file/x.png"), "does not exist"),
    ("out deep missing", lambda w: _edit(w, out="a/b/c/x.tif"), "does not exist"),
    ("report .txt", lambda w: _edit(w, "--report", "{root}/r.txt"), ".json"),
    ("report no suffix", lambda w: _edit(w, "--report", "{root}/r"), ".json"),
    ("report is a folder", lambda w: _edit(w, "--report", "{root}/a-folder"), ".json"),
    ("report folder missing", lambda w: _edit(w, "--report", "{root}/no/r.json"), "does not exist"),
    (
        "report under a file",
        lambda w: _edit(w, "--report", "{root}/plain-file/r.json"),
        "not exist",
    ),
    (
        "report overwrites the model config",
        lambda w: _edit(w, "--report", "{root}/tiny.json"),
        "same file as --model's config",
    ),
    ("latent .bin", lambda w: _edit(w, "--save-latent", "{root}/w.bin"), ".npy"),
    ("latent no suffix", lambda w: _edit(w, "--save-latent", "{root}/w"), ".npy"),
    ("latent .npz", lambda w: _edit(w, "--save-latent", "{root}/w.npz"), ".npy"),
    ("latent folder missing", lambda w: _edit(w, "--save-latent", "{root}/no/w.npy"), "not exist"),
    (
        "save-latent is the input latent",
        lambda w: _edit(w, "--latent", "{latent_nan}", "--save-latent", "{latent_nan}"),
        "same file as --latent",
    ),
    ("frames is a file", lambda w: _edit(w, "--frames", "{text}"), "is a file"),
    ("frames parent missing", lambda w: _edit(w, "--frames", "{root}/no/frames"), "not exist"),
    (
        "out is the mask",
        lambda w: _edit(w, "--mask", "{mask}", "--out", "{mask}", out=None),
        "same file as --mask",
    ),
    (
        "out is the image",
        lambda w: _edit(w, "--image", "{photo}", "--out", "{photo}", out=None, model="ldm:nowhere"),
        "same file as --image",
    ),
    (
        "out is the image via ..",
        lambda w: _edit(
            w, "--image", "{photo}", "--out", "{folder}/../photo.png", out=None, model="ldm:nowhere"
        ),
        "same file",
    ),
    ("report is the out", lambda w: _edit(w, "--report", "{root}/o.json", out="o.json"), ".png"),
    ("out equals frames", lambda w: _edit(w, "--frames", "{root}/out.png"), "same file as --out"),
    (
        "out is a future frame",
        lambda w: _edit(w, "--frames", "{root}/a-folder", out="a-folder/frame_0003.png"),
        "overwritten by a --frames frame",
    ),
    # --- input files, read before the model loads
    ("mask missing", lambda w: _edit(w, "--mask", "no-such-mask.png"), "not found"),
    ("mask is text", lambda w: _edit(w, "--mask", "{text}"), "unsupported image type"),
    ("mask corrupt", lambda w: _edit(w, "--mask", "{corrupt}"), "cannot read image"),
    ("mask wrong shape", lambda w: _edit(w, "--mask", "{small_mask}"), "10x12"),
    ("mask is a folder", lambda w: _edit(w, "--mask", "{folder}"), "not found"),
    (
        "image, projection steps 0",
        lambda w: _edit(w, "--image", "{photo}", "--invert-steps", "0"),
        ">= 1",
    ),
    ("image missing", lambda w: _edit(w, "--image", "nope.png", model="ldm:nowhere"), "not found"),
    (
        "image corrupt",
        lambda w: _edit(w, "--image", "{corrupt}", model="ldm:nowhere"),
        "cannot read image",
    ),
    ("image is text", lambda w: _edit(w, "--image", "{text}", model="ldm:nowhere"), "unsupported"),
    ("latent missing", lambda w: _edit(w, "--latent", "nope.npy"), "not found"),
    ("latent strings", lambda w: _edit(w, "--latent", "{latent_strings}"), "not numbers"),
    ("latent complex", lambda w: _edit(w, "--latent", "{latent_complex}"), "not numbers"),
    ("latent bools", lambda w: _edit(w, "--latent", "{latent_bools}"), "not numbers"),
    ("latent object", lambda w: _edit(w, "--latent", "{latent_object}"), "not a plain .npy"),
    ("latent NaN", lambda w: _edit(w, "--latent", "{latent_nan}"), "NaN"),
    ("latent empty file", lambda w: _edit(w, "--latent", "{latent_empty}"), "not a plain .npy"),
    ("latent is text", lambda w: _edit(w, "--latent", "{text}"), "not a plain .npy"),
    ("latent is npz", lambda w: _edit(w, "--latent", "{latent_npz}"), "npz"),
    ("latent is an image", lambda w: _edit(w, "--latent", "{photo}"), "not a plain .npy"),
    # --- models
    ("model missing", lambda w: _edit(w, model=w["root"] / "nowhere.pkl"), "nowhere.pkl"),
    ("model hostile", _model("hostile"), "asks to run os.system"),
    ("model random bytes", _model("random_pkl"), "random.pkl"),
    ("model truncated", _model("truncated_pkl"), "truncated"),
    ("model stride-0 views", _model("stride0"), "loading budget"),
    ("model config resolution", _model("json_res"), "img_resolution"),
    ("model is a folder", _model("folder"), "a-folder"),
    ("model is text", _model("text"), "notes.txt"),
    ("model is an image", _model("photo"), "photo.png"),
    ("model category unknown", lambda w: _edit(w, model="unicorns"), "unicorns"),
    ("model ldm empty", lambda w: _edit(w, model="ldm:"), "after the colon"),
    ("model ldm missing", lambda w: _edit(w, model="ldm:/no/such/sd"), "does not exist"),
    ("model ldm file", lambda w: _edit(w, model=f"ldm:{w['text']}"), "is a file"),
    ("model empty", lambda w: _edit(w, model=" "), "model"),
    ("viewer model typo", lambda w: ["--modle", "cells"], "invalid choice"),
    # --- other commands
    ("demo negative steps", lambda w: ["demo", "--max-steps", "-1"], "--max-steps"),
    ("demo out is a file", lambda w: ["demo", "--out", str(w["text"])], "is a file"),
    (
        "demo out parent missing",
        lambda w: ["demo", "--out", str(w["root"] / "a" / "b")],
        "does not exist",
    ),
    ("demo steps abc", lambda w: ["demo", "--max-steps", "abc"], "invalid int"),
    (
        "bench out folder missing",
        lambda w: ["bench", "--out", str(w["root"] / "no" / "b.json")],
        "does not exist",
    ),
    ("bench out .txt", lambda w: ["bench", "--out", str(w["root"] / "b.txt")], ".json"),
    ("bench unknown flag", lambda w: ["bench", "--frobnicate"], "unrecognized"),
    ("train-cells bad number", lambda w: ["train-cells", "--kimg", "x"], "invalid float"),
    ("models extra argument", lambda w: ["models", "--all"], "unrecognized"),
]


def run_one_line(capsys, argv) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, (argv, captured)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("napari-freedrag: error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize(("build", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_careless_command_lines_are_one_line_and_status_2(
    world, capsys, monkeypatch, build, phrase
):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # demo cases reach their own checks
    before = sorted(p.name for p in world["root"].rglob("*"))
    line = run_one_line(capsys, build(world))
    assert phrase.lower() in line.lower(), line
    assert sorted(p.name for p in world["root"].rglob("*")) == before  # nothing written
    assert not world["marker"].exists(), "a model file ran code"


def test_demo_without_a_display_is_one_line(capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert "no display" in run_one_line(capsys, ["demo", "--out", "nowhere-demo"])
    assert not Path("nowhere-demo").exists()


def test_an_unwritable_folder_is_refused_before_the_edit(world, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != world["folder"])
    line = run_one_line(capsys, _edit(world, out="a-folder/x.png"))
    assert "is not writable" in line


def test_a_write_failure_is_one_line_and_keeps_the_old_file(world, capsys, monkeypatch):
    out = world["root"] / "kept.png"
    out.write_bytes(b"the user's old image")
    real_replace = os.replace

    def disk_full(src, dst):
        if Path(dst) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    line = run_one_line(capsys, _edit(world, "--max-steps", "1", out="kept.png"))
    assert "cannot write" in line and "No space left on device" in line
    assert out.read_bytes() == b"the user's old image"
    assert not [p for p in world["root"].iterdir() if ".part" in p.name]  # no temp files left


def test_render_a_seed_with_max_steps_0_needs_no_drag(world, capsys):
    out = world["root"] / "seed3.png"
    latent = world["root"] / "seed3.npy"
    argv = ["edit", "--model", str(world["model"]), "--seed", "3", "--max-steps", "0"]
    assert main([*argv, "--out", str(out), "--save-latent", str(latent)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (32, 32, 3) and image.std() > 0
    assert np.load(latent).ndim == 3  # written at exactly the name given
    assert "0 steps" in capsys.readouterr().out
    assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1"  # no bars around our lines
    out.unlink()
    latent.unlink()
