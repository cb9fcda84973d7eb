"""Property-based fuzzing of the weight loader: random pickles, tensor records and configs.

Whatever the file holds, loading it either works or raises a ModelError with a one-line
message; nothing in it runs (a canary function would write a marker file), and the
process never grows past the loading budget (set small here).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_freedrag._tests import hostile_files
from napari_freedrag._tests import nvidia_pickles as nv
from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.budget import ENV_VAR
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
from napari_freedrag.models.stylegan2.config import BOUNDS, normalise_config

BUDGET_MB = 64
MARKER = Path(tempfile.gettempdir()) / f"napari-freedrag-fuzz-canary-{os.getpid()}"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


def canary(*_args, **_kwargs):  # pragma: no cover - must never run
    MARKER.write_text("the loader executed code from a file")
    return {}


class _CanaryCall:
    def __reduce__(self):
        return (canary, ())


@contextlib.contextmanager
def small_budget():
    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(BUDGET_MB)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def load_expecting_model_error(path: Path) -> None:
    """Load ``path``; only success or a one-line ModelError are acceptable outcomes."""
    try:
        build_generator(*load_checkpoint(path))
    except ModelError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
    assert not MARKER.exists(), "a file executed code"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_GLOBALS = [
    b"os\nsystem\n",
    b"builtins\neval\n",
    b"builtins\ngetattr\n",
    b"napari_freedrag._tests.test_loader_fuzz\ncanary\n",
    b"torch._utils\n_rebuild_tensor_v2\n",
    b"torch.storage\n_load_from_bytes\n",
    b"collections\nOrderedDict\n",
    b"numpy\nndarray\n",
    b"numpy.core.multiarray\n_reconstruct\n",
    b"numpy\ndtype\n",
    b"_codecs\nencode\n",
    b"builtins\nbytes\n",
    b"torch\nFloatStorage\n",
    b"torch_utils.persistence\n_reconstruct_persistent_obj\n",
    b"dnnlib.tflib.network\nNetwork\n",
    b"copyreg\n_reconstructor\n",
]
_OPCODE = st.one_of(
    st.sampled_from([b"c" + name for name in _GLOBALS]),
    st.sampled_from([b"(", b")", b"]", b"}", b"t", b"R", b"b", b"s", b"a", b"e", b"u", b"0", b"2"]),
    st.sampled_from([b"N", b"\x88", b"\x89", b"\x85", b"\x86", b"\x87", b"\x81", b"\x94"]),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: b"J" + n.to_bytes(4, "little", signed=True)),
    st.integers(0, 255).map(lambda n: b"K" + bytes([n])),
    st.binary(max_size=40).map(lambda b: b"C" + bytes([len(b)]) + b),
    st.text("abcdefghijklmnop_.", max_size=20).map(
        lambda s: b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()
    ),
    st.integers(0, 8).map(lambda n: b"h" + bytes([n])),
    st.integers(0, 8).map(lambda n: b"q" + bytes([n])),
    # memo slots and lengths a file declares: the loader must not reserve them up front
    st.integers(0, 2**32 - 1).map(lambda n: b"r" + n.to_bytes(4, "little")),
    st.tuples(st.sampled_from([b"\x8d", b"\x8e", b"\x95", b"\x96"]), st.integers(0, 2**40)).map(
        lambda pair: pair[0] + pair[1].to_bytes(8, "little")
    ),
)


@FUZZ
@given(st.lists(_OPCODE, max_size=40), st.sampled_from([2, 3, 4, 5]))
def test_random_pickle_opcode_streams_never_run_code_or_crash(opcodes, protocol):
    with tempfile.TemporaryDirectory() as folder, small_budget():
        path = Path(folder) / "random.pkl"
        path.write_bytes(b"\x80" + bytes([protocol]) + b"".join(opcodes) + b".")
        before = peak_rss_mib()
        load_expecting_model_error(path)
    assert peak_rss_mib() - before < BUDGET_MB + 64


_SIZE = st.lists(st.integers(0, 2**40), min_size=0, max_size=4)


@FUZZ
@given(
    numel=st.integers(0, 64),
    declared=st.one_of(st.integers(0, 64), st.integers(0, 2**45)),
    size=_SIZE,
    stride=_SIZE,
    offset=st.integers(0, 2**40),
    copies=st.integers(1, 30),
    storage=st.sampled_from([torch.FloatStorage, torch.HalfStorage, torch.DoubleStorage]),
)
def test_random_tensor_records_stay_within_the_budget(
    numel, declared, size, stride, offset, copies, storage
):
    element = {torch.FloatStorage: 4, torch.HalfStorage: 2, torch.DoubleStorage: 8}[storage]
    blob = hostile_files.legacy_blob(declared, b"\0" * (numel * element), storage)
    record = nv.Reduce(
        torch._utils._rebuild_tensor_v2,
        nv.Reduce(torch.storage._load_from_bytes, blob),
        offset,
        tuple(size),
        tuple(stride),
        False,
        OrderedDict(),
    )
    parameters = {f"w{i}": record for i in range(copies)}
    parameters["evil"] = _CanaryCall()
    before = peak_rss_mib()
    with tempfile.TemporaryDirectory() as folder, small_budget():
        path = Path(folder) / "records.pkl"
        try:
            hostile_files._generator_pickle(path, parameters)
        except (pickle.PicklingError, AttributeError, OverflowError):
            return  # the record itself cannot be written; nothing to load
        load_expecting_model_error(path)
    assert peak_rss_mib() - before < BUDGET_MB + 64


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**62), 2**62),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = [*BOUNDS, "img_resolution", "mapping_kwargs", "synthesis_kwargs", "conv_clamp", "config"]


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(_KEYS),
        st.one_of(_JSON, st.integers(0, 4096), st.sampled_from([4, 8, 64, 2048, 4096])),
        max_size=10,
    )
)
def test_random_configs_are_bounded_or_refused(changes):
    raw = {**hostile_files.TINY_CONFIG, **changes}
    try:
        config = normalise_config(json.loads(json.dumps(raw, allow_nan=True)), "fuzz.json")
    except ModelError as exc:
        assert str(exc).startswith("fuzz.json: ")
        return
    for options in (config, config["mapping_kwargs"]):
        for key, (low, high, optional) in BOUNDS.items():
            if key in options and not (optional and options[key] is None):
                assert low <= options[key] <= high
    assert 4 <= config["img_resolution"] <= 2048
    before = peak_rss_mib()
    try:
        build_generator(config, {})
    except ModelError as exc:
        assert str(exc).strip()
    assert peak_rss_mib() - before < BUDGET_MB + 64
