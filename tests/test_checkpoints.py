"""Configs and checkpoints: transformers' defaults, the released weight layouts, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.config import PRESETS, preset_config_dict, vision_config_from_dict
from qvlearn.tools.reference import hf_vision_config
from qvlearn.weights import expected_shapes

RELEASED = {  # effective (width, depth, heads, mlp width, out width) from spec §1.2 / §4
    "qwen2-vl-2b": (1280, 32, 16, 5120, 1536),
    "qwen2-vl-7b": (1280, 32, 16, 5120, 3584),
    "qwen2-vl-72b": (1280, 32, 16, 5120, 8192),
    "qwen2.5-vl-3b": (1280, 32, 16, 3420, 2048),
    "qwen2.5-vl-7b": (1280, 32, 16, 3420, 3584),
    "qwen2.5-vl-72b": (1280, 32, 16, 3456, 8192),
}
PARAMS = {"qwen2-vl-2b": 665_271_296, "qwen2-vl-7b": 675_759_104, "qwen2.5-vl-3b": 668_684_288,
          "qwen2.5-vl-7b": 676_550_144, "qwen2.5-vl-72b": 704_573_696}


@pytest.mark.parametrize("preset", sorted(RELEASED))
def test_released_configs_and_weight_layout_match_transformers(preset):
    """Our reading of the released vision_config (defaults included) builds the same tower as
    transformers: every tensor name and shape, checked on the meta device."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    config = preset_config_dict(preset)
    cfg = vision_config_from_dict(config)
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_width, cfg.out_hidden_size) == RELEASED[preset]
    if cfg.uses_windows:
        assert cfg.fullatt_block_indexes == (7, 15, 23, 31) and cfg.window_merged == 4
        assert cfg.tokens_per_second == 2
    vc = hf_vision_config(config, cfg.family)
    cls = (Qwen2VisionTransformerPretrainedModel if cfg.family == "qwen2_vl"
           else Qwen2_5_VisionTransformerPretrainedModel)
    with torch.device("meta"):
        model = cls._from_config(vc)
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected_shapes(cfg) == theirs
    if preset in PARAMS:
        assert sum(int(np.prod(s)) for s in theirs.values()) == PARAMS[preset]


def test_class_defaults_are_applied_like_transformers():
    # A Qwen2.5-VL vision_config with nothing but the model type is a 3584-wide ViT, as in transformers.
    cfg = vision_config_from_dict({"model_type": "qwen2_5_vl", "vision_config": {}})
    assert (cfg.width, cfg.out_hidden_size, cfg.tokens_per_second) == (3584, 3584, 4)
    # Qwen2-VL: hidden_size is the merger output, embed_dim the ViT width
    cfg = vision_config_from_dict({"model_type": "qwen2_vl", "vision_config": {"hidden_size": 1536}})
    assert (cfg.width, cfg.out_hidden_size, cfg.hidden_act) == (1280, 1536, "quick_gelu")
    # vision-only configs of both transformers generations; aliases of attribute_map
    for model_type in ("qwen2_5_vl_vision", "qwen2_5_vl"):
        cfg = vision_config_from_dict({"model_type": model_type, "hidden_size": 64, "num_attention_heads": 4,
                                       "num_hidden_layers": 2, "fullatt_block_indexes": [1]})
        assert (cfg.family, cfg.width, cfg.num_heads, cfg.depth) == ("qwen2_5_vl", 64, 4, 2)


def test_vision_only_snapshot_loads(tmp_path, checkpoint):
    src = checkpoint("tiny-qwen2-vl")
    dst = tmp_path / "vision-only"
    shutil.copytree(src, dst)
    full = json.loads((src / "config.json").read_text())
    vision = qvlearn.read_config(src).to_hf_vision_dict()
    (dst / "config.json").write_text(json.dumps(vision))
    assert qvlearn.read_config(dst) == qvlearn.read_config(src)
    assert full["model_type"] == "qwen2_vl"
    qvlearn.load_encoder(dst)


def test_all_presets_are_valid():
    for preset in PRESETS:
        assert qvlearn.preset_config(preset).depth > 0


# -- bad checkpoints ------------------------------------------------------------------------------------
def _copy(checkpoint, tmp_path, preset="tiny-qwen2.5-vl"):
    dst = tmp_path / "snap"
    shutil.copytree(checkpoint(preset), dst)
    return dst


def test_missing_config(tmp_path, checkpoint):
    snap = _copy(checkpoint, tmp_path)
    (snap / "config.json").unlink()
    with pytest.raises(qvlearn.ConfigError, match="no config.json"):
        qvlearn.load_encoder(snap)
    with pytest.raises(qvlearn.ConfigError, match="does not exist"):
        qvlearn.load_encoder(tmp_path / "nowhere")


@pytest.mark.parametrize("model_type, hint", [("llama", "not a Qwen2-VL"), ("glm4v", "does not implement")])
def test_config_of_another_model(tmp_path, checkpoint, model_type, hint):
    snap = _copy(checkpoint, tmp_path)
    config = json.loads((snap / "config.json").read_text())
    config["model_type"] = model_type
    (snap / "config.json").write_text(json.dumps(config))
    with pytest.raises(qvlearn.ConfigError, match=hint):
        qvlearn.load_encoder(snap)


