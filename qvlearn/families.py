"""The family table: one entry per vision tower of the lineage, and everything that differs between them.

Explained in ``notebooks/08_whole_encoder.ipynb`` (Qwen2-VL, Qwen2.5-VL), ``notebooks/13_qwen3_vl.ipynb`` (the third
generation) and ``notebooks/16_lineage.ipynb`` (the rest). Every module asks this table, never the family's name: the
config reader (model types, defaults, JSON keys), the weights (names, prefix), the engine and the spec (norm, MLP,
merger, windows, position table, DeepStack), the stage list, the preprocessing defaults and the bridge's token ids and
position rule.
A new family whose tower is one of these is one entry here (and its presets in :mod:`qvlearn.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)

QWEN2_TOKENS = MappingProxyType(dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                                     vision_end_token_id=151653))
QWEN3_5_TOKENS = MappingProxyType(dict(image_token_id=248056, video_token_id=248057, vision_start_token_id=248053,
                                       vision_end_token_id=248054))  # video/start/end as released; image = video - 1

_Q2_PREPROCESS = MappingProxyType(dict(patch_size=14, min_pixels=3136, max_pixels=12845056, mean=OPENAI_CLIP_MEAN,
                                       std=OPENAI_CLIP_STD))
# 16-px patches (resize factor 32), mean = std = 0.5, 65536 .. 16777216 pixels (64 .. 16384 merged tokens)
_Q3_PREPROCESS = MappingProxyType(dict(patch_size=16, min_pixels=65536, max_pixels=16777216,
                                       mean=IMAGENET_STANDARD_MEAN, std=IMAGENET_STANDARD_STD))
# Qwen3-Omni's preprocessor_config.json: Qwen2VLImageProcessor with 16-px patches and Qwen2's pixel limits; it sets
# no image_mean / image_std, so the class defaults hold: OpenAI CLIP's, not Qwen3-VL's 0.5
_Q3_OMNI_PREPROCESS = MappingProxyType(dict(patch_size=16, min_pixels=3136, max_pixels=12845056,
                                            mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD))


@dataclass(frozen=True)
class Family:
    """What one tower family is. The fields are grouped as the modules that read them."""

    name: str                    # the family's id: qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5, qwen4_exp, ...
    title: str                   # for messages: "Qwen2.5-VL"
    # -- config.json (qvlearn.config)
    model_types: tuple           # every model_type read as this family (top level and vision-only, 4.x and 5.x)
    vision_model_type: str       # transformers 5.x vision config's model_type
    architectures: dict          # top-level model_type -> the class name config.json lists
    hf_defaults: dict            # transformers' vision-config class defaults (load-bearing for minimal configs)
    json_keys: dict              # VisionConfig field -> the config.json key that holds it, where they differ
    # -- the tower (qvlearn.engine, qvlearn.spec, qvlearn.weights)
    weight_prefix: str           # the prefix of the vision tensors in a full checkpoint
    norm: str                    # "layer" (LayerNorm, with bias) or "rms" (RMSNorm, no bias)
    mlp: str                     # "fc" (fc2(act(fc1 x))) or "gated" (down(act(gate x) * up x))
    mlp_names: tuple             # the MLP's linears under blocks.{i}.mlp.: (fc1, fc2) or (gate, up, down)
    merger_names: tuple          # the merger's (norm, first linear, second linear) under merger.
    qkv_names: tuple = ("qkv",)  # the attention's input projections: one fused qkv, or separate (q, k, v)
    mlp_ratio: bool = False      # config.json's vocabulary: the ViT width is embed_dim, the MLP width mlp_ratio x
    #                              embed_dim, hidden_size the LLM width (Qwen2-VL); else hidden_size, intermediate_size
    #                              and out_hidden_size
    deepstack_name: str = "deepstack_merger_list"  # the DeepStack mergers' list (merger_list in Qwen3-Omni)
    container: str | None = None  # the Omni models: the sub-config that holds vision_config and the token ids
    patch_bias: bool = False     # the Conv3d patch embedding has a bias
    position_table: bool = False  # a learned position table, interpolated to the grid, added after the embedding
    windows: bool = False        # window attention outside fullatt_block_indexes (rows permuted into window order)
    deepstack: bool = False      # DeepStack mergers after the blocks of deepstack_visual_indexes
    # -- preprocessing and the bridge (qvlearn.preprocessing, qvlearn.bridge)
    preprocessing: dict = field(default_factory=lambda: _Q2_PREPROCESS)  # preprocessor_config.json's image values
    video_processor: str = "per-frame"  # "per-frame" (Qwen2VLImageProcessor) or "qwen3" (one budget over T x H x W)
    token_ids: dict = field(default_factory=lambda: QWEN2_TOKENS)
    rope_index: str = "qwen2_vl"  # the bridge's M-RoPE rule: qwen2_vl, qwen2_5_vl (video interval), qwen3_vl,
    #                               omni (Qwen2.5-Omni: max+1, truncated seconds x 25), omni_float (Qwen3-Omni:
    #                               not truncated)
    # -- the reference (qvlearn.tools.reference): transformers' (module, vision config class, vision model class)
    reference: tuple = ()

    @property
    def block_stages(self) -> tuple:
        """The stages inside one block, in order (``blocks.{i}.<name>`` in a trace): see :mod:`qvlearn.stages`."""
        mlp = ("mlp.gate", "mlp.up", "mlp.act") if self.mlp == "gated" else ("mlp.fc1", "mlp.act")
        return ("norm1", "attn.q", "attn.k", "attn", "residual1", "norm2", *mlp, "mlp")

    @property
    def generation(self) -> int:
        return 3 if self.position_table else 2


_Q3_DEFAULTS = dict(depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304,
                    num_heads=16, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                    out_hidden_size=3584, num_position_embeddings=2304)
_THIRD = dict(weight_prefix="model.visual.", norm="layer", mlp="fc", mlp_names=("linear_fc1", "linear_fc2"),
              merger_names=("norm", "linear_fc1", "linear_fc2"), patch_bias=True, position_table=True,
              preprocessing=_Q3_PREPROCESS, video_processor="qwen3", rope_index="qwen3_vl")
_WIDTH_IS_HIDDEN = {"width": "hidden_size", "mlp_width": "intermediate_size"}

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("qwen2_vl", "Qwen2-VL", model_types=("qwen2_vl", "qwen2_vl_vision"), vision_model_type="qwen2_vl_vision",
           architectures={"qwen2_vl": "Qwen2VLForConditionalGeneration"},
           hf_defaults=dict(depth=32, embed_dim=1280, hidden_size=3584, hidden_act="quick_gelu", mlp_ratio=4,
                            num_heads=16, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
           json_keys={"width": "embed_dim", "mlp_width": "mlp_ratio (x embed_dim)", "out_hidden_size": "hidden_size",
                      "in_channels": "in_chans"},
           weight_prefix="visual.", norm="layer", mlp="fc", mlp_names=("fc1", "fc2"),
           merger_names=("ln_q", "mlp.0", "mlp.2"), mlp_ratio=True,
           reference=("qwen2_vl", "Qwen2VLVisionConfig", "Qwen2VisionTransformerPretrainedModel")),
    Family("qwen2_5_vl", "Qwen2.5-VL", model_types=("qwen2_5_vl", "qwen2_5_vl_vision"),
           vision_model_type="qwen2_5_vl_vision", architectures={"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"},
           hf_defaults=dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, num_heads=16,
                            in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                            tokens_per_second=4, window_size=112, out_hidden_size=3584,
                            fullatt_block_indexes=[7, 15, 23, 31]),
           json_keys=_WIDTH_IS_HIDDEN, weight_prefix="visual.", norm="rms", mlp="gated",
           mlp_names=("gate_proj", "up_proj", "down_proj"), merger_names=("ln_q", "mlp.0", "mlp.2"), windows=True,
           rope_index="qwen2_5_vl",
           reference=("qwen2_5_vl", "Qwen2_5_VLVisionConfig", "Qwen2_5_VisionTransformerPretrainedModel")),
    Family("qwen3_vl", "Qwen3-VL", model_types=("qwen3_vl", "qwen3_vl_vision", "qwen3_vl_moe", "qwen3_vl_moe_vision"),
           vision_model_type="qwen3_vl_vision",
           architectures={"qwen3_vl": "Qwen3VLForConditionalGeneration",
                          "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"},
           hf_defaults=dict(_Q3_DEFAULTS, deepstack_visual_indexes=[8, 16, 24]), json_keys=_WIDTH_IS_HIDDEN,
           deepstack=True, reference=("qwen3_vl", "Qwen3VLVisionConfig", "Qwen3VLVisionModel"), **_THIRD),
    Family("qwen3_5", "Qwen3.5", model_types=("qwen3_5", "qwen3_5_vision", "qwen3_5_moe", "qwen3_5_moe_vision"),
           vision_model_type="qwen3_5_vision",
           architectures={"qwen3_5": "Qwen3_5ForConditionalGeneration",
                          "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"},
           hf_defaults=dict(_Q3_DEFAULTS), json_keys=_WIDTH_IS_HIDDEN, token_ids=QWEN3_5_TOKENS,
           reference=("qwen3_5", "Qwen3_5VisionConfig", "Qwen3_5VisionModel"), **_THIRD),
    # Qwen3.8-Flash-Next: transformers' Qwen4ExpVisionModel is Qwen3_5MoeVisionModel unchanged
    Family("qwen4_exp", "Qwen4-Exp", model_types=("qwen4_exp", "qwen4_exp_vision"),
           vision_model_type="qwen4_exp_vision",
           architectures={"qwen4_exp": "Qwen4ExpForConditionalGeneration"}, hf_defaults=dict(_Q3_DEFAULTS),
           json_keys=_WIDTH_IS_HIDDEN, token_ids=QWEN3_5_TOKENS,
           reference=("qwen4_exp", "Qwen4ExpVisionConfig", "Qwen4ExpVisionModel"), **_THIRD),
    # The Omni models: the thinker holds the tower (thinker.visual.*, thinker_config.vision_config); a thinker-only
    # snapshot (model_type *_thinker) keeps visual.* and a top-level vision_config.
    Family("qwen2_5_omni", "Qwen2.5-Omni",
           model_types=("qwen2_5_omni", "qwen2_5_omni_thinker", "qwen2_5_omni_vision_encoder"),
           vision_model_type="qwen2_5_omni_vision_encoder",
           architectures={"qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration",
                          "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration"},
           hf_defaults=dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, num_heads=16,
                            in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                            window_size=112, out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31]),
           json_keys=_WIDTH_IS_HIDDEN, container="thinker_config", weight_prefix="thinker.visual.", norm="rms",
           mlp="gated", mlp_names=("gate_proj", "up_proj", "down_proj"), merger_names=("ln_q", "mlp.0", "mlp.2"),
           qkv_names=("q", "k", "v"), windows=True, rope_index="omni",
           reference=("qwen2_5_omni", "Qwen2_5OmniVisionEncoderConfig", "Qwen2_5OmniVisionEncoder")),
    Family("qwen3_omni", "Qwen3-Omni",
           model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker", "qwen3_omni_moe_vision_encoder"),
           vision_model_type="qwen3_omni_moe_vision_encoder",
           architectures={"qwen3_omni_moe": "Qwen3OmniMoeForConditionalGeneration",
                          "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration"},
           hf_defaults=dict(_Q3_DEFAULTS, deepstack_visual_indexes=[8, 16, 24]), json_keys=_WIDTH_IS_HIDDEN,
           container="thinker_config", deepstack=True,
           reference=("qwen3_omni_moe", "Qwen3OmniMoeVisionEncoderConfig", "Qwen3OmniMoeVisionEncoder"),
           **dict(_THIRD, weight_prefix="thinker.visual.", merger_names=("ln_q", "mlp.0", "mlp.2"),
                  preprocessing=_Q3_OMNI_PREPROCESS, video_processor="per-frame", rope_index="omni_float"),
           deepstack_name="merger_list"),
]}
"""Every family by name. The MoE models share their dense sibling's vision tower (their model types are listed)."""



def family_of_model_type(model_type) -> str | None:
    """The family whose entry lists ``model_type`` (``config.json``'s), or None."""
    return next((f.name for f in FAMILIES.values() if model_type in f.model_types), None)


def model_types() -> list[str]:
    """Every ``model_type`` some entry lists, in table order."""
    return [t for f in FAMILIES.values() for t in f.model_types]


def family(name: str) -> Family:
    """The table entry of a family name (``"qwen2_5_vl"``), with a clear error for any other string."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        from .errors import ConfigError

        raise ConfigError(f"unknown family {name!r}; expected one of {tuple(FAMILIES)}") from None
