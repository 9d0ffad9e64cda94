"""Exercises 14 · the capstone: your own encoder (notebooks/14_capstone.ipynb).

Write the whole forward from your own functions of exercises 01-08 (import them from this package), then check
it against transformers' own tower, stage by stage:  python -m exercises 14
Solution: exercises/solutions/ex14_capstone.py -- which is qvlearn/spec.py's forward (try first!)

Both functions take ``config`` (a qvlearn.VisionConfig: depth, width, num_heads, head_dim, window_size,
fullatt_block_indexes, deepstack_visual_indexes, ...), ``weights`` (the checkpoint's tensors by name, without the
``visual.`` prefix: ``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight``, ``merger.mlp.0.weight``, ...),
``pixel_values [N, C*T*P*P]`` and ``grid_thw [k, 3]``, and ``tap(name, array)``: call it with every stage you
compute, under its tap name (docs/porting.md, section 7: ``patch_embeds``, ``cos``, ``sin``, ``cu_seqlens``,
``window_index``, ``cu_window_seqlens``, ``blocks.{i}``, ``merger``, ``embeddings``, ...). The checker compares
every stage you tap with transformers' and names the first one that departs. Return the embeddings.
"""


def encoder_forward(config, weights, pixel_values, grid_thw, tap):
    """Qwen2.5-VL: patch embedding, 2-D RoPE, window order, the blocks (RMSNorm, windowed and full attention,
    the SiLU-gated MLP), the merger, back to natural order. Returns embeddings [N/4, out_hidden_size]."""
    raise NotImplementedError


def encoder_forward_qwen3(config, weights, pixel_values, grid_thw, tap):
    """Qwen3-VL (notebook 13): the Conv3d with its bias, the interpolated position table, LayerNorm blocks with
    gelu_pytorch_tanh and full attention per frame pair, the DeepStack mergers (tap ``deepstack.{j}``), the merger.
    Returns embeddings [N/4, out_hidden_size]."""
    raise NotImplementedError
