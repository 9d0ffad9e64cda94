"""Vision-tower configuration: reading ``config.json`` the way transformers does, and presets.

Explained in ``notebooks/08_whole_encoder.ipynb``.

Two traps live here:

* ``vision_config.hidden_size`` is the *LLM width* (merger output) in Qwen2-VL, where the ViT width is
  ``embed_dim``; in Qwen2.5-VL it is the *ViT width*, and the merger output is ``out_hidden_size``.
* Released Qwen2-VL checkpoints ship a minimal ``vision_config``; the class defaults of
  transformers fill the rest, so those defaults are load-bearing. We apply exactly the
  transformers 5.23 dataclass defaults below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .families import FAMILIES as FAMILY_TABLE
from .families import Family, family_of_model_type, model_types

# Class defaults of transformers 5.23's vision configs (identical in 4.x), from the family table.
HF_VISION_DEFAULTS = {name: f.hf_defaults for name, f in FAMILY_TABLE.items()}
# transformers' attribute_map: these aliases are accepted for the same fields.
ALIASES = {"num_attention_heads": "num_heads", "num_hidden_layers": "depth"}
DEFAULT_ROPE_THETA = 10000.0
SUPPORTED_ACTIVATIONS = ("quick_gelu", "silu", "gelu", "gelu_pytorch_tanh")
RELEASED_MAX = dict(depth=32, width=1280, num_heads=16, mlp_width=5120, out_hidden_size=8192, patch_size=16,
                    temporal_patch_size=2, spatial_merge_size=2, in_channels=3, window_size=112,
                    num_position_embeddings=2304)
"""The largest value of each size any released tower uses (Qwen2-VL's MLP: 1280 x 4; Qwen2-VL-72B's out 8192)."""
LIMIT_FACTOR = 16
"""A config may go this many times past :data:`RELEASED_MAX` (a research variant, a wider tower); beyond that a
value is refused before anything is built: a typo such as ``"depth": 1000000000`` would otherwise fill the memory
with the names and shapes of a billion blocks."""
_INT_KEYS = ("depth", "num_heads", "hidden_size", "intermediate_size", "out_hidden_size", "embed_dim", "patch_size",
             "temporal_patch_size", "spatial_merge_size", "in_channels", "window_size", "num_position_embeddings")
_NUMBER_KEYS = ("mlp_ratio", "tokens_per_second")
_INDEX_LIST_KEYS = ("fullatt_block_indexes", "deepstack_visual_indexes")


@dataclass(frozen=True)
class VisionConfig:
    """The vision tower's shape, in one vocabulary for both families.

    ``width`` is the ViT width (``embed_dim`` in Qwen2-VL, ``hidden_size`` in Qwen2.5-VL),
    ``mlp_width`` the MLP's inner width, ``out_hidden_size`` the merger output (the LLM width).
    """

    family: str
    depth: int
    width: int
    num_heads: int
    mlp_width: int
    hidden_act: str
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    window_size: int = 112
    fullatt_block_indexes: tuple = ()
    tokens_per_second: int = 2
    rope_theta: float = DEFAULT_ROPE_THETA
    eps: float = 1e-6
    num_position_embeddings: int = 0
    deepstack_visual_indexes: tuple = ()

    def __post_init__(self):
        if self.family not in FAMILY_TABLE:
            raise ConfigError(f"unknown family {self.family!r}; expected one of {tuple(FAMILY_TABLE)}")
        for name in ("depth", "width", "num_heads", "mlp_width", "out_hidden_size", "patch_size",
                     "temporal_patch_size", "spatial_merge_size", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"vision_config.{self.json_key(name)} must be a positive integer, got {value!r}")
        if self.width % self.num_heads:
            raise ConfigError(f"the ViT width (vision_config.{self.json_key('width')}) {self.width} is not divisible "
                              f"by num_heads {self.num_heads}")
        if self.head_dim % 4:
            raise ConfigError(f"head_dim {self.head_dim} must be a multiple of 4 for the 2-D rotary embedding")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; expected one of "
                              f"{SUPPORTED_ACTIVATIONS}")
        for name, largest in RELEASED_MAX.items():
            value = getattr(self, name)
            if isinstance(value, int) and value > largest * LIMIT_FACTOR:
                raise ConfigError(f"vision_config.{self.json_key(name)} = {value} is beyond any Qwen-VL tower: the "
                                  f"largest released value is {largest}, and qvlearn takes up to "
                                  f"{largest * LIMIT_FACTOR} ({LIMIT_FACTOR}x). Is it a typo?")
        self._check_block_indexes("fullatt_block_indexes")
        if self.kind.position_table:
            side = int(round(self.num_position_embeddings ** 0.5))
            if self.num_position_embeddings <= 0 or side * side != self.num_position_embeddings:
                raise ConfigError(f"num_position_embeddings must be a positive square (48*48 = 2304 as released), "
                                  f"got {self.num_position_embeddings!r}")
        self._check_block_indexes("deepstack_visual_indexes")
        if self.deepstack_visual_indexes and not self.kind.deepstack:
            raise ConfigError(f"deepstack_visual_indexes are a Qwen3-VL feature; {self.family} has none")
        if self.kind.windows and self.window_merged < 1:
            raise ConfigError(f"window_size {self.window_size} is smaller than one merged token "
                              f"({self.patch_size * self.spatial_merge_size} px)")

    def json_key(self, field: str) -> str:
        """The ``config.json`` key behind a field of this class (``width`` is ``embed_dim`` in Qwen2-VL and
        ``hidden_size`` elsewhere), for messages that point at the file."""
        return self.kind.json_keys.get(field, field)

    def _check_block_indexes(self, field: str) -> None:
        values = getattr(self, field)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in values):
            raise ConfigError(f"vision_config.{field} must be a list of block numbers, got {list(values)!r}")
        bad = [i for i in values if not (0 <= int(i) < self.depth)]
        if bad:
            raise ConfigError(f"{field} {list(values)} name blocks outside 0..{self.depth - 1}: {bad}")

    @property
    def kind(self) -> Family:
        """This family's entry of the family table (:mod:`qvlearn.families`)."""
        return FAMILY_TABLE[self.family]

    # -- derived sizes ----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one ``pixel_values`` row: C * T * P * P (3 * 2 * 14 * 14 = 1176)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size ** 2

    @property
    def window_merged(self) -> int:
        """Window side in merged tokens: window_size // merge // patch (112 // 2 // 14 = 4)."""
        return self.window_size // self.spatial_merge_size // self.patch_size

    @property
    def uses_windows(self) -> bool:
        return self.kind.windows

    @property
    def position_grid_side(self) -> int:
        """Side of the square learned position table (48 for 2304 entries); 0 when there is none."""
        return int(round(self.num_position_embeddings ** 0.5)) if self.kind.position_table else 0

    @property
    def uses_layer_norm(self) -> bool:
        return self.kind.norm == "layer"

    def is_full_attention_block(self, i: int) -> bool:
        return (not self.uses_windows) or i in self.fullatt_block_indexes

    # -- transformers view --------------------------------------------------------------------------
    def to_hf_vision_dict(self) -> dict:
        """The vision_config as transformers 5.23 spells it (complete, nothing left to defaults)."""
        rope = {"rope_theta": self.rope_theta, "rope_type": "axial"}
        common = dict(depth=self.depth, num_heads=self.num_heads, in_channels=self.in_channels,
                      patch_size=self.patch_size, spatial_merge_size=self.spatial_merge_size,
                      temporal_patch_size=self.temporal_patch_size, hidden_act=self.hidden_act,
                      rope_parameters=rope)
        kind = self.kind
        out = dict(common, model_type=kind.vision_model_type)
        if kind.mlp_ratio:  # Qwen2-VL's vocabulary: embed_dim, mlp_ratio, hidden_size
            if self.mlp_width % self.width:
                raise ConfigError("Qwen2-VL expresses the MLP width as an integer mlp_ratio of embed_dim")
            out.update(embed_dim=self.width, hidden_size=self.out_hidden_size, mlp_ratio=self.mlp_width // self.width)
        else:
            out.update(hidden_size=self.width, intermediate_size=self.mlp_width, out_hidden_size=self.out_hidden_size)
        if kind.windows:
            out.update(window_size=self.window_size, fullatt_block_indexes=list(self.fullatt_block_indexes),
                       tokens_per_second=self.tokens_per_second)
        if kind.position_table:
            out.update(num_position_embeddings=self.num_position_embeddings)
        if kind.deepstack:
            out.update(deepstack_visual_indexes=list(self.deepstack_visual_indexes))
        return out

    def summary(self) -> str:
        kind = self.kind
        parts = [f"{self.patch_size}-px patches"] if kind.position_table else []
        if kind.position_table:
            side = self.position_grid_side
            parts.append(f"{side}x{side} learned positions")
        parts.append("LayerNorm" if kind.norm == "layer" else "RMSNorm")
        parts.append("SiLU-gated MLP" if kind.mlp == "gated" else
                     f"fc1/{'QuickGELU' if self.hidden_act == 'quick_gelu' else self.hidden_act}/fc2")
        if kind.windows:
            parts += [f"windows of {self.window_merged}x{self.window_merged} merged tokens",
                      f"full attention at {list(self.fullatt_block_indexes)}"]
        else:
            parts.append("full attention")
        if self.deepstack_visual_indexes:
            parts.append(f"DeepStack at {list(self.deepstack_visual_indexes)}")
        return (f"{self.family}: {self.depth} blocks, width {self.width}, {self.num_heads} heads of {self.head_dim}, "
                f"MLP {self.mlp_width}, out {self.out_hidden_size} ({', '.join(parts)})")


def vision_config_from_dict(config: dict, *, source: str = "config") -> VisionConfig:
    """Build a :class:`VisionConfig` from a parsed ``config.json``.

    Accepts the full VLM config (``model_type`` ``qwen2_vl``/``qwen2_5_vl`` with a ``vision_config``
    dict) or a vision-only config (4.x ``qwen2_vl``/``qwen2_5_vl`` or 5.x ``*_vision`` model types).
    Missing fields take the transformers class defaults.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(config).__name__}")
    top_type = config.get("model_type")
    container = next((f.container for f in FAMILY_TABLE.values() if top_type in f.model_types and f.container), None)
    if container and container in config:  # the Omni models: thinker_config holds vision_config
        if not isinstance(config[container], dict) or not isinstance(config[container].get("vision_config"), dict):
            raise ConfigError(f"{source}: {container} must be an object holding a vision_config object")
        config = dict(config[container], model_type=top_type)
    if "vision_config" in config:
        vision = config["vision_config"]
        if not isinstance(vision, dict):
            raise ConfigError(f"{source}: vision_config must be an object")
        type_name = top_type or vision.get("model_type")
    else:
        vision = config
        type_name = top_type
    family = family_of_model_type(type_name)
    if family is None:
        hint = ""
        if isinstance(type_name, str) and type_name.startswith(("qwen4", "qwen3_omni", "qwen2_vl_", "glm4v")):
            hint = " (a related model whose vision tower qvlearn does not implement)"
        raise ConfigError(
            f"{source}: model_type {type_name!r} is not a {_titles()} model{hint}; "
            f"qvlearn reads model_type one of {sorted(model_types())}. Point it at a snapshot of one of them.")

    values = dict(FAMILY_TABLE[family].hf_defaults)
    for key, value in vision.items():
        values[ALIASES.get(key, key)] = value
    rope = values.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"{source}: rope_parameters must be an object such as {{\"rope_theta\": 10000.0}}, "
                          f"got {type(rope).__name__} {rope!r}")
    rope_theta = rope.get("rope_theta", values.get("rope_theta", DEFAULT_ROPE_THETA))
    if isinstance(rope_theta, bool) or not isinstance(rope_theta, (int, float)) or not rope_theta > 0:
        raise ConfigError(f"{source}: rope_theta must be a positive number (10000.0 as released), got {rope_theta!r}")
    rope_theta = float(rope_theta)
    if rope.get("rope_type", "axial") not in ("axial", "default"):
        raise ConfigError(f"{source}: vision rope_type {rope.get('rope_type')!r} is not supported (expected axial)")
    for key in ("patch_size", "temporal_patch_size"):
        if isinstance(values[key], (list, tuple)):
            if len(set(values[key])) != 1:
                raise ConfigError(f"{source}: non-square {key} {values[key]} is not supported")
            values[key] = values[key][0]
    _check_types(values, source)
    try:
        kind = FAMILY_TABLE[family]
        if kind.mlp_ratio:  # Qwen2-VL: the ViT width is embed_dim, hidden_size the LLM's
            mlp = values["embed_dim"] * values["mlp_ratio"]
            if mlp != int(mlp):
                raise ConfigError(f"vision_config.embed_dim {values['embed_dim']} x mlp_ratio {values['mlp_ratio']} "
                                  f"= {mlp} is not a whole MLP width")
            width, mlp_width, out = values["embed_dim"], int(mlp), values["hidden_size"]
        else:
            width, mlp_width, out = values["hidden_size"], values["intermediate_size"], values["out_hidden_size"]
        fullatt = tuple(values["fullatt_block_indexes"]) if kind.windows else ()
        # Qwen3.5's released configs carry an empty deepstack list, which its class drops
        deepstack = tuple(values["deepstack_visual_indexes"]) if kind.deepstack else ()
        return VisionConfig(
            family=family, depth=values["depth"], width=width, num_heads=values["num_heads"],
            mlp_width=mlp_width, hidden_act=values["hidden_act"], out_hidden_size=out,
            patch_size=values["patch_size"], temporal_patch_size=values["temporal_patch_size"],
            spatial_merge_size=values["spatial_merge_size"], in_channels=values["in_channels"],
            window_size=values.get("window_size", 112), fullatt_block_indexes=fullatt,
            tokens_per_second=values.get("tokens_per_second", 2), rope_theta=rope_theta,
            num_position_embeddings=values.get("num_position_embeddings", 0), deepstack_visual_indexes=deepstack,
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise ConfigError(f"{source}: {exc}") from None
        raise ConfigError(f"{source}: malformed vision_config ({exc})") from None


def _check_types(values: dict, source: str) -> None:
    """Every vision_config field qvlearn reads has the JSON type transformers' config class declares (as its strict
    validation would refuse it): whole numbers, numbers, lists of block numbers, a string activation."""
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    for key in _INT_KEYS:
        if key in values and not (whole(values[key]) and values[key] > 0):
            raise ConfigError(f"{source}: vision_config.{key} must be a positive integer, got "
                              f"{values[key]!r} ({type(values[key]).__name__})")
    for key in _NUMBER_KEYS:
        value = values.get(key)
        if key in values and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9):
            raise ConfigError(f"{source}: vision_config.{key} must be a positive number, got {value!r} "
                              f"({type(value).__name__})")
    for key in _INDEX_LIST_KEYS:
        value = values.get(key)
        if key in values and not (isinstance(value, (list, tuple)) and all(whole(i) for i in value)):
            raise ConfigError(f"{source}: vision_config.{key} must be a list of block numbers such as [7, 15, 23, 31], "
                              f"got {value!r} ({type(value).__name__})")
    if "hidden_act" in values and not isinstance(values["hidden_act"], str):
        raise ConfigError(f"{source}: vision_config.hidden_act must be a string such as {SUPPORTED_ACTIVATIONS[0]!r}, "
                          f"got {values['hidden_act']!r}")


def _titles() -> str:
    titles = [f.title for f in FAMILY_TABLE.values()]
    return ", ".join(titles[:-1]) + " or " + titles[-1]


def read_config_json(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a snapshot directory (or the file itself), with clear errors."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist: give the directory of a downloaded snapshot "
                          "(or one written by qvlearn.save_random_checkpoint)")
    file = path / "config.json" if path.is_dir() else path
    if not file.exists():
        raise ConfigError(f"no config.json in {path}: a Hugging Face snapshot directory holds config.json next to "
                          "model.safetensors (download the whole repository, not only the weights)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{file}: expected a JSON object, got {type(config).__name__}")
    return config


def read_config(path: str | os.PathLike) -> VisionConfig:
    """Read ``config.json`` in a snapshot directory (or the file itself)."""
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    return vision_config_from_dict(read_config_json(path), source=str(file))


# ----------------------------------------------------------------------------------------------------
# Presets: the vision_config exactly as each released checkpoint ships it, so that the
# loader's defaults are exercised, plus small towers for tests.
# ----------------------------------------------------------------------------------------------------
_Q2_ORIGINAL = dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, in_chans=3, patch_size=14,
                    spatial_merge_size=2, spatial_patch_size=14, temporal_patch_size=2, model_type="qwen2_vl")

_Q3_SMALL = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, hidden_act="gelu_pytorch_tanh",
                 in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                 num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17], initializer_range=0.02,
                 model_type="qwen3_vl")
_Q3_LARGE = dict(_Q3_SMALL, depth=27, hidden_size=1152, intermediate_size=4304, deepstack_visual_indexes=[8, 16, 24])
_Q35 = dict(_Q3_LARGE, deepstack_visual_indexes=[], model_type="qwen3_5")
_Q35_MEDIUM = dict(_Q3_SMALL, deepstack_visual_indexes=[], model_type="qwen3_5")
_Q35_SMALL = dict(_Q35_MEDIUM, depth=12, hidden_size=768, intermediate_size=3072, num_heads=12)
_Q25_OMNI = dict(depth=32, hidden_act="silu", hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3,
                 patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                 fullatt_block_indexes=[7, 15, 23, 31], model_type="qwen2_5_omni_vision_encoder")

PRESETS: dict[str, dict] = {
    "qwen2-vl-2b": dict(model_type="qwen2_vl", vision_config=dict(_Q2_ORIGINAL, hidden_size=1536)),
    "qwen2-vl-7b": dict(model_type="qwen2_vl", vision_config=dict(_Q2_ORIGINAL, hidden_size=3584)),
    "qwen2-vl-72b": dict(model_type="qwen2_vl", vision_config=dict(_Q2_ORIGINAL, hidden_size=8192)),
    "qwen2.5-vl-3b": dict(model_type="qwen2_5_vl", vision_config=dict(
        hidden_size=1280, out_hidden_size=2048, tokens_per_second=2, in_chans=3, spatial_patch_size=14,
        model_type="qwen2_5_vl")),
    "qwen2.5-vl-7b": dict(model_type="qwen2_5_vl", vision_config=dict(
        depth=32, hidden_act="silu", hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3,
        out_hidden_size=3584, patch_size=14, spatial_merge_size=2, spatial_patch_size=14, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, temporal_patch_size=2,
        model_type="qwen2_5_vl")),
    "qwen2.5-vl-72b": dict(model_type="qwen2_5_vl", vision_config=dict(
        hidden_size=1280, intermediate_size=3456, out_hidden_size=8192, tokens_per_second=2,
        model_type="qwen2_5_vl")),
    # Third generation: the vision_config of each released config.json (model_type as released: "qwen3_vl" /
    # "qwen3_5" inside vision_config). Sources in PRESET_NOTES.
    "qwen3-vl-2b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_SMALL, out_hidden_size=2048)),
    "qwen3-vl-4b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_SMALL, out_hidden_size=2560)),
    "qwen3-vl-8b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_LARGE, out_hidden_size=4096)),
    "qwen3-vl-32b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_LARGE, out_hidden_size=5120)),
    # Qwen3-VL-Embedding and Qwen3-VL-Reranker: the Qwen3-VL model with another head; the tower is the base model's
    "qwen3-vl-embedding-2b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_SMALL, out_hidden_size=2048)),
    "qwen3-vl-embedding-8b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_LARGE, out_hidden_size=4096)),
    "qwen3-vl-reranker-2b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_SMALL, out_hidden_size=2048)),
    "qwen3-vl-reranker-8b": dict(model_type="qwen3_vl", vision_config=dict(_Q3_LARGE, out_hidden_size=4096)),
    "qwen3-vl-30b-a3b": dict(model_type="qwen3_vl_moe", vision_config=dict(_Q3_LARGE, out_hidden_size=2048)),
    "qwen3-vl-235b-a22b": dict(model_type="qwen3_vl_moe", vision_config=dict(_Q3_LARGE, out_hidden_size=4096)),
    "qwen3.5-0.8b": dict(model_type="qwen3_5", vision_config=dict(_Q35_SMALL, out_hidden_size=1024)),
    "qwen3.5-2b": dict(model_type="qwen3_5", vision_config=dict(_Q35_MEDIUM, out_hidden_size=2048)),
    "qwen3.5-4b": dict(model_type="qwen3_5", vision_config=dict(_Q35_MEDIUM, out_hidden_size=2560)),
    "qwen3.5-9b": dict(model_type="qwen3_5", vision_config=dict(_Q35, out_hidden_size=4096)),
    "qwen3.5-27b": dict(model_type="qwen3_5", vision_config=dict(_Q35, out_hidden_size=5120)),
    "qwen3.5-35b-a3b": dict(model_type="qwen3_5_moe", vision_config=dict(_Q35, out_hidden_size=2048)),
    "qwen3.6-27b": dict(model_type="qwen3_5", vision_config=dict(_Q35, out_hidden_size=5120)),
    "qwen3.6-35b-a3b": dict(model_type="qwen3_5_moe", vision_config=dict(_Q35, out_hidden_size=2048)),
    "qwen3.8-27b": dict(model_type="qwen3_5", vision_config=dict(_Q35, out_hidden_size=5120)),
    "qwen3.8-flash-next": dict(model_type="qwen4_exp", vision_config=dict(
        _Q35, out_hidden_size=2560, model_type="qwen4_exp_vision")),
    # The Omni models: config.json holds the tower under thinker_config.vision_config (preset_config_dict nests it)
    "qwen2.5-omni-3b": dict(model_type="qwen2_5_omni", vision_config=dict(_Q25_OMNI, out_hidden_size=2048)),
    "qwen2.5-omni-7b": dict(model_type="qwen2_5_omni", vision_config=dict(_Q25_OMNI, out_hidden_size=3584)),
    "qwen3-omni-30b-a3b": dict(model_type="qwen3_omni_moe", vision_config=dict(
        _Q3_LARGE, out_hidden_size=2048, model_type="qwen3_omni_moe_vision_encoder")),
    # Small towers with the real structure (head_dim 16, 2x2 merge, 4x4-merged-token windows).
    "tiny-qwen2-vl": dict(model_type="qwen2_vl", vision_config=dict(
        depth=3, embed_dim=64, mlp_ratio=4, num_heads=4, hidden_size=96, model_type="qwen2_vl")),
    "tiny-qwen2.5-vl": dict(model_type="qwen2_5_vl", vision_config=dict(
        depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96,
        fullatt_block_indexes=[1, 3], tokens_per_second=2, model_type="qwen2_5_vl")),
    # 8 x 8 learned positions, so that real images interpolate the table (up and down) as the 48 x 48 one does.
    "tiny-qwen3-vl": dict(model_type="qwen3_vl", vision_config=dict(
        depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96, num_position_embeddings=64,
        deepstack_visual_indexes=[1, 2], model_type="qwen3_vl")),
    "tiny-qwen3.5": dict(model_type="qwen3_5", vision_config=dict(
        depth=3, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96, num_position_embeddings=64,
        model_type="qwen3_5")),
    "tiny-qwen4-exp": dict(model_type="qwen4_exp", vision_config=dict(
        depth=3, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96, num_position_embeddings=64,
        model_type="qwen4_exp_vision")),
    "tiny-qwen2.5-omni": dict(model_type="qwen2_5_omni", vision_config=dict(
        depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96, fullatt_block_indexes=[1, 3],
        model_type="qwen2_5_omni_vision_encoder")),
    "tiny-qwen3-omni": dict(model_type="qwen3_omni_moe", vision_config=dict(
        depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=96, num_position_embeddings=64,
        deepstack_visual_indexes=[1, 2], model_type="qwen3_omni_moe_vision_encoder")),
}

PRESET_NOTES: dict[str, str] = {
    "qwen3-vl-2b": "vision_config as in the released config.json (reproduced in several public ports)",
    "qwen3-vl-4b": "vision_config as in the released config.json (reproduced in several public ports)",
    "qwen3-vl-8b": "depth 27, width 1152, 16 heads, DeepStack [8, 16, 24] from the released GGUF metadata; "
                   "out_hidden_size 4096 = the LLM width (not read from the config.json here)",
    "qwen3-vl-32b": "a public port's copy of the config (out_hidden_size 5120, DeepStack [8, 16, 24]); "
                    "not confirmed against the Hugging Face file",
    "qwen3-vl-embedding-2b": "the Qwen3-VL-2B tower: the model card of Qwen/Qwen3-VL-Embedding-2B names "
                             "Qwen/Qwen3-VL-2B-Instruct as its base model, embedding dimension 2048; not confirmed "
                             "against the config.json",
    "qwen3-vl-embedding-8b": "the Qwen3-VL-8B tower: the model card of Qwen/Qwen3-VL-Embedding-8B names "
                             "Qwen/Qwen3-VL-8B-Instruct as its base model, embedding dimension 4096; not confirmed "
                             "against the config.json",
    "qwen3-vl-reranker-2b": "NOT CONFIRMED: the Qwen3-VL-2B tower, as for Qwen3-VL-Embedding-2B (the Reranker series "
                            "is described on the same model card as built on Qwen3-VL)",
    "qwen3-vl-reranker-8b": "NOT CONFIRMED: the Qwen3-VL-8B tower, as for Qwen3-VL-Embedding-8B (the Reranker series "
                            "is described on the same model card as built on Qwen3-VL)",
    "qwen3-vl-30b-a3b": "NOT CONFIRMED: the 27-block 1152-wide tower of the large models with out_hidden_size = "
                        "the LLM width 2048 of Qwen3-30B-A3B",
    "qwen3-vl-235b-a22b": "NOT CONFIRMED: the 27-block 1152-wide tower with out_hidden_size = the LLM width 4096 "
                          "of Qwen3-235B-A22B",
    "qwen3.5-0.8b": "768 wide x 12 blocks, 12 heads, MLP 3072, out 1024: timm PR #2765 (qwen3_vit_88m) and "
                    "ohdearquant/lattice PR #669 (read from the checkpoint); not confirmed against the config.json",
    "qwen3.5-2b": "1024 x 24, 16 heads, MLP 4096, out 2048: timm PR #2765 (qwen3_vit_306m); not confirmed against "
                  "the config.json",
    "qwen3.5-4b": "1024 x 24, 16 heads, MLP 4096, out 2560: timm PR #2765 (qwen3_vit_306m); not confirmed against "
                  "the config.json",
    "qwen3.5-9b": "1152 x 27, MLP 4304, out 4096: timm PR #2765 (qwen3_vit_416m); not confirmed against the "
                  "config.json",
    "qwen3.5-27b": "vision_config as in the released config.json (reproduced in several public ports)",
    "qwen3.5-35b-a3b": "out_hidden_size 2048 from a public port's table; the rest as Qwen3.5-27B; not confirmed "
                       "against the Hugging Face file",
    "qwen3.6-27b": "NOT CONFIRMED: Qwen3.6 ships qwen3_5 configs; the 1152 x 27 tower with the 27B LLM width 5120",
    "qwen3.6-35b-a3b": "NOT CONFIRMED: Qwen3.6 ships qwen3_5_moe configs; the 1152 x 27 tower with the LLM width "
                       "2048 of the 35B-A3B",
    "qwen3.8-27b": "1152 x 27, out 5120, qwen3_5 vision config: timm issue #2764 / PR #2765 (qwen3_8_27b); not "
                   "confirmed against the config.json",
    "qwen3.8-flash-next": "model_type qwen4_exp (transformers' Qwen4ExpVisionModel); 1152 x 27, out 2560: timm PR "
                          "#2765 (qwen3_8_flash_next); not confirmed against the config.json",
    "qwen2.5-omni-3b": "NOT CONFIRMED: the Qwen2.5-VL tower of Qwen2.5-Omni-7B with out_hidden_size = the LLM width "
                       "2048 of Qwen2.5-3B",
    "qwen2.5-omni-7b": "the Qwen2.5-VL-7B tower (1280 x 32, MLP 3420, windows 112 px, full blocks 7/15/23/31) with "
                       "out 3584, as transformers' Qwen2_5OmniVisionEncoderConfig documents for Qwen/Qwen2.5-Omni-7B; "
                       "not confirmed against the config.json",
    "qwen3-omni-30b-a3b": "1152 x 27, MLP 4304, DeepStack [8, 16, 24] (transformers' Qwen3OmniMoeVisionEncoderConfig "
                          "defaults) with out_hidden_size 2048 = the LLM width of the 30B-A3B thinker; not confirmed "
                          "against the config.json",
}
"""Where each third-generation preset's values come from; a preset marked NOT CONFIRMED is a best reading."""

