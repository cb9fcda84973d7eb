"""Reports name their parent edit by id with a short summary: a chain of any length keeps
every report (and every state's provenance) the same size."""

import json

import numpy as np
import pytest

from napari_freedrag.engine.run import drag
from napari_freedrag.models.analytic import AnalyticBackend


def chain(gen, start, length, handle=(16.0, 16.0)):
    """``length`` one-step edits, each continuing from the last; their results."""
    results, state, point = [], start, np.array([handle])
    for i in range(length):
        target = point + [0.0, 1.0 if i % 2 == 0 else -1.0]
        result = drag(gen, state, point, target, max_steps=1, preview_every=0)
        results.append(result)
        state, point = result.state, result.points
    return results


def size(value) -> int:
    return len(json.dumps(value))


def test_a_chain_of_fifty_edits_keeps_the_report_size_bounded():
    gen = AnalyticBackend()
    results = chain(gen, gen.from_centres([[16, 16], [48, 44], [16, 48]]), 50)
    sizes = [size({**r.report, "trace": []}) for r in results]
    infos = [size(r.state.info) for r in results]
    assert max(sizes[2:]) - min(sizes[2:]) < 200 and max(infos[2:]) == min(infos[2:])
    ids = [r.state.info["edit"] for r in results]
    assert len(set(ids)) == 50  # every edit has its own id
    for parent, child in zip(results, results[1:], strict=False):
        assert child.state.info["parent"]["edit"] == parent.state.info["edit"]
        assert child.report["start"]["edit"] == parent.report["edit"]
        assert isinstance(child.report["start"]["parent"], dict)  # one level, then an id
        assert not isinstance(child.report["start"]["parent"].get("parent"), dict)


def test_stylegan2_edits_refer_to_their_parent_by_id():
    from napari_freedrag.testing import random_backend

    gen = random_backend(name="tiny")
    results = chain(gen, gen.sample(0), 8, handle=(16.0, 12.0))
    infos = [size(r.state.info) for r in results]
    # the backend nests its whole start info as the parent; the engine keeps a reference
    assert max(infos[2:]) == min(infos[2:])
    assert results[-1].state.info["parent"]["edit"] == results[-2].state.info["edit"]
    assert (
        results[0].report["start"]["seed"] == 0 and results[-1].report["start"]["source"] == "drag"
    )


@pytest.mark.parametrize("method", ["freedrag", "draggan"])
def test_the_same_instruction_gets_the_same_id(method):
    gen = AnalyticBackend()
    start = gen.from_centres([[16, 16], [48, 44], [16, 48]])
    first = drag(gen, start, [[16, 16]], [[16, 20]], method=method, max_steps=3)
    again = drag(gen, start, [[16, 16]], [[16, 20]], method=method, max_steps=3)
    other = drag(gen, start, [[16, 16]], [[16, 21]], method=method, max_steps=3)
    assert first.state.info["edit"] == again.state.info["edit"] != other.state.info["edit"]
