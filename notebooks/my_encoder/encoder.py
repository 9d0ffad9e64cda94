"""my_encoder.encoder: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import qvlearn

from my_encoder.attention import block
from my_encoder.merger import merger
from my_encoder.patch_embed import patch_embed
from my_encoder.rope import inv_freq, rotary_cos_sin, rotary_position_ids
from my_encoder.windows import cu_seqlens, inverse_permutation, patch_permutation, window_index


def encode(path, pixel_values, grid_thw):
    """Your encoder on a checkpoint directory: every stage, by transformers' names (the last one: embeddings)."""
    cfg = qvlearn.read_config(path)
    w = qvlearn.load_weights(path, cfg)                                # checkpoint name -> float32 array
    rms = gated = not cfg.uses_layer_norm                               # Qwen2.5-VL: RMSNorm and the gated MLP
    stages = {}
    h = stages["patch_embeds"] = patch_embed(pixel_values, w["patch_embed.proj.weight"])     # [N, D]
    ids = stages["position_ids"] = rotary_position_ids(grid_thw)
    cos, sin = rotary_cos_sin(ids, inv_freq(cfg.head_dim, cfg.rope_theta))                   # [N, head_dim]
    full = stages["cu_seqlens"] = cu_seqlens(grid_thw)                 # one segment per frame pair
    windows = full
    if cfg.uses_windows:
        w_index, windows = window_index(grid_thw, cfg.window_size, cfg.patch_size)
        stages["window_index"], stages["cu_window_seqlens"] = w_index, windows
        rows = patch_permutation(w_index)                               # window order on patch rows
        h, cos, sin = h[rows], cos[rows], sin[rows]                     # tokens and their angles move together
    for i in range(cfg.depth):
        blk = {k.split(".", 2)[2]: v for k, v in w.items() if k.startswith(f"blocks.{i}.")}
        segments = full if cfg.is_full_attention_block(i) else windows
        h = stages[f"blocks.{i}"] = block(h, blk, cos, sin, segments, cfg.num_heads, rms, gated)
    m = {k[len("merger."):]: v for k, v in w.items() if k.startswith("merger.")}
    out = stages["merger"] = merger(h, m, rms)                          # [N/4, out], in window order
    stages["embeddings"] = out[inverse_permutation(w_index)] if cfg.uses_windows else out     # natural order
    return stages
