"""The rest of the lineage: Qwen3.5 at every size, Qwen4-Exp and the Omni towers, against transformers' own classes.

Every stage of qvlearn's trace (and the spec's forward) is held to transformers' towers for these model types on
random grids, two images and a video, in float32 and bf16, single-file and sharded, in both key layouts each model
uses; the Omni bridge (M-RoPE positions, DeepStack injection) is held to their thinkers' own code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn import spec
from qvlearn.config import PRESET_NOTES, PRESETS, preset_config, preset_config_dict, vision_config_from_dict
from qvlearn.families import FAMILIES
from qvlearn.tools.reference import reference_tower, reference_trace

NEW_TINY = ["tiny-qwen4-exp", "tiny-qwen2.5-omni", "tiny-qwen3-omni"]
RTOL = 1e-5


def _batch(config, seed=0):
    """Three grids of odd sizes: an image, a 2-frame-pair video, a small image (random pixel rows)."""
    grid = np.array([[1, 6, 10], [2, 8, 4], [1, 4, 4]])
    rows = int(grid.prod(axis=1).sum())
    return np.random.default_rng(seed).standard_normal((rows, config.patch_dim)).astype(np.float32), grid


def _worst(ours: dict, ref: dict) -> tuple[float, str]:
    worst = (0.0, "")
    for name, value in ref.items():
        assert name in ours, f"qvlearn does not report {name}"
        a, b = np.asarray(ours[name]), np.asarray(value)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if b.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=name)
            continue
        err = float(np.abs(a.astype(np.float64) - b).max() / (np.abs(b).max() or 1.0))
        worst = max(worst, (err, name))
    return worst


@pytest.mark.parametrize("preset", NEW_TINY)
@pytest.mark.parametrize("dtype, shard", [("float32", None), ("bfloat16", 20_000)])
def test_every_stage_matches_transformers(checkpoint, mixed_batch_for, preset, dtype, shard):
    path = checkpoint(preset, dtype=dtype)
    if shard is not None:  # the same weights, sharded with an index, as large downloads are
        cfg = preset_config(preset)
        path = qvlearn.weights.save_checkpoint(path.parent / f"{path.name}-sharded", preset_config_dict(preset),
                                               qvlearn.load_weights(path, cfg), dtype=dtype, max_shard_bytes=shard)
        assert (path / "model.safetensors.index.json").exists()
    encoder = qvlearn.load_encoder(path)
    model = reference_tower(path)
    for pixel_values, grid in (_batch(encoder.config), mixed_batch_for(encoder.config)):  # random grids; real images
        ours = encoder.trace(pixel_values, grid, to_numpy=True, stages="*")
        ref = reference_trace(model, pixel_values, grid, stages="*")
        err, name = _worst(ours, ref)
        assert err < RTOL, (preset, name, err)
        embeddings = spec.forward(encoder.config, qvlearn.load_weights(path, encoder.config), pixel_values, grid)
        assert float(np.abs(embeddings - ref["embeddings"]).max() / np.abs(ref["embeddings"]).max()) < RTOL


@pytest.mark.parametrize("preset, overrides", [
    ("qwen2.5-omni-7b", dict(depth=2)),                             # windows, full block 1 (the last, as released)
    ("qwen3-omni-30b-a3b", dict(depth=2, deepstack_visual_indexes=[0])),
    ("qwen3.5-0.8b", dict(depth=2)),
    ("qwen3.8-flash-next", dict(depth=1)),
])
def test_released_widths_cut_in_depth(checkpoint, preset, overrides):
    path = checkpoint(preset, dtype="bfloat16", **overrides)
    encoder = qvlearn.load_encoder(path)
    pixel_values, grid = _batch(encoder.config, seed=1)
    ours = encoder.trace(pixel_values, grid, to_numpy=True, stages="*")
    ref = reference_trace(reference_tower(path), pixel_values, grid, stages="*")
    err, name = _worst(ours, ref)
    assert err < RTOL, (preset, name, err)


def test_omni_snapshots_in_both_key_layouts(tmp_path, checkpoint):
    """The full Omni model keeps thinker.visual.* under thinker_config.vision_config; its thinker saved alone keeps
    visual.* under a top-level vision_config (model_type *_thinker). Both open and give the same tower."""
    for preset in ("tiny-qwen2.5-omni", "tiny-qwen3-omni"):
        full = checkpoint(preset, dtype="float32")
        config = json.loads((full / "config.json").read_text())
        kind = FAMILIES[vision_config_from_dict(config).family]
        assert kind.container == "thinker_config" and "vision_config" in config["thinker_config"]
        with open(full / "model.safetensors", "rb") as f:
            assert b"thinker.visual.blocks.0" in f.read(4096)
        thinker = dict(config["thinker_config"], architectures=[kind.architectures[config["model_type"] + "_thinker"]])
        alone = qvlearn.weights.save_checkpoint(tmp_path / preset, thinker,
                                                qvlearn.load_weights(full, preset_config(preset)), dtype="float32",
                                                prefix="visual.")
        a, b = qvlearn.load_encoder(full), qvlearn.load_encoder(alone)
        assert a.config == b.config
        pixel_values, grid = _batch(a.config)
        np.testing.assert_array_equal(a(pixel_values, grid), b(pixel_values, grid))


def _transformers_omni(kind_name, root):
    """A tiny Omni model built and saved by transformers itself (save_pretrained: the layout of a real download)."""
    import transformers as T

    text = dict(hidden_size=96, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=151936,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 7]})
    audio = dict(encoder_layers=1, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=96,
                 num_mel_bins=16)
    if kind_name == "qwen2_5_omni":
        vision = dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96,
                      fullatt_block_indexes=[1])
        config = T.Qwen2_5OmniConfig(thinker_config=dict(vision_config=vision, text_config=text, audio_config=audio),
                                     enable_audio_output=False)
        model = T.Qwen2_5OmniForConditionalGeneration(config)
    else:
        text.update(num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96,
                      num_position_embeddings=64, deepstack_visual_indexes=[0])
        config = T.Qwen3OmniMoeConfig(thinker_config=dict(vision_config=vision, text_config=text, audio_config=audio),
                                      enable_audio_output=False)
        model = T.Qwen3OmniMoeForConditionalGeneration(config)
    torch.manual_seed(0)
    model.save_pretrained(root)
    return model.thinker.model.visual.eval()


@pytest.mark.parametrize("kind_name", ["qwen2_5_omni", "qwen3_omni"])
def test_a_snapshot_saved_by_transformers_opens(tmp_path, kind_name):
    visual = _transformers_omni(kind_name, tmp_path)
    encoder = qvlearn.load_encoder(tmp_path)
    assert encoder.family == kind_name
    pixel_values, grid = _batch(encoder.config, seed=3)
    with torch.no_grad():
        ref = visual(torch.from_numpy(pixel_values), torch.from_numpy(grid)).pooler_output.numpy()
    out = encoder(pixel_values, grid)
    assert float(np.abs(out - ref).max() / np.abs(ref).max()) < RTOL


def test_presets_of_every_released_size_say_their_sources():
    expected = {"qwen3.5-0.8b": (768, 12, 12, 3072, 1024), "qwen3.5-2b": (1024, 24, 16, 4096, 2048),
                "qwen3.5-4b": (1024, 24, 16, 4096, 2560), "qwen3.5-9b": (1152, 27, 16, 4304, 4096),
                "qwen3.8-27b": (1152, 27, 16, 4304, 5120), "qwen3.8-flash-next": (1152, 27, 16, 4304, 2560)}
    for name, (width, depth, heads, mlp, out) in expected.items():
        cfg = preset_config(name)
        assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_width, cfg.out_hidden_size) == (width, depth, heads, mlp,
                                                                                               out), name
    assert preset_config("qwen3.8-flash-next").family == "qwen4_exp"
    assert preset_config("qwen2.5-omni-7b").family == "qwen2_5_omni"
    assert preset_config("qwen3-omni-30b-a3b").deepstack_visual_indexes == (8, 16, 24)
    released = [p for p in PRESETS if not p.startswith("tiny-") and vision_config_from_dict(
        preset_config_dict(p)).family not in ("qwen2_vl", "qwen2_5_vl")]
    assert not [p for p in released if p not in PRESET_NOTES]  # every third-generation and Omni preset says its source


def test_cut_windowed_towers_keep_a_full_block():
    assert preset_config("qwen2.5-vl-7b", depth=4).fullatt_block_indexes == (3,)
    assert preset_config("qwen2.5-vl-7b", depth=16).fullatt_block_indexes == (7, 15)
    assert preset_config("qwen2.5-omni-7b", depth=12).fullatt_block_indexes == (7, 11)
    assert preset_config("qwen2.5-vl-7b", depth=4, fullatt_block_indexes=[0]).fullatt_block_indexes == (0,)


# --- preprocessing by each processor's settings --------------------------------------------------------------
def test_qwen3_omni_preprocesses_with_qwen2s_processor_and_16_px_patches():
    """Qwen3-Omni's preprocessor_config.json: Qwen2VLImageProcessor, patch 16, 3136 .. 12845056 pixels, no mean/std
    (so the class's CLIP values), videos by Qwen2VLVideoProcessor."""
    from qvlearn.tools.reference import reference_preprocess, reference_video

    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (150, 230, 3), dtype=np.uint8), rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)]
    ours, grid = qvlearn.preprocess(images=images, family="qwen3_omni")
    ref, ref_grid = reference_preprocess(images, patch_size=16)
    np.testing.assert_array_equal(grid, ref_grid)
    assert ours.shape[1] == 3 * 2 * 16 * 16 and np.abs(ours - ref).max() < 1e-5
    frames = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]
    ours, grid = qvlearn.preprocess(videos=[frames], family="qwen3_omni")
    ref, ref_grid = reference_video(frames, patch_size=16)
    np.testing.assert_array_equal(grid, ref_grid)
    assert np.abs(ours - ref).max() < 1e-5
    for family in ("qwen2_5_omni", "qwen4_exp"):  # Qwen2.5-Omni as Qwen2.5-VL, Qwen4-Exp as Qwen3.5
        same = {"qwen2_5_omni": "qwen2_5_vl", "qwen4_exp": "qwen3_5"}[family]
        a, ga = qvlearn.preprocess(images=images, videos=[frames], family=family)
        b, gb = qvlearn.preprocess(images=images, videos=[frames], family=same)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ga, gb)


