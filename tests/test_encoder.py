"""The whole tower against transformers 5.23 (fp32, eager), stage by stage and block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.tools.reference import reference_tower, reference_trace
from qvlearn.tools.taps import INTEGER_STAGES, compare_taps

TOL = 1e-5  # max |ours - ref| / max |ref|


def compare_all_stages(path, pixel_values, grid_thw, backend="numpy"):
    """Every stage transformers reports, through the same comparison the `compare` tool uses:
    integer stages identical, float stages within TOL."""
    encoder = qvlearn.load_encoder(path, backend=backend)
    ours = encoder.trace(pixel_values, grid_thw, to_numpy=True)
    ref = reference_trace(reference_tower(path), pixel_values, grid_thw)
    rows = compare_taps(ours, ref, rtol=TOL, stages=list(ref))
    bad = [f"{r.name}: rel {r.rel:.2e} {r.note}" for r in rows if not r.ok]
    assert not bad, bad
    errors = {r.name: r.rel for r in rows if r.name not in INTEGER_STAGES}
    assert all(ours[name].dtype == np.float32 for name in errors)
    return errors, ours


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_tiny_towers_match_transformers(checkpoint, mixed_batch, preset):
    pixel_values, grid_thw = mixed_batch
    assert grid_thw.tolist() == [[1, 10, 16], [1, 16, 16], [2, 6, 10]]
    errors, ours = compare_all_stages(checkpoint(preset), pixel_values, grid_thw)
    assert ours["embeddings"].shape == (int(grid_thw.prod(1).sum()) // 4, 96)
    depth = qvlearn.read_config(checkpoint(preset)).depth
    assert all(f"blocks.{i}" in errors for i in range(depth))


@pytest.mark.parametrize("preset, overrides", [
    ("qwen2-vl-2b", dict(depth=2)),
    ("qwen2.5-vl-7b", dict(depth=3, fullatt_block_indexes=[1])),
    ("qwen2.5-vl-72b", dict(depth=2, fullatt_block_indexes=[0])),  # the 3456-wide MLP
])
def test_full_width_towers_match_transformers(checkpoint, mixed_batch, preset, overrides):
    """1280 wide, 16 heads of 80, the released merger widths, a few blocks incl. a full-attention one."""
    pixel_values, grid_thw = mixed_batch
    cfg = qvlearn.read_config(checkpoint(preset, **overrides))
    assert (cfg.width, cfg.num_heads, cfg.head_dim) == (1280, 16, 80)
    compare_all_stages(checkpoint(preset, **overrides), pixel_values, grid_thw)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_weights_upcast_exactly_as_torch(checkpoint, dtype):
    from safetensors.torch import load_file

    path = checkpoint("tiny-qwen2.5-vl", dtype=dtype)
    ours = qvlearn.load_weights(path, qvlearn.read_config(path))
    theirs = load_file(path / "model.safetensors")
    assert {f"visual.{k}" for k in ours} == set(theirs)
    for key, tensor in theirs.items():
        assert str(tensor.dtype) == f"torch.{dtype}"
        mine = ours[key[len("visual."):]]
        assert mine.dtype == np.float32
        np.testing.assert_array_equal(mine.view(np.uint32), tensor.float().numpy().view(np.uint32), err_msg=key)


def test_sharded_checkpoint_loads_the_same(tmp_path, checkpoint):
    single = qvlearn.load_encoder(checkpoint("tiny-qwen2-vl"))
    sharded_dir = qvlearn.save_random_checkpoint(tmp_path / "sharded", "tiny-qwen2-vl", max_shard_bytes=40_000)
    assert len(list(sharded_dir.glob("model-*-of-*.safetensors"))) > 2
    assert (sharded_dir / "model.safetensors.index.json").exists()
    sharded = qvlearn.load_encoder(sharded_dir)
    for a, b in zip(single.blocks, sharded.blocks):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_output_order_matches_natural_order(checkpoint):
    """2.5-VL: the output is in natural order: encoding two images together equals encoding each alone."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (90, 300, 3), dtype=np.uint8)
    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    both = enc(*qvlearn.preprocess(images=[a, b]))
    alone = np.concatenate([enc(*qvlearn.preprocess(images=[a])), enc(*qvlearn.preprocess(images=[b]))])
    np.testing.assert_allclose(both, alone, rtol=0, atol=1e-5 * np.abs(alone).max())


