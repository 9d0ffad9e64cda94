"""The bug zoo: compare names the stage where each injected bug lives (qvlearn.tools.bugs)."""

from __future__ import annotations

import numpy as np
import pytest

import qvlearn
import qvlearn.engine.kernels
from qvlearn.tools import bugs
from qvlearn.tools.taps import compare_taps


@pytest.fixture(scope="module")
def snapshots(checkpoint):
    return {"qwen2_vl": checkpoint("tiny-qwen2-vl"), "qwen2_5_vl": checkpoint("tiny-qwen2.5-vl"),
            "qwen3_vl": checkpoint("tiny-qwen3-vl"), "qwen3_5": checkpoint("tiny-qwen3.5")}


def test_the_third_generation_has_its_own_bugs():
    third = [b for b in bugs.BUGS.values() if b.family in ("qwen3_vl", "qwen3_5")]
    assert len(third) >= 8, [b.name for b in third]
    assert {b.stage for b in third} >= {"pos_embeds", "deepstack.0", "blocks.0.attn.q", "blocks.0.norm1"}


def test_the_zoo_is_large_and_cited():
    assert len(bugs.BUGS) >= 15
    public = [b for b in bugs.BUGS.values() if "#" in b.reported]
    assert len(public) + len(bugs.BRIDGE_BUGS) >= 15, [b.name for b in public]
    for bug in bugs.BUGS.values():
        assert bug.reported and bug.symptom and (bug.kernels or bug.steps), bug.name
        assert not (bug.kernels and bug.steps), bug.name  # a bug of the encoder or of the preprocessing


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
    """The blocks without taps rotate q and k as complex pairs on NumPy; a bug of the halves form must reach
    them too."""
    encoder = qvlearn.load_encoder(snapshots["qwen2_5_vl"])
    before = encoder(*mixed_batch)
    during = encoder.with_kernels(bugs.kernels(name))(*mixed_batch)
    assert np.abs(during - before).max() > 0.1 * np.abs(before).max()


def test_a_bug_is_a_table_of_its_own(snapshots, mixed_batch):
    encoder = qvlearn.load_encoder(snapshots["qwen2_5_vl"])
    before = encoder(*mixed_batch)
    buggy = encoder.with_kernels(bugs.kernels("rope-interleaved"))
    during = buggy(*mixed_batch)
    assert np.abs(during - before).max() > 0.1 * np.abs(before).max()
    np.testing.assert_array_equal(encoder(*mixed_batch), before)  # the encoder it came from is untouched
    assert bugs.kernels(None) is qvlearn.engine.kernels.KERNELS
    assert bugs.steps("rope-interleaved") == qvlearn.preprocessing.STEPS  # a bug of the encoder, not of the pixels
    with pytest.raises(qvlearn.InputError, match="no bug named 'rope-wrong'"):
        bugs.kernels("rope-wrong")
