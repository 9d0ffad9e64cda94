"""mlx-vlm's vision tower as a qvlearn tap file: its module paths mapped to tap stages.

mlx-vlm (``mlx_vlm/models/qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``; ``qwen3_5`` reuses Qwen3-VL's tower) builds
the tower as ``VisionModel(pixel_values, grid_thw)``. MLX has no forward hooks, so the conformance runner
(``tools/conformance/mlxvlm_runner.py``) wraps the submodules this table names in a callable that keeps their output,
and writes them by module path. :func:`taps_from_mlxvlm` turns such a set of arrays into the stages of
:data:`qvlearn.tools.taps.TAP_TABLE`, so that ``python -m qvlearn compare`` judges mlx-vlm as it judges any port::

    arrays = dict(np.load("mlx-case.npz"))           # {"blocks.0.norm1": ..., "embeddings": ..., ...}
    stages = taps_from_mlxvlm(arrays, "qwen2_5_vl", pixel_values=pv, grid_thw=grid)
    save_taps("mlxvlm.safetensors", stages, source="mlx-vlm")

The table :data:`MLXVLM_STAGES` is the whole mapping; ``docs/conformance.md`` prints it.
"""

from __future__ import annotations

import numpy as np

from ..errors import TapError
from ..families import family as family_entry
from .taps import add_natural_order

MLXVLM_STAGES = (
    # (mlx-vlm module path, tap stage, the family it applies to ("all" or a family id), what it is in mlx-vlm)
    ("patch_embed", "patch_embeds", "all", "PatchEmbed: the Conv3d (an nn.Conv3d on channels-last patches)"),
    ("fast_pos_embed_interpolate", "pos_embeds", "third generation", "the bilinear interpolation of pos_embed, "
                                                                      "merge-block order"),
    ("window_index", "window_index", "qwen2_5_vl", "get_window_index's first result"),
    ("blocks.{i}.norm1", "blocks.{i}.norm1", "all", "norm1 (nn.RMSNorm for Qwen2.5-VL, nn.LayerNorm otherwise)"),
    ("blocks.{i}.attn", "blocks.{i}.attn", "all", "Attention, after proj"),
    ("blocks.{i}.norm2", "blocks.{i}.norm2", "all", "norm2"),
    ("blocks.{i}.mlp.fc1", "blocks.{i}.mlp.fc1", "qwen2_vl", "fc1"),
    ("blocks.{i}.mlp.activation_fn", "blocks.{i}.mlp.act", "qwen2_vl", "nn.GELU(approx='fast'): x sigmoid(1.702 x)"),
    ("blocks.{i}.mlp.gate_proj", "blocks.{i}.mlp.gate", "qwen2_5_vl", "gate_proj"),
    ("blocks.{i}.mlp.up_proj", "blocks.{i}.mlp.up", "qwen2_5_vl", "up_proj (silu(gate) * up is inline: not tapped)"),
    ("blocks.{i}.mlp.linear_fc1", "blocks.{i}.mlp.fc1", "third generation", "linear_fc1"),
    ("blocks.{i}.mlp.act_fn", "blocks.{i}.mlp.act", "third generation", "nn.GELU(approx='tanh')"),
    ("blocks.{i}.mlp", "blocks.{i}.mlp", "all", "the MLP's output"),
    ("blocks.{i}", "blocks.{i}", "all", "block i's output (window order for Qwen2.5-VL)"),
    ("merger.ln_q", "merger.ln_q", "second generation", "the merger's norm"),
    ("merger.norm", "merger.norm", "third generation", "the merger's norm"),
    ("merger", "merger", "all", "the merger's output (window order for Qwen2.5-VL)"),
    ("embeddings", "embeddings", "all", "VisionModel's output (its first result for the third generation)"),
    ("deepstack.{j}", "deepstack.{j}", "qwen3_vl", "VisionModel's second result: the DeepStack features"),
    ("processor.pixel_values", "pixel_values", "all", "Qwen3VLImageProcessor's pixel_values (mlx-vlm's numpy "
                                                      "processor, used for every Qwen-VL family)"),
    ("processor.grid_thw", "grid_thw", "all", "its image_grid_thw"),
)
"""mlx-vlm's module path, the tap stage, the families, what it is. A family id, ``second generation`` (Qwen2-VL,
Qwen2.5-VL) or ``third generation`` (Qwen3-VL, Qwen3.5), or ``all``."""

_GENERATION = {"qwen2_vl": "second generation", "qwen2_5_vl": "second generation", "qwen3_vl": "third generation",
               "qwen3_5": "third generation"}


def applies(families: str, family: str) -> bool:
    """Whether a row of :data:`MLXVLM_STAGES` applies to ``family``."""
    return families in ("all", family, _GENERATION.get(family))


def taps_from_mlxvlm(arrays: dict, family: str, *, pixel_values=None, grid_thw=None, preprocessing: bool = False
                     ) -> dict:
    """The tap stages of one mlx-vlm encode.

    ``arrays``: the runner's arrays by module path; ``pixel_values`` and ``grid_thw``: the inputs it encoded (the
    runner encodes given inputs, so they are stages of the file too). With ``preprocessing``, ``pixel_values`` and
    ``grid_thw`` are mlx-vlm's processor's instead (then the encode must have been of those).
    Raises :class:`TapError` when the family is not one mlx-vlm runs or an output is missing.
    """
    if family not in _GENERATION:
        raise TapError(f"mlx-vlm's Qwen-VL towers are {', '.join(_GENERATION)}; {family!r} is not one of them")
    if "embeddings" not in arrays or "blocks.0" not in arrays:
        raise TapError(f"the arrays hold {', '.join(sorted(arrays)[:8])}, ...: no 'embeddings' or 'blocks.0' (was "
                       "the runner's output given?)")
    entry = family_entry(family)
    stages: dict[str, np.ndarray] = {}
    depth = 0
    while f"blocks.{depth}" in arrays:
        depth += 1
    n_deepstack = 0
    while f"deepstack.{n_deepstack}" in arrays:
        n_deepstack += 1
    for path, stage, families, _ in MLXVLM_STAGES:
        if not applies(families, family) or path.startswith("processor."):
            continue
        pairs = [(path.format(i=i), stage.format(i=i)) for i in range(depth)] if "{i}" in path else \
            [(path.format(j=j), stage.format(j=j)) for j in range(n_deepstack)] if "{j}" in path else [(path, stage)]
        for p, s in pairs:
            if p in arrays:
                stages[s] = np.asarray(arrays[p])
    if preprocessing:
        for path in ("processor.pixel_values", "processor.grid_thw"):
            if path not in arrays:
                raise TapError(f"{path!r} is not in the arrays: the runner ran no preprocessing (no image given)")
        stages["pixel_values"] = np.asarray(arrays["processor.pixel_values"], np.float32)
        stages["grid_thw"] = np.asarray(arrays["processor.grid_thw"], np.int64).reshape(-1, 3)
    elif pixel_values is not None:
        stages["pixel_values"] = np.asarray(pixel_values, np.float32)
        stages["grid_thw"] = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    stages["last_hidden_state"] = stages[f"blocks.{depth - 1}"]
    if entry.windows and "window_index" in stages:
        add_natural_order(stages)
    return stages
