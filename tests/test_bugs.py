"""The bug zoo: compare names the stage where each injected bug lives (qvlearn.bugs)."""

from __future__ import annotations

import numpy as np
import pytest

import qvlearn
from qvlearn import bugs
from qvlearn.taps import compare_taps


@pytest.fixture(scope="module")
def snapshots(checkpoint):
    return {"qwen2_vl": checkpoint("tiny-qwen2-vl"), "qwen2_5_vl": checkpoint("tiny-qwen2.5-vl")}


def test_the_zoo_is_large_and_cited():
    assert len(bugs.BUGS) >= 15
    public = [b for b in bugs.BUGS.values() if "#" in b.reported]
    assert len(public) + len(bugs.BRIDGE_BUGS) >= 15, [b.name for b in public]
    for bug in bugs.BUGS.values():
        assert bug.reported and bug.symptom and bug.patches, bug.name


@pytest.mark.parametrize("name", list(bugs.BUGS))
def test_compare_names_the_stage_where_the_bug_lives(name, snapshots):
    bug = bugs.BUGS[name]
    inputs = bugs.sample_inputs(bug.needs)
    golden = bugs.traced(None, snapshots[bug.family], inputs)
    buggy = bugs.traced(name, snapshots[bug.family], inputs)
    rows = compare_taps(buggy, golden)                     # compare's defaults, as a porter runs it
    failed = [r.name for r in rows if not r.ok]
    assert failed and failed[0] == bug.stage, (name, failed[:3])


@pytest.mark.parametrize("name", ["rope-interleaved", "rotate-half-sign", "qkv-contiguous"])
def test_rotation_bugs_reach_the_untapped_blocks(snapshots, mixed_batch, name):
    """The blocks without taps rotate q and k as complex pairs; a bug of the halves form must reach them too."""
    encoder = qvlearn.load_encoder(snapshots["qwen2_5_vl"])
    before = encoder(*mixed_batch)
    with bugs.inject(name):
        during = encoder(*mixed_batch)
    assert np.abs(during - before).max() > 0.1 * np.abs(before).max()


def test_injection_ends_with_the_block(snapshots, mixed_batch):
    encoder = qvlearn.load_encoder(snapshots["qwen2_5_vl"])
    before = encoder(*mixed_batch)
    with bugs.inject("rope-interleaved"):
        during = encoder(*mixed_batch)
    after = encoder(*mixed_batch)
    assert np.abs(during - before).max() > 0.1 * np.abs(before).max()
    np.testing.assert_array_equal(after, before)
    with pytest.raises(qvlearn.InputError, match="no bug named 'rope-wrong'"):
        with bugs.inject("rope-wrong"):
            pass
