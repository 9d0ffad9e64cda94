"""llama.cpp's vision tower as a qvlearn tap file: its tensor names mapped to tap stages.

llama.cpp (``tools/mtmd``: ``clip.cpp`` and ``models/qwen2vl.cpp`` / ``models/qwen3vl.cpp``) names the tensors of
its vision graph with ``cb(tensor, "ln1", il)`` -> ``ln1-0``. An eval callback on the public mtmd API sees them
(``tools/conformance/harness.cpp`` writes each as ``NAME.npy``, in NumPy's axis order), and so do the graph inputs
the nodes read (``inp_raw``, ``positions``, ``inv_window_idx``). :func:`taps_from_llamacpp` turns such a set of
arrays into the stages of :data:`qvlearn.tools.taps.TAP_TABLE`, so that ``python -m qvlearn compare`` judges
llama.cpp exactly as it judges any port::

    arrays = read_dump("dump/")                      # {"ln1-0": ..., "inp_raw": ..., ...}
    stages = taps_from_llamacpp(arrays, "qwen2_5_vl", embeddings=out, out_width=3584)
    save_taps("llamacpp.safetensors", stages, source="llama.cpp")

The table :data:`LLAMACPP_STAGES` is the whole mapping; ``docs/conformance.md`` prints it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TapError
from ..families import family as family_entry
from .taps import add_natural_order

LLAMACPP_STAGES = (
    # (llama.cpp name, tap stage, the families it applies to ("all", "gated", "fc"), what the name is in clip.cpp)
    ("inp_raw", "pixel_values", "all", "the graph input [1, 3, H, W] (normalised image), patchified in merge-block "
                                       "order with its temporal copy"),
    ("positions", "position_ids", "all", "M-RoPE positions [4*N]: the first N are rows, the next N columns"),
    ("inv_window_idx", "window_index", "windowed", "the window order (entry r: the natural merged token of row r)"),
    ("patch_bias", "patch_embeds", "third generation", "the Conv3d (two Conv2d) plus its bias"),
    ("inp_pos_emb.b", "pos_embeds", "third generation", "the interpolated table, the second operand of inp_pos_emb "
                                                        "(patch_bias + table), which the harness reads; without it, "
                                                        "inp_pos_emb - patch_bias"),
    ("ln1-{i}", "blocks.{i}.norm1", "all", "norm1's output"),
    ("Qcur_rope-{i}", "blocks.{i}.attn.q", "all", "q after M-RoPE, before the scale [N, heads, head_dim]"),
    ("Kcur_rope-{i}", "blocks.{i}.attn.k", "all", "k after M-RoPE"),
    ("attn_out-{i}", "blocks.{i}.attn", "all", "attention after the output projection"),
    ("ffn_inp-{i}", "blocks.{i}.residual1", "all", "x + attn"),
    ("ffn_inp_normed-{i}", "blocks.{i}.norm2", "all", "norm2's output"),
    ("ffn_gate_b-{i}", "blocks.{i}.mlp.gate", "gated", "gate_proj with its bias"),
    ("ffn_up_b-{i}", "blocks.{i}.mlp.up", "gated", "up_proj with its bias"),
    ("ffn_swiglu-{i}", "blocks.{i}.mlp.act", "gated", "silu(gate) * up"),
    ("ffn_up_b-{i}", "blocks.{i}.mlp.fc1", "fc", "fc1 with its bias"),
    ("ffn_gelu_quick-{i}", "blocks.{i}.mlp.act", "fc", "QuickGELU(fc1) (Qwen2-VL)"),
    ("ffn_gelu-{i}", "blocks.{i}.mlp.act", "fc", "GELU(fc1) (the third generation; tanh form)"),
    ("ffn_out-{i}", "blocks.{i}.mlp", "all", "the MLP's output"),
    ("layer_out-{i}", "blocks.{i}", "all", "block i's output (window order where windowed)"),
    ("norm_b-{L} / norm_w-{L}", "merger.ln_q / merger.norm", "all", "the post norm, clip.cpp's build_norm(..., "
                                                                   "il = n_layer): with its bias where it has one"),
    ("(the output)", "embeddings", "all", "mtmd_get_output_embd: the first out_hidden_size columns"),
    ("(the output)", "deepstack.{j}", "Qwen3-VL", "the next out_hidden_size columns, one block per DeepStack merger"),
)
"""llama.cpp's name, the tap stage, the families, what it is. A name seen twice in one graph keeps its first
occurrence (the block's ``ffn_up_b-8`` before the DeepStack merger's of the same layer)."""


def read_dump(directory) -> dict[str, np.ndarray]:
    """The ``NAME.npy`` files the harness wrote, by name."""
    directory = Path(directory)
    files = sorted(directory.glob("*.npy"))
    if not files:
        raise TapError(f"no .npy files in {directory}: run the harness with --dump {directory} first")
    return {f.stem: np.load(f) for f in files}


def _family_kind(family: str) -> tuple[str, bool, bool, int]:
    entry = family_entry(family)
    return f"merger.{entry.merger_names[0]}", entry.mlp == "gated", entry.windows, entry.preprocessing["patch_size"]


def taps_from_llamacpp(arrays: dict, family: str, *, embeddings: np.ndarray, out_width: int,
                       n_deepstack: int = 0, merge_size: int = 2, temporal_patch_size: int = 2) -> dict:
    """The tap stages of one llama.cpp encode.

    ``arrays``: llama.cpp's tensors by name (:func:`read_dump`); ``embeddings``: the image chunk's output
    ``[tokens, out_width * (1 + n_deepstack)]``; ``family``: the tower's family id (``qwen2_5_vl``, ...).
    Raises :class:`TapError` when a tensor the family needs is missing or the output's width does not fit.
    """
    from ..engine.window_index import inverse_permutation, patch_permutation
    from ..preprocessing import patchify

    norm_stage, gated, windowed, patch = _family_kind(family)
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != out_width * (1 + n_deepstack):
        raise TapError(f"the output is {embeddings.shape}, not [tokens, {out_width} x (1 + {n_deepstack} DeepStack "
                       "features)]: give out_width (out_hidden_size) and the number of DeepStack mergers")
    for name in ("inp_raw", "positions", "layer_out-0"):
        if name not in arrays:
            raise TapError(f"llama.cpp's {name!r} is not in the dump (it has {', '.join(sorted(arrays)[:8])}, ...): "
                           "was the harness run with --dump on a Qwen-VL mmproj?")
    stages: dict[str, np.ndarray] = {}
    raw = np.asarray(arrays["inp_raw"], np.float32)
    frames = raw.reshape(-1, *raw.shape[-3:])  # [1 or 2, 3, H, W]
    if frames.shape[0] == 1:
        frames = np.broadcast_to(frames, (temporal_patch_size, *frames.shape[1:]))  # a still image's copy
    stages["pixel_values"], grid = patchify(np.ascontiguousarray(frames), patch, merge_size, temporal_patch_size)
    stages["grid_thw"] = np.asarray([grid], np.int64)
    n = grid[0] * grid[1] * grid[2]
    pos = np.asarray(arrays["positions"]).reshape(-1)
    if pos.size != 4 * n:
        raise TapError(f"positions holds {pos.size} values, not 4 x {n} patches")
    position_ids = np.stack([pos[:n], pos[n:2 * n]], axis=1).astype(np.int64)
    if windowed and "inv_window_idx" in arrays:
        stages["window_index"] = np.asarray(arrays["inv_window_idx"]).reshape(-1).astype(np.int64)
        # clip.cpp writes a windowed tower's positions in window order (row r: natural patch rows[r])
        rows = patch_permutation(stages["window_index"], merge_size)
        position_ids = position_ids[inverse_permutation(rows)]
    stages["position_ids"] = position_ids
    if "patch_bias" in arrays:
        stages["patch_embeds"] = np.asarray(arrays["patch_bias"], np.float32).reshape(n, -1)
        if "inp_pos_emb.b" in arrays:  # the harness reads the table where it is added
            stages["pos_embeds"] = np.asarray(arrays["inp_pos_emb.b"], np.float32).reshape(n, -1)
        elif "inp_pos_emb" in arrays:  # else the difference, exact only to the rounding of the sum
            both = np.asarray(arrays["inp_pos_emb"], np.float64).reshape(n, -1)
            stages["pos_embeds"] = (both - stages["patch_embeds"].astype(np.float64)).astype(np.float32)
    depth = 0
    while f"layer_out-{depth}" in arrays:
        depth += 1
    mlp = "gated" if gated else "fc"
    per_block = [(name.removesuffix("-{i}"), stage.removeprefix("blocks.{i}.")) for name, stage, families, _
                 in LLAMACPP_STAGES if name.endswith("-{i}") and stage != "blocks.{i}" and families in ("all", mlp)]
    for i in range(depth):
        for name, stage in per_block:
            if f"{name}-{i}" in arrays and f"blocks.{i}.{stage}" not in stages:
                a = np.asarray(arrays[f"{name}-{i}"], np.float32)
                stages[f"blocks.{i}.{stage}"] = a.reshape(n, *a.shape[-2:]) if stage in ("attn.q", "attn.k") \
                    else a.reshape(n, -1)
        stages[f"blocks.{i}"] = np.asarray(arrays[f"layer_out-{i}"], np.float32).reshape(n, -1)
    stages["last_hidden_state"] = stages[f"blocks.{depth - 1}"]
    for name in (f"norm_b-{depth}", f"norm_w-{depth}"):
        if name in arrays:
            stages[norm_stage] = np.asarray(arrays[name], np.float32).reshape(n, -1)
            break
    stages["embeddings"] = np.ascontiguousarray(embeddings[:, :out_width])
    for j in range(n_deepstack):
        stages[f"deepstack.{j}"] = np.ascontiguousarray(embeddings[:, out_width * (j + 1):out_width * (j + 2)])
    if windowed and "window_index" in stages:
        add_natural_order(stages)
    return stages