# --- the bridge ----------------------------------------------------------------------------------------------
VS, VE, IMG, VID = 151652, 151653, 151655, 151656


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_omni_rope_index_is_the_thinkers(family):
    from qvlearn.bridge import expand_vision_pads, get_rope_index
    from qvlearn.tools.reference import reference_get_rope_index

    ref = reference_get_rope_index(family)
    ids = [1, 2, VS, IMG, VE, 5, 6, VS, VID, VE, 7, VS, IMG, VE, 9]
    images, videos = np.array([[1, 4, 6], [1, 8, 4]]), np.array([[5, 4, 4]])
    expanded = expand_vision_pads(ids, images, videos)
    batch = np.stack([np.concatenate([expanded, [0, 0]]), np.concatenate([[0, 0], expanded])])
    mask = np.ones_like(batch)
    mask[0, -2:] = mask[1, :2] = 0
    for seconds in (1.0, 2 / 3, 1 / 3, 0.5, 2.0):  # fps 2, 3, 6, 4, 1: truncation and floats both exercised
        ours, deltas = get_rope_index(batch, np.concatenate([images, images]), np.concatenate([videos, videos]),
                                      [seconds, seconds], attention_mask=mask, family=family)
        theirs, their_deltas = ref(torch.tensor(batch), torch.tensor(np.concatenate([images, images])),
                                   torch.tensor(np.concatenate([videos, videos])), attention_mask=torch.tensor(mask),
                                   second_per_grids=torch.tensor([seconds, seconds]))
        assert ours.dtype == theirs.numpy().dtype, (family, ours.dtype, theirs.dtype)
        np.testing.assert_array_equal(ours, theirs.numpy())
        np.testing.assert_array_equal(deltas, their_deltas.numpy())


def test_qwen3_omni_deepstack_injection_is_the_thinkers():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextModel

    from qvlearn.bridge import add_deepstack

    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((2, 9, 8)).astype(np.float32)
    mask = np.zeros((2, 9), dtype=bool)
    mask[0, 2:5] = mask[1, 6:8] = True
    feature = rng.standard_normal((5, 8)).astype(np.float32)
    theirs = Qwen3OmniMoeThinkerTextModel._deepstack_process(None, torch.from_numpy(hidden), torch.from_numpy(mask),
                                                              torch.from_numpy(feature)).numpy()
    np.testing.assert_array_equal(add_deepstack(hidden, mask, feature), theirs)