def test_chunked_attention_equals_unchunked(checkpoint, mixed_batch):
    """Query/segment chunking changes memory, not results."""
    pixel_values, grid_thw = mixed_batch
    for preset in ("tiny-qwen2-vl", "tiny-qwen2.5-vl"):
        path = checkpoint(preset)
        wide = qvlearn.load_encoder(path)(pixel_values, grid_thw)
        narrow = qvlearn.load_encoder(path, chunk_bytes=4096)(pixel_values, grid_thw)
        np.testing.assert_allclose(narrow, wide, rtol=0, atol=1e-6 * np.abs(wide).max())


@pytest.mark.parametrize("n, chunk_bytes, limit", [
    pytest.param(16384, 64 * 2**20, 2**30, marks=pytest.mark.slow),  # a 1792x1792 image: 17 GB of naive scores
    (4096, 4 * 2**20, 64 * 2**20),                                   # the same bound, 16x less work: 1 GiB naive
])
def test_attention_memory_is_bounded(n, chunk_bytes, limit):
    """One segment of n patches through a 16-head attention: the naive [16, N, N] float32 scores would take
    64 n^2 bytes; the chunked kernel's NumPy allocations stay a small multiple of chunk_bytes."""
    import tracemalloc

    from qvlearn.engine.attention import SegmentPlan, segment_attention

    heads, d = 16, 16
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((n, heads, d), dtype=np.float32) for _ in range(3))
    plan = SegmentPlan.build(np.array([0, n]), np.asarray)
    tracemalloc.start()
    out = segment_attention(q, k, v, plan, d ** -0.5, chunk_bytes)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == (n, heads, d)
    assert peak < limit < 64 * n * n / 8, f"peak {peak / 2**20:.0f} MiB"
    # spot-check a few query rows against dense attention on the same data
    rows = [0, n // 4 + 1, n - 1]
    s = np.einsum("qhd,khd->hqk", q[rows], k) * d ** -0.5
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out[rows], np.einsum("hqk,khd->qhd", p, v), atol=1e-5)


def test_inputs_on_the_wrong_side_are_reported(checkpoint, mixed_batch):
    pixel_values, grid_thw = mixed_batch
    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2-vl"))
    with pytest.raises(qvlearn.InputError, match=r"do not fit grid_thw"):
        enc(pixel_values[:-4], grid_thw)
    with pytest.raises(qvlearn.InputError, match=r"do not fit grid_thw"):
        enc(pixel_values[:, :1000], grid_thw)
    with pytest.raises(qvlearn.InputError, match=r"do not fit grid_thw"):
        enc(pixel_values, grid_thw[:2])
    with pytest.raises(qvlearn.InputError, match="multiples of spatial_merge_size"):
        enc(pixel_values[:15 * 16], [[1, 15, 16]])
    with pytest.raises(qvlearn.InputError, match="positive"):
        enc(pixel_values, [[1, 10, 16], [0, 16, 16], [2, 6, 10]])
    bad = pixel_values.copy()
    bad[3, 7] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(qvlearn.InputError, match="NaN or Inf in 2 of"):
        enc(bad, grid_thw)
    # transformers' processor returns torch tensors: they are accepted as host data
    out = enc(torch.from_numpy(pixel_values), torch.from_numpy(grid_thw))
    assert out.shape[0] == int(grid_thw.prod(1).sum()) // 4


def test_bf16_resident_weights_give_identical_results(checkpoint, mixed_batch):
    pixel_values, grid_thw = mixed_batch
    for preset in ("tiny-qwen2-vl", "tiny-qwen2.5-vl"):
        path = checkpoint(preset)  # bf16 on disk: widening is exact
        f32 = qvlearn.load_encoder(path)
        bf16 = qvlearn.load_encoder(path, weights_dtype="bfloat16")
        np.testing.assert_array_equal(bf16(pixel_values, grid_thw), f32(pixel_values, grid_thw))
        assert bf16.weight_bytes() < 0.6 * f32.weight_bytes()
    with pytest.raises(qvlearn.ConfigError, match="weights_dtype"):
        qvlearn.load_encoder(path, weights_dtype="int8")
    with pytest.raises(qvlearn.BackendError, match="numpy or cupy"):
        qvlearn.load_encoder(path, backend="strict", weights_dtype="bfloat16")
