"""The adapter from llama.cpp's tensor names to tap stages (qvlearn.tools.llamacpp), without llama.cpp.

Each test writes what the conformance harness would dump for one encode, in ggml's layouts (the image as
``inp_raw [1, 3, H, W]``, the M-RoPE positions as ``[4 * N]``, in window order for Qwen2.5-VL, the output with the
DeepStack features concatenated), from qvlearn's own trace of a tiny tower, and checks that the adapter gives back
every stage of that trace. The layout conversions are the adapter's whole job, so each has a test that fails when it
is left out.
"""

import numpy as np
import pytest

import qvlearn
from qvlearn.engine.window_index import patch_permutation
from qvlearn.errors import TapError
from qvlearn.preprocessing import patchify
from qvlearn.tools.llamacpp import LLAMACPP_STAGES, read_dump, taps_from_llamacpp
from qvlearn.tools.taps import compare_taps, stage_names

TOWERS = {"qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl",
          "qwen3_5": "tiny-qwen3.5"}
NAMES = {"norm1": "ln1", "attn.q": "Qcur_rope", "attn.k": "Kcur_rope", "attn": "attn_out", "residual1": "ffn_inp",
         "norm2": "ffn_inp_normed", "mlp": "ffn_out", "mlp.gate": "ffn_gate_b", "mlp.up": "ffn_up_b",
         "mlp.fc1": "ffn_up_b"}


