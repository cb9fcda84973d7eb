"""FreeDrag's pieces on crafted inputs: line search A/B/C, the adaptive template weight."""

import numpy as np
import pytest
import torch

from napari_freedrag.engine.freedrag import LAMBDA_MAX, line_search, template_weight
from napari_freedrag.engine.patches import patch_features, patch_offsets

L, D = 0.3, 3.0
OFFSETS = patch_offsets(3, (1.0, 1.0))
BOUNDS = torch.tensor([31.0, 31.0], dtype=torch.float64)


def col_ramp(slope: float) -> torch.Tensor:
    """One channel equal to ``slope * col``: a patch's discrepancy is ``slope * |Δcol|``."""
    cols = torch.arange(32, dtype=torch.float32) * slope
    return cols.expand(32, 32)[None].clone()


def search(features, h, t, template_at, l_in, l_end, active=None):
    h = torch.tensor(h, dtype=torch.float64)
    t = torch.tensor(t, dtype=torch.float64)
    templates = patch_features(features, torch.tensor(template_at, dtype=torch.float64), OFFSETS)
    n = len(h)
    active = torch.ones(n, dtype=torch.bool) if active is None else torch.tensor(active)
    return line_search(
        features, h, t, templates,
        torch.tensor(l_in, dtype=torch.float64), torch.tensor(l_end, dtype=torch.float64),
        active, L, D, OFFSETS, BOUNDS,
    )  # fmt: skip


def test_template_weight_hits_the_specified_values():
    lam = template_weight(torch.tensor([0.2 * L, 0.8 * L, 0.0, 5.0]), L)
    assert lam[0].item() == pytest.approx(0.5)
    assert lam[1].item() == pytest.approx(0.1)
    assert lam[2].item() == pytest.approx(1 / (1 + 9 ** (-1 / 3)))
    assert lam[3].item() < 1e-6


def test_template_weight_never_exceeds_the_cap_and_is_one_for_done_points():
    l_end = torch.linspace(-1.0, 2.0, 301)
    assert template_weight(l_end, L).max().item() == pytest.approx(LAMBDA_MAX)
    assert pytest.approx(0.675, abs=1e-3) == LAMBDA_MAX
    done = torch.tensor([True, False])
    lam = template_weight(torch.tensor([0.9, 0.9]), L, done)
    assert lam[0] == 1.0 and lam[1] < 0.1


def test_case_a_moves_to_the_candidate_whose_score_is_closest_to_l():
    # slope 0.2: a candidate f * 3 px ahead scores 0.6 f, closest to l = 0.3 at f = 0.5
    new_h, decisions = search(col_ramp(0.2), [[10.0, 10.0]], [[10.0, 25.0]], [[10.0, 10.0]],
                              [0.0], [0.0])  # fmt: skip
    assert decisions == ["A"]
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 11.5]])


def test_case_a_reach_stops_at_the_target():
    new_h, _ = search(col_ramp(0.01), [[10.0, 10.0]], [[10.0, 11.0]], [[10.0, 10.0]], [0], [0])
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 11.0]])  # never past the target


def test_case_b_holds_a_point_whose_loss_is_falling():
    new_h, decisions = search(col_ramp(0.2), [[10.0, 10.0]], [[10.0, 25.0]], [[10.0, 10.0]],
                              [0.5], [0.2])  # fmt: skip
    assert decisions == ["B"]
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 10.0]])


def test_case_c_steps_back_and_takes_the_best_match():
    # content lags at col 8.8; the carrier at col 20 stepped back to 17 and searches
    # 6 px (2d) ahead from there: candidates 17.6 ... 23, the best match is 17.6
    new_h, decisions = search(col_ramp(0.2), [[10.0, 20.0]], [[10.0, 30.0]], [[10.0, 8.8]],
                              [0.2], [0.4])  # fmt: skip
    assert decisions == ["C"]
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 17.6]])
    # a template matched inside the search range is found exactly
    new_h, _ = search(col_ramp(0.2), [[10.0, 20.0]], [[10.0, 30.0]], [[10.0, 18.8]], [0.2], [0.4])
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 18.8]])


def test_case_c_at_the_border_is_clamped_into_the_image():
    new_h, decisions = search(col_ramp(0.2), [[10.0, 1.0]], [[10.0, 30.0]], [[10.0, 0.0]],
                              [0.2], [0.4])  # fmt: skip
    # stepping back 3 px from col 1 stops at col 0; the first candidate is 0.6 px on
    assert decisions == ["C"]
    np.testing.assert_allclose(new_h.numpy(), [[10.0, 0.6]])


def test_done_points_keep_their_carrier_and_report_no_decision():
    new_h, decisions = search(
        col_ramp(0.2), [[10.0, 10.0], [5.0, 5.0]], [[10.0, 25.0], [5.0, 20.0]],
        [[10.0, 10.0], [5.0, 5.0]], [0.0, 0.0], [0.0, 0.0], active=[True, False],
    )  # fmt: skip
    assert decisions == ["A", None]
    np.testing.assert_allclose(new_h[1].numpy(), [5.0, 5.0])


def test_points_are_searched_independently():
    features = col_ramp(0.2)
    both, decisions = search(
        features, [[10.0, 10.0], [20.0, 20.0]], [[10.0, 25.0], [20.0, 30.0]],
        [[10.0, 10.0], [20.0, 8.8]], [0.0, 0.2], [0.0, 0.4],
    )  # fmt: skip
    first, _ = search(features, [[10.0, 10.0]], [[10.0, 25.0]], [[10.0, 10.0]], [0.0], [0.0])
    second, _ = search(features, [[20.0, 20.0]], [[20.0, 30.0]], [[20.0, 8.8]], [0.2], [0.4])
    assert decisions == ["A", "C"]
    np.testing.assert_allclose(both.numpy(), torch.cat([first, second]).numpy())


def test_line_search_moves_along_the_segment_towards_the_target():
    new_h, _ = search(col_ramp(0.2), [[4.0, 4.0]], [[16.0, 20.0]], [[4.0, 4.0]], [0], [0])
    step = (new_h[0] - torch.tensor([4.0, 4.0])).numpy()
    direction = np.array([12.0, 16.0]) / 20.0
    assert np.linalg.norm(step) <= D + 1e-9
    assert abs(step[0] * direction[1] - step[1] * direction[0]) < 1e-9
    assert step @ direction > 0