def test_config_not_json(tmp_path, checkpoint):
    snap = _copy(checkpoint, tmp_path)
    (snap / "config.json").write_text("{ not json")
    with pytest.raises(qvlearn.ConfigError, match="not valid JSON"):
        qvlearn.load_encoder(snap)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(tmp_path, checkpoint, damage):
    snap = _copy(checkpoint, tmp_path)
    file = snap / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with pytest.raises(qvlearn.CheckpointError, match="not a readable safetensors file"):
        qvlearn.load_encoder(snap)


def _rewrite(snap, mutate):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(snap / "model.safetensors")
    mutate(tensors)
    save_file(tensors, snap / "model.safetensors")


def test_missing_extra_and_misshapen_tensors_are_listed(tmp_path, checkpoint):
    snap = _copy(checkpoint, tmp_path)

    def mutate(t):
        del t["visual.blocks.2.attn.qkv.bias"]
        del t["visual.merger.mlp.0.weight"]
        t["visual.blocks.9.norm1.weight"] = np.ones(64, np.float32)
        t["visual.blocks.0.mlp.up_proj.weight"] = np.ones((95, 64), np.float32)
        t["model.language_model.embed_tokens.weight"] = np.ones((4, 4), np.float32)  # not visual: ignored

    _rewrite(snap, mutate)
    with pytest.raises(qvlearn.CheckpointError) as info:
        qvlearn.load_encoder(snap)
    message = str(info.value)
    assert "missing (2): visual.blocks.2.attn.qkv.bias, visual.merger.mlp.0.weight" in message
    assert "unexpected (1): visual.blocks.9.norm1.weight" in message
    assert "visual.blocks.0.mlp.up_proj.weight: (95, 64) in the file, (96, 64) expected" in message
    assert "language_model" not in message


def test_weights_of_the_other_family_are_reported(tmp_path, checkpoint):
    snap = _copy(checkpoint, tmp_path, "tiny-qwen2-vl")
    shutil.copy(checkpoint("tiny-qwen2.5-vl") / "config.json", snap / "config.json")
    with pytest.raises(qvlearn.CheckpointError, match=r"missing \(\d+\): visual.blocks.0.mlp.down_proj.bias"):
        qvlearn.load_encoder(snap)


def test_pickled_weights_are_refused(tmp_path, checkpoint):
    snap = _copy(checkpoint, tmp_path)
    (snap / "model.safetensors").unlink()
    (snap / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(qvlearn.CheckpointError, match="safetensors only, never pickles"):
        qvlearn.load_encoder(snap)
    (snap / "pytorch_model.bin").unlink()
    with pytest.raises(qvlearn.CheckpointError, match="no model.safetensors"):
        qvlearn.load_encoder(snap)


def test_missing_shard(tmp_path):
    snap = qvlearn.save_random_checkpoint(tmp_path / "sharded", "tiny-qwen2-vl", max_shard_bytes=40_000)
    next(snap.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(qvlearn.CheckpointError, match="shards listed in model.safetensors.index.json are missing"):
        qvlearn.load_encoder(snap)


def test_random_checkpoint_is_seeded(tmp_path):
    a = qvlearn.save_random_checkpoint(tmp_path / "a", "tiny-qwen2-vl", seed=3)
    b = qvlearn.save_random_checkpoint(tmp_path / "b", "tiny-qwen2-vl", seed=3)
    c = qvlearn.save_random_checkpoint(tmp_path / "c", "tiny-qwen2-vl", seed=4)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    with pytest.raises(qvlearn.ConfigError, match="unknown preset"):
        qvlearn.save_random_checkpoint(tmp_path / "d", "qwen3-vl-9b")


@pytest.mark.parametrize("preset", ["qwen2-vl-2b", "qwen2.5-vl-7b", "qwen3-vl-8b", "qwen3.5-9b", "qwen2.5-omni-7b",
                                    "qwen3-omni-30b-a3b"])
def test_every_weight_has_a_role_true_of_its_family(preset):
    """The roles porting.md lists are written from the family entry: a bias is never called absent, a LayerNorm is
    never called an RMSNorm, and no row names another family."""
    import re

    from qvlearn.families import FAMILIES
    from qvlearn.weights import expected_shapes, weight_role

    config = qvlearn.preset_config(preset)
    shapes = expected_shapes(config)
    roles = {n: weight_role(config, re.sub(r"_list\.\d+\.", "_list.{j}.", n)) for n in shapes}
    assert ("no bias" in roles["patch_embed.proj.weight"]) == ("patch_embed.proj.bias" not in shapes)
    other = "RMSNorm" if config.kind.norm == "layer" else "LayerNorm"
    assert not any(other in r for r in roles.values())
    assert not any(f.title in r for f in FAMILIES.values() for r in roles.values())
