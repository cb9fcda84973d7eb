"""Training the cells StyleGAN2: it learns without NaNs, snapshots, resumes and exports."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from napari_freedrag.errors import InputError
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
from napari_freedrag.training.cells import state as cells_state
from napari_freedrag.training.cells import train as cells_train
from napari_freedrag.training.cells.dataset import make_images

TINY = {
    "resolution": 16,
    "z_dim": 16,
    "w_dim": 16,
    "channel_base": 128,
    "channel_max": 32,
    "batch": 4,
    "dataset_size": 8,
}
TINY_ARGS = [
    arg for key, value in TINY.items() for arg in (f"--{key.replace('_', '-')}", str(value))
]


def test_every_loss_and_regulariser_runs_and_stays_finite():
    cfg = cells_state.TrainConfig(
        **TINY, r1_interval=1, style_mixing=1.0, pl_weight=2.0, pl_interval=1
    )
    state = cells_state.build_state(cfg, torch.device("cpu"))
    g_before = [p.detach().clone() for p in state.G.parameters()]
    ema_before = [p.detach().clone() for p in state.G_ema.parameters()]
    images = make_images(8, seed=0, size=16)
    for step in range(3):
        logs = cells_train.train_step(state, cells_train._to_batch(images, np.arange(4), "cpu"))
        assert {"loss_G", "loss_D", "r1", "pl"} <= logs.keys()
        assert all(math.isfinite(float(v)) for v in logs.values()), (step, logs)
    assert (state.iteration, state.nimg) == (3, 12)
    for net in (state.G, state.D, state.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(g_before, state.G.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2, "the generator must learn"
    # The EMA follows G, but lags behind it.
    ema_moved = any(
        not torch.equal(a, b) for a, b in zip(ema_before, state.G_ema.parameters(), strict=True)
    )
    ema_lags = any(
        not torch.equal(a, b)
        for a, b in zip(state.G.parameters(), state.G_ema.parameters(), strict=True)
    )
    assert ema_moved and ema_lags


def test_cli_snapshots_exports_and_resumes(tmp_path, capsys):
    assert cells_train.main(["--out", str(tmp_path), "--kimg", "0.008", *TINY_ARGS]) == 0
    snapshot = tmp_path / "snapshot.pt"
    assert (tmp_path / "cells.safetensors").exists() and list(tmp_path.glob("samples-*.png"))
    first = torch.load(snapshot, weights_only=True)
    assert (first["iteration"], first["nimg"]) == (2, 8)

    assert (
        cells_train.main(["--out", str(tmp_path), "--kimg", "0.016", "--resume", str(snapshot)])
        == 0
    )
    assert "resumed at iteration 2" in capsys.readouterr().out
    second = torch.load(snapshot, weights_only=True)
    assert (second["iteration"], second["nimg"]) == (4, 16)

    # The export loads through the project's checkpoint reader into the same generator.
    G = build_generator(*load_checkpoint(tmp_path / "cells.safetensors"))
    state = cells_state.load_snapshot(snapshot, torch.device("cpu"))
    z = torch.randn(2, 16)
    with torch.no_grad():
        ours = G.synthesis(G.mapping(z, None), noise_mode="const")
        theirs = state.G_ema.synthesis(state.G_ema.mapping(z, None), noise_mode="const")
    torch.testing.assert_close(ours, theirs)
    assert ours.shape == (2, 3, 16, 16)


def test_a_resumed_run_can_change_its_regularisers_and_keeps_the_change(tmp_path, capsys):
    assert cells_train.main(["--out", str(tmp_path), "--kimg", "0.008", *TINY_ARGS]) == 0
    snapshot = tmp_path / "snapshot.pt"
    before = cells_state.load_snapshot(snapshot, torch.device("cpu")).config
    resume = ["--out", str(tmp_path), "--kimg", "0.016", "--resume", str(snapshot)]

    changes = ["pl_weight=0", "r1-gamma=2", "lr=0.0005", "d_lr_ratio=3"]
    assert cells_train.main([*resume, *(arg for c in changes for arg in ("--change", c))]) == 0

    assert "pl_weight: " in capsys.readouterr().out
    resumed = cells_state.load_snapshot(snapshot, torch.device("cpu"))
    after = resumed.config
    assert (after.pl_weight, after.r1_gamma, after.lr) == (0.0, 2.0, 0.0005)
    changed = {"pl_weight": 0.0, "r1_gamma": 2.0, "lr": 0.0005, "d_lr_ratio": 3.0}
    assert asdict(after) == {**asdict(before), **changed}
    # The optimisers run at the new rates: G at lr, D at 3 lr with the lazy-R1 correction
    # (16 / 17); path length is off now, so G's rate has no correction.
    assert resumed.opt_G.param_groups[0]["lr"] == pytest.approx(0.0005)
    assert resumed.opt_D.param_groups[0]["lr"] == pytest.approx(3 * 0.0005 * 16 / 17)
    for bad in ("channel_base=64", "pl_weight", "pl_weight=-1", "pl_weight=nan", "lr=abc"):
        with pytest.raises(SystemExit) as exit_info:
            cells_train.main([*resume, "--change", bad])
        assert exit_info.value.code == 2 and "--change" in capsys.readouterr().err


def test_a_longer_ema_half_life_takes_effect_on_resume_once_the_rampup_is_off():
    """A half-life above the rampup's cap (5 % of the images seen) would change nothing."""
    cfg = cells_state.TrainConfig(**TINY)
    state = cells_state.build_state(cfg, torch.device("cpu"))
    state.nimg = 100_000  # the rampup caps the half-life at 5 kimg here
    with torch.no_grad():
        for p in state.G.parameters():
            p.fill_(1.0)

    def ema_step(**change):
        state.config = cells_state.TrainConfig(**{**asdict(cfg), **change})
        for p_ema in state.G_ema.parameters():
            p_ema.detach().zero_()
        cells_train._update_ema(state, batch=1000)
        return next(state.G_ema.parameters()).flatten()[0].item()

    capped = ema_step(ema_kimg=20.0)
    assert capped == pytest.approx(ema_step(ema_kimg=5.0))  # the cap wins
    assert ema_step(ema_kimg=20.0, ema_rampup=0.0) == pytest.approx(1 - 0.5 ** (1000 / 20_000))
    assert cells_train.parse_change("ema_rampup=0") == ("ema_rampup", 0.0)