def _encode(checkpoint, family, height=112, width=168):
    path = checkpoint(TOWERS[family], dtype="float32")
    encoder = qvlearn.load_encoder(path)
    patch = 16 if family.startswith("qwen3") else 14
    image = np.random.default_rng(0).standard_normal((3, height * patch // 14, width * patch // 14)).astype(
        np.float32)
    pixel_values, grid = patchify(np.broadcast_to(image, (2, *image.shape)), patch)
    trace = encoder.trace(pixel_values, [grid], to_numpy=True, stages=["*"])
    return encoder, image, trace


def _dump(encoder, image, trace, family):
    """What harness.cpp writes for this encode, named and laid out as llama.cpp has it."""
    cfg = encoder.config
    n = trace["pixel_values"].shape[0]
    rows = np.arange(n)
    if "window_index" in trace:  # clip.cpp writes a windowed tower's positions in window order
        rows = patch_permutation(trace["window_index"], 2)
    pos = trace["position_ids"][rows]
    arrays = {"inp_raw": image[None], "positions": np.concatenate([pos[:, 0], pos[:, 1], pos[:, 0], pos[:, 1]])
              .astype(np.int32)}
    if "window_index" in trace:
        arrays["inv_window_idx"] = trace["window_index"].astype(np.int32)
    if "pos_embeds" in trace:  # the third generation: the patch embedding's bias is a named node
        arrays["patch_bias"] = trace["patch_embeds"]
        arrays["inp_pos_emb"] = trace["patch_embeds"] + trace["pos_embeds"]
        arrays["inp_pos_emb.b"] = trace["pos_embeds"]
    act = {"qwen2_vl": "ffn_gelu_quick", "qwen2_5_vl": "ffn_swiglu"}.get(family, "ffn_gelu")
    for i in range(cfg.depth):
        for stage, name in NAMES.items():
            if f"blocks.{i}.{stage}" in trace:
                arrays[f"{name}-{i}"] = trace[f"blocks.{i}.{stage}"]
        arrays[f"{act}-{i}"] = trace[f"blocks.{i}.mlp.act"]
        arrays[f"layer_out-{i}"] = trace[f"blocks.{i}"]
    norm = "merger.norm" if "merger.norm" in trace else "merger.ln_q"
    arrays[f"norm_{'b' if cfg.kind.norm == 'layer' else 'w'}-{cfg.depth}"] = trace[norm]
    deepstack = [trace[f"deepstack.{j}"] for j in range(len(cfg.deepstack_visual_indexes))]
    return arrays, np.concatenate([trace["embeddings"], *deepstack], axis=1)


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_every_stage_of_a_trace_comes_back(checkpoint, family):
    encoder, image, trace = _encode(checkpoint, family)
    arrays, out = _dump(encoder, image, trace, family)
    cfg = encoder.config
    stages = taps_from_llamacpp(arrays, family, embeddings=out, out_width=cfg.out_hidden_size,
                                n_deepstack=len(cfg.deepstack_visual_indexes))
    rows = compare_taps(stages, trace, rtol=1e-12, scale_tol=1e-12)  # the same numbers, moved
    assert [r.name for r in rows if not r.ok] == []
    missing = {"cos", "sin", "cu_seqlens", "cu_window_seqlens", "merger"}  # not in llama.cpp's graph as tensors
    if "pos_embeds" not in trace:
        missing.add("patch_embeds")  # no named node before the first norm in models/qwen2vl.cpp
    assert set(stage_names(cfg)) - set(stages) <= missing


def test_window_order_positions_are_put_back_in_natural_order(checkpoint):
    encoder, image, trace = _encode(checkpoint, "qwen2_5_vl", 224, 224)  # several windows: the orders differ
    arrays, out = _dump(encoder, image, trace, "qwen2_5_vl")
    stages = taps_from_llamacpp(arrays, "qwen2_5_vl", embeddings=out, out_width=encoder.config.out_hidden_size)
    np.testing.assert_array_equal(stages["position_ids"], trace["position_ids"])
    raw = np.asarray(arrays["positions"]).reshape(4, -1)[:2].T
    assert not np.array_equal(raw, trace["position_ids"])  # as llama.cpp writes them they would not compare


def test_deepstack_features_are_the_output_columns_in_order(checkpoint):
    encoder, image, trace = _encode(checkpoint, "qwen3_vl")
    arrays, out = _dump(encoder, image, trace, "qwen3_vl")
    width = encoder.config.out_hidden_size
    stages = taps_from_llamacpp(arrays, "qwen3_vl", embeddings=out, out_width=width, n_deepstack=2)
    np.testing.assert_array_equal(stages["deepstack.1"], out[:, 2 * width:])
    assert not np.array_equal(stages["deepstack.0"], stages["deepstack.1"])
    with pytest.raises(TapError, match="DeepStack"):  # the width alone cannot tell how many features there are
        taps_from_llamacpp(arrays, "qwen3_vl", embeddings=out, out_width=width)


def test_pos_embeds_falls_back_to_the_difference(checkpoint):
    encoder, image, trace = _encode(checkpoint, "qwen3_5")
    arrays, out = _dump(encoder, image, trace, "qwen3_5")
    del arrays["inp_pos_emb.b"]
    stages = taps_from_llamacpp(arrays, "qwen3_5", embeddings=out, out_width=encoder.config.out_hidden_size)
    np.testing.assert_allclose(stages["pos_embeds"], trace["pos_embeds"], atol=1e-6)


def test_a_dump_without_the_inputs_is_refused(checkpoint):
    encoder, image, trace = _encode(checkpoint, "qwen2_vl")
    arrays, out = _dump(encoder, image, trace, "qwen2_vl")
    del arrays["inp_raw"]
    with pytest.raises(TapError, match="inp_raw"):
        taps_from_llamacpp(arrays, "qwen2_vl", embeddings=out, out_width=encoder.config.out_hidden_size)


def test_read_dump(tmp_path):
    with pytest.raises(TapError, match="--dump"):
        read_dump(tmp_path)
    np.save(tmp_path / "ln1-0.npy", np.ones((4, 2), np.float32))
    assert list(read_dump(tmp_path)) == ["ln1-0"]


def test_the_table_names_every_stage_the_adapter_writes():
    stages = {stage for _, stage, _, _ in LLAMACPP_STAGES}
    for name in ("pixel_values", "position_ids", "window_index", "blocks.{i}.norm1", "blocks.{i}.mlp.act",
                 "blocks.{i}", "embeddings", "deepstack.{j}"):
        assert name in stages