VISION_KEYS = frozenset(k for d in [*HF_VISION_DEFAULTS.values(), *(p["vision_config"] for p in PRESETS.values())]
                        for k in d) | set(ALIASES) | {"rope_theta", "rope_parameters", "window_size"}
"""The ``vision_config`` fields a preset may override (``save_random_checkpoint(..., depth=4)``)."""


def preset_config_dict(preset: str, **vision_overrides) -> dict:
    """The ``config.json`` content of a preset (a full VLM config with its ``vision_config``).

    ``vision_overrides`` replace vision_config fields, e.g. ``depth=4`` for a shallow full-width tower.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    family = family_of_model_type(base["model_type"])
    unknown = sorted(set(vision_overrides) - VISION_KEYS)
    if unknown:
        import difflib

        def hint(k):
            close = difflib.get_close_matches(k, VISION_KEYS, 1)
            return f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        hints = [hint(k) for k in unknown]
        raise ConfigError(f"unknown vision_config field(s) {', '.join(hints)}; the fields are "
                          f"{', '.join(sorted(VISION_KEYS))}")
    vision = dict(base["vision_config"], **vision_overrides)
    kind = FAMILY_TABLE[family]
    if kind.windows and "depth" in vision_overrides and "fullatt_block_indexes" not in vision_overrides:
        vision["fullatt_block_indexes"] = _fullatt_for_depth(vision)
    tokens = dict(kind.token_ids)
    head = dict(architectures=[kind.architectures[base["model_type"]]], model_type=base["model_type"])
    if kind.container:  # the Omni models: the thinker's config holds the tower and the token ids
        inner = dict(model_type=f"{base['model_type']}_thinker", vision_config=vision, **tokens)
        config = dict(head, **{kind.container: inner}, torch_dtype="bfloat16", qvlearn_preset=preset)
    else:
        config = dict(head, vision_config=vision, **tokens, torch_dtype="bfloat16", qvlearn_preset=preset)
    vision_config_from_dict(config, source=f"preset {preset}")  # validate early
    return config


def _fullatt_for_depth(vision: dict) -> list:
    """The full-attention blocks of a windowed preset cut to another depth (``depth=4``): the released ones that
    still exist, and the last block, which is full in every release (7, 15, 23, 31 of 32)."""
    depth = int(vision["depth"])
    released = vision.get("fullatt_block_indexes") or HF_VISION_DEFAULTS["qwen2_5_vl"]["fullatt_block_indexes"]
    return sorted({int(i) for i in released if int(i) < depth} | {depth - 1})


def preset_config(preset: str, **vision_overrides) -> VisionConfig:
    return vision_config_from_dict(preset_config_dict(preset, **vision_overrides), source=f"preset {preset}")