def test_a_file_that_is_not_a_snapshot_is_one_error_line(tmp_path, capsys):
    from napari_freedrag.cli import main as cli_main

    text = tmp_path / "notes.pt"
    text.write_text("not a snapshot\n")
    dictionary = tmp_path / "weights.pt"
    torch.save({"G": {}}, dictionary)
    for flag, path in (
        ("--resume", text),
        ("--grow-from", text),
        ("--resume", dictionary),
        ("--resume", tmp_path / "missing.pt"),
    ):
        out = tmp_path / "out"
        extra = ["--channel-base", "4096"] if flag == "--grow-from" else []
        assert cli_main(["train-cells", "--out", str(out), flag, str(path), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "snapshot" in err[0], err
    assert text.read_text() == "not a snapshot\n"


def test_truncation_centre_is_the_mean_w():
    cfg = cells_state.TrainConfig(**TINY)
    G = cells_state.build_state(cfg, torch.device("cpu")).G_ema
    cells_state.set_w_avg(G, count=2048)
    with torch.no_grad():
        mean_w = G.mapping(torch.randn(2048, 16), None)[:, 0].mean(0)
    assert torch.allclose(G.mapping.w_avg, mean_w, atol=0.05 * mean_w.abs().max())


def test_divergence_stops_with_a_clear_message(tmp_path, monkeypatch):
    from napari_freedrag.errors import DivergedError

    cfg = cells_state.TrainConfig(**TINY)
    state = cells_state.build_state(cfg, torch.device("cpu"))
    monkeypatch.setattr(cells_train, "train_step", lambda *a: {"loss_G": float("nan")})
    with pytest.raises(DivergedError, match="--change lr="):
        cells_train.train(state, make_images(4, size=16), tmp_path, kimg=1, minutes=None)


def test_translation_moves_content_without_changing_it():
    torch.manual_seed(1)
    x = torch.full((16, 3, 32, 32), -0.9)
    x[:, :, 15:17, 15:17] = 1.0  # a bright 2x2 spot in the middle
    assert torch.equal(cells_train.translate(x, 0.0), x)
    moved = cells_train.translate(x, 0.125)
    spots = [torch.nonzero(img[0] > 0).float().mean(0) for img in moved]
    shifts = torch.stack(spots) - 15.5
    assert shifts.abs().max() <= 4 and shifts.abs().sum() > 0
    assert torch.equal((moved > 0).sum(dim=(1, 2, 3)), (x > 0).sum(dim=(1, 2, 3)))


def test_a_run_can_start_from_an_export_with_a_new_discriminator(tmp_path):
    """--init-from: G draws what the export draws (its feature scale undone), D starts anew
    and its warm-up trains D alone; the run then snapshots and exports as usual."""
    from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint

    assert cells_train.main(["--out", str(tmp_path / "a"), "--kimg", "0.008", *TINY_ARGS]) == 0
    export = tmp_path / "a" / "cells.safetensors"
    exported = build_generator(*load_checkpoint(export))
    cfg = cells_state.TrainConfig(**TINY, pl_weight=2.0)
    state = cells_state.state_from_export(cfg, export, torch.device("cpu"))
    z = torch.randn(2, 16)
    with torch.no_grad():
        theirs = exported.synthesis(exported.mapping(z, None), noise_mode="const")
        ours = state.G.synthesis(state.G.mapping(z, None), noise_mode="const")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    scale = json.loads(export.with_suffix(".json").read_text())["info"]["feature_scale"]
    assert scale != pytest.approx(1.0)
    torch.testing.assert_close(  # the export's activations are c times the trained ones
        state.G.synthesis.b4.const * scale, exported.synthesis.b4.const
    )

    g_before = [p.detach().clone() for p in state.G.parameters()]
    d_before = [p.detach().clone() for p in state.D.parameters()]
    cells_train.warm_up_discriminator(state, make_images(8, seed=0, size=16), iterations=2)
    assert all(torch.equal(a, b) for a, b in zip(g_before, state.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, state.D.parameters(), strict=True))
    assert (state.iteration, state.nimg) == (0, 0)

    args = ["--out", str(tmp_path / "b"), "--kimg", "0.008", "--init-from", str(export),
            "--d-warmup", "2", "--pl-weight", "2", *TINY_ARGS]  # fmt: skip
    assert cells_train.main(args) == 0
    resumed = torch.load(tmp_path / "b" / "snapshot.pt", weights_only=True)
    assert resumed["nimg"] == 8 and resumed["pl_mean"] > 0


def test_init_from_refuses_another_architecture(tmp_path):
    from napari_freedrag.errors import InputError

    assert cells_train.main(["--out", str(tmp_path), "--kimg", "0.004", *TINY_ARGS]) == 0
    other = cells_state.TrainConfig(**{**TINY, "w_dim": 32})
    with pytest.raises(InputError, match="another architecture"):
        cells_state.state_from_export(other, tmp_path / "cells.safetensors", torch.device("cpu"))


def test_a_compact_snapshot_resumes_without_the_optimiser_moments(tmp_path, capsys):
    compact = tmp_path / "kept" / "compact.pt"
    run = ["--out", str(tmp_path), "--kimg", "0.008", "--compact-out", str(compact)]
    assert cells_train.main([*run, *TINY_ARGS]) == 0
    full = torch.load(tmp_path / "snapshot.pt", weights_only=True)
    small = torch.load(compact, weights_only=True)
    assert "opt_G" in full and "opt_G" not in small
    assert compact.stat().st_size < (tmp_path / "snapshot.pt").stat().st_size
    for name in ("G", "D", "G_ema"):
        for key, tensor in full[name].items():
            torch.testing.assert_close(small[name][key], tensor)
    assert (
        cells_train.main(["--out", str(tmp_path), "--kimg", "0.016", "--resume", str(compact)]) == 0
    )
    assert "resumed at iteration 2" in capsys.readouterr().out
    assert torch.load(tmp_path / "snapshot.pt", weights_only=True)["nimg"] == 16


def test_an_export_from_an_older_rule_is_recalibrated_without_changing_its_image(
    tmp_path, monkeypatch
):
    """An export written under another calibration rule (here a 2-pixel shift) is written
    again with the current one: the same image, the feature scale of the current rule."""
    from napari_freedrag.training.cells import feature_scale, recalibrate

    monkeypatch.setattr(feature_scale, "SHIFT_FEATURE_PX", 2.0)
    assert cells_train.main(["--out", str(tmp_path / "a"), "--kimg", "0.008", *TINY_ARGS]) == 0
    monkeypatch.undo()
    old = tmp_path / "a" / "cells.safetensors"
    assert recalibrate.main([str(old), "--out", str(tmp_path / "new")]) == 0
    new = tmp_path / "new" / "cells.safetensors"
    before, after = (build_generator(*load_checkpoint(path)) for path in (old, new))
    z = torch.randn(2, 16)
    with torch.no_grad():
        images = [G.synthesis(G.mapping(z, None), noise_mode="const") for G in (before, after)]
    torch.testing.assert_close(images[1], images[0], rtol=1e-4, atol=1e-5)
    info = json.loads(new.with_suffix(".json").read_text())["info"]
    old_scale = json.loads(old.with_suffix(".json").read_text())["info"]["feature_scale"]
    assert info["calibration_shift_px"] == feature_scale.SHIFT_FEATURE_PX == 0.5
    assert info["recalibrated_from"]["feature_scale"] == old_scale
    assert feature_scale.shift_discrepancy(after) == pytest.approx(
        feature_scale.preset_l(after), rel=1e-3
    )
    assert info["feature_scale"] > old_scale  # half a pixel reaches l only with larger maps


def test_a_run_grown_wider_draws_and_judges_as_before_then_learns_on(tmp_path, capsys):
    assert cells_train.main(["--out", str(tmp_path / "narrow"), "--kimg", "0.008", *TINY_ARGS]) == 0
    snapshot = tmp_path / "narrow" / "snapshot.pt"
    narrow = cells_state.load_snapshot(snapshot, torch.device("cpu"))
    wide = cells_state.grow_snapshot(snapshot, 256, 32, torch.device("cpu"))
    assert wide.G.synthesis.b16.conv1.weight.shape[0] == 2 * 8  # 16 px: 8 -> 16 channels
    assert (wide.iteration, wide.nimg, wide.config.channel_base) == (2, 8, 256)

    z = torch.randn(3, 16)
    images = cells_train.images_to_tensor(make_images(4, seed=1, size=16))
    with torch.no_grad():
        for old, new in ((narrow.G, wide.G), (narrow.G_ema, wide.G_ema)):
            before = old.synthesis(old.mapping(z, None), noise_mode="const")
            after = new.synthesis(new.mapping(z, None), noise_mode="const")
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(wide.D(images), narrow.D(images), atol=1e-5, rtol=1e-4)

    out = tmp_path / "wide"
    grow = ["--out", str(out), "--kimg", "0.016", "--grow-from", str(snapshot)]
    assert cells_train.main([*grow, "--channel-base", "256", "--change", "pl_weight=0"]) == 0
    assert "resumed at iteration 2" in capsys.readouterr().out
    grown = cells_state.load_snapshot(out / "snapshot.pt", torch.device("cpu"))
    assert (grown.iteration, grown.config.channel_base, grown.config.pl_weight) == (4, 256, 0.0)
    new_rows = grown.G.synthesis.b16.conv1.weight[8:, :8]
    assert new_rows.abs().sum() > 0 and torch.isfinite(grown.G.synthesis.b16.conv1.weight).all()
    with pytest.raises(InputError, match="nothing to grow"):
        cells_state.grow_snapshot(snapshot, 128, 32, torch.device("cpu"))


def test_a_run_on_a_dataset_variant_is_measured_against_that_variant(tmp_path, capsys):
    from napari_freedrag.cli import main as cli_main
    from napari_freedrag.training.cells.dataset import MIN_SEMI_MINOR

    wide, original = tmp_path / "wide", tmp_path / "original"
    run = ["--kimg", "0.004", *TINY_ARGS]
    assert cells_train.main(["--out", str(wide), "--min-semi-minor", "5", *run]) == 0
    assert cells_train.main(["--out", str(original), *run]) == 0
    assert [p.name for p in wide.glob("dataset-*.npy")] == ["dataset-8-16px-seed0-minor5.npy"]
    wide_export, original_export = wide / "cells.safetensors", original / "cells.safetensors"
    assert cells_state.trained_min_semi_minor([wide_export]) == 5.0
    assert cells_state.trained_min_semi_minor([original_export]) == MIN_SEMI_MINOR
    with pytest.raises(InputError, match="different datasets"):
        cells_state.trained_min_semi_minor([wide_export, original_export])

    assert cli_main(["train-cells", "--out", str(tmp_path / "bad"), "--min-semi-minor", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "min_semi_minor" in err[-1] and not (tmp_path / "bad" / "config.json").exists()

    # A run on the original dataset fine-tuned on the variant is measured against it.
    resume = ["--out", str(original), "--resume", str(original / "snapshot.pt")]
    with pytest.raises(SystemExit):
        cells_train.main([*resume, "--kimg", "0.008", "--change", "min_semi_minor=9"])
    assert cells_state.trained_min_semi_minor([original_export]) == MIN_SEMI_MINOR
    assert cells_train.main([*resume, "--kimg", "0.008", "--change", "min_semi_minor=5"]) == 0
    assert cells_state.trained_min_semi_minor([original_export]) == 5.0
