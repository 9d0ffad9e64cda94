"""The kernel table: every step :class:`qvlearn.VisionEncoder` runs, by name, in one frozen dataclass.

``KERNELS`` is the engine's table. A tool that wants another step builds another table with
``dataclasses.replace(KERNELS, name=function)`` (or :meth:`Kernels.replace`) and passes it to
``VisionEncoder(..., kernels=table)`` or ``encoder.with_kernels(table)``: the bug zoo swaps one or two entries
(:mod:`qvlearn.tools.bugs`), the precision emulation wraps ``linear``, ``patch_embed`` and ``finish``
(:mod:`qvlearn.tools.precision`), the benchmark wraps ``project``, ``attend`` and ``finish`` with timers
(:mod:`qvlearn.tools.bench`). These entries and their signatures are the engine's documented hook points; nothing
in qvlearn replaces a module's attribute.

Host-side index builders (NumPy, once per forward): ``position_ids``, ``inv_freq``, ``cu_seqlens``,
``window_index``, ``window_inverse``, ``full_attention``, ``position_interpolation``.
Array kernels (NumPy or CuPy arrays): the rest. The block steps ``project``, ``finish`` and the ``mlp_*`` and
``merger`` entries take the table itself as their first argument, and call the finer kernels through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from array_api_compat import array_namespace

from . import block as steps
from .attention import parallel_segment_attention
from .layers import ACTIVATIONS, gelu, linear
from .merger import merge_2x2, restore_order
from .norms import layer_norm, rms_norm
from .patch_embed import patch_embed
from .pos_embed import interpolated_pos_embed, interpolation_indices_and_weights
from .rotary import apply_rotary, inv_freq, rotary_cos_sin, rotary_position_ids
from .window_index import cu_seqlens, inverse_permutation, window_index


def is_full_attention_block(config, i: int) -> bool:
    """Whether block ``i`` attends over whole frame pairs (``cu_seqlens``) or within windows."""
    return config.is_full_attention_block(i)


def split_qkv(qkv, num_heads: int):
    """The fused projection's output ``[N, 3D]`` viewed as ``[N, 3, heads, d]``: ``[q (all heads) | k | v]``,
    each head-major. Returns ``q, k, v [N, heads, d]``."""
    xp = array_namespace(qkv)
    n, three_d = qkv.shape
    qkv = xp.reshape(qkv, (n, 3, num_heads, three_d // (3 * num_heads)))
    return qkv[:, 0, ...], qkv[:, 1, ...], qkv[:, 2, ...]


def window_order(cos, sin, rows):
    """The rotary tables follow their tokens into window order (a port that forgets it rotates every q and k
    by another token's angles)."""
    xp = array_namespace(cos)
    return xp.take(cos, rows, axis=0), xp.take(sin, rows, axis=0)


def deepstack_taps(config) -> dict:
    """Which block outputs feed which DeepStack merger: block ``deepstack_visual_indexes[j]`` -> merger ``j``
    (Qwen3-VL's 8, 16, 24 -> 0, 1, 2; empty for the families without DeepStack)."""
    return {int(b): j for j, b in enumerate(config.deepstack_visual_indexes)}


@dataclass(frozen=True)
class Kernels:
    """The steps of the forward. Each entry's docstring is the contract a replacement keeps."""

    # -- host-side indices (NumPy in, NumPy out)
    position_ids: Callable = rotary_position_ids           # (grid_thw, merge) -> [N, 2] (row, col)
    inv_freq: Callable = inv_freq                          # (head_dim, theta) -> [head_dim/4]
    cu_seqlens: Callable = cu_seqlens                      # (grid_thw, merge) -> [frame pairs + 1], from 0
    window_index: Callable = window_index                  # (grid_thw, merge, window px, patch px) -> (index, cu)
    window_inverse: Callable = inverse_permutation         # (window_index) -> its inverse (argsort)
    full_attention: Callable = is_full_attention_block     # (config, i) -> bool
    position_interpolation: Callable = interpolation_indices_and_weights  # (grid_thw, side, merge) -> (idx, wts)
    deepstack_taps: Callable = deepstack_taps              # (config) -> {block index: DeepStack merger j}
    # -- arrays
    patch_embed: Callable = patch_embed                    # (pixel_values [N, C*T*P*P], weight [C*T*P*P, D]) -> [N, D]
    position_embed: Callable = interpolated_pos_embed      # (table [side^2, D], idx [4, N], wts [4, N]) -> [N, D]
    rotary: Callable = rotary_cos_sin                      # (position_ids, inv_freq) -> cos, sin [N, head_dim]
    window_order: Callable = window_order                  # (cos, sin, rows) -> cos, sin in window order
    linear: Callable = linear                              # (x, weight (out, in), bias) -> x @ weight.T + bias
    layer_norm: Callable = layer_norm                      # (x, weight, bias, eps)
    rms_norm: Callable = rms_norm                          # (x, weight, eps)
    activations: Mapping = field(default_factory=lambda: MappingProxyType(dict(ACTIVATIONS)))  # hidden_act -> function
    merger_act: Callable = gelu                            # the mergers' exact (erf) GELU
    split_qkv: Callable = split_qkv                        # (qkv [N, 3D], heads) -> q, k, v [N, heads, d]
    rotate: Callable = apply_rotary                        # (x [N, heads, d], cos, sin) -> RoPE by halves
    project: Callable = steps.project                      # (K, x, w, cfg, cos, sin) -> Projection (step 1)
    attend: Callable = parallel_segment_attention          # (q, k, v, plan, scale, chunk_bytes) -> [N, heads, d]
    finish: Callable = steps.finish                        # (K, x, mixed [N, D], w, cfg, tap) -> block output
    mlp_fc: Callable = steps.mlp_fc                        # (K, x, w, cfg, tap)
    mlp_gated: Callable = steps.mlp_gated                  # (K, x, w, cfg, tap)
    block: Callable = steps.vision_block                   # (K, x, w, cfg, cos, sin, plan, chunk_bytes, tap)
    merger: Callable = steps.merger                        # (K, x, w, cfg, postshuffle, tap) -> [N/4, out]
    merge_2x2: Callable = merge_2x2                        # ([N, D], merge_unit) -> [N/4, 4D]
    restore_order: Callable = restore_order                # (merged, inverse) -> natural order

    def replace(self, **entries) -> "Kernels":
        """This table with some entries replaced, checked by name: ``KERNELS.replace(rotate=my_rotate)``."""
        unknown = sorted(set(entries) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"no kernel named {', '.join(map(repr, unknown))}; the table has "
                              f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **entries)


KERNELS = Kernels()
"""The engine's kernel table."""

__all__ = ["KERNELS", "Kernels", "deepstack_taps", "is_full_attention_block", "split_qkv", "window_order"]
