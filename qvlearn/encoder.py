"""The whole vision encoder of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5.

Explained in ``notebooks/08_whole_encoder.ipynb`` (and ``notebooks/13_qwen3_vl.ipynb`` for the third generation).

    pixel_values [N, C*T*P*P] --patch_embed (+ bias in Qwen3)--> [N, D]
      (Qwen3) + the learned position table, interpolated to the grid
      (2.5-VL) permute rows, cos and sin into window order
      --blocks (full attention per frame pair, or per window in 2.5-VL's window blocks)--> [N, D]
        (Qwen3-VL) after the blocks at deepstack_visual_indexes: a DeepStack merger -> [N/4, out_hidden_size]
      --merger: norm, 2x2 concat, MLP--> [N/4, out_hidden_size]
      (2.5-VL) rows back to natural order
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ml_dtypes
import numpy as np
from array_api_compat import array_namespace

from .attention import DEFAULT_CHUNK_BYTES, SegmentPlan
from .backend import Backend, get_backend, supports_out, widen_bf16
from .block import norm, vision_block, vision_block_tapped
from .config import VisionConfig, read_config
from .errors import BackendError, ConfigError, InputError
from .grid import as_grid_thw, num_patches
from .merger import merge_2x2, merger_mlp, merger_qwen3, restore_order
from .patch_embed import conv3d_weight_as_matrix, patch_embed
from .pos_embed import interpolated_pos_embed, interpolation_indices_and_weights
from .rotary import inv_freq, rotary_cos_sin, rotary_position_ids
from .weights import load_weights
from . import window_index as window_index_module
from .window_index import cu_seqlens, inverse_permutation, patch_permutation, window_index

Tap = Callable[[str, object], None]

STAGES = ("pixel_values", "grid_thw", "patch_embeds", "pos_embeds", "position_ids", "cos", "sin", "cu_seqlens",
          "window_index", "cu_window_seqlens", "blocks.{i}", "deepstack.{j}", "last_hidden_state", "merger.ln_q",
          "merger.norm", "merger", "embeddings")
"""Names of the stages a forward reports to a tap, in order (each family reports its own subset:
:func:`qvlearn.taps.stage_names`). Float stages are backend arrays, index stages host NumPy arrays. For
Qwen2.5-VL, ``patch_embeds``, ``cos`` and ``sin`` are in natural order, while ``blocks.{i}``,
``last_hidden_state``, ``merger.ln_q`` and ``merger`` are in window order (as transformers reports them);
``embeddings`` is in natural order. Qwen3-VL / Qwen3.5 report ``patch_embeds`` (the Conv3d with its bias),
``pos_embeds`` (the interpolated position table) and ``merger.norm``; Qwen3-VL also ``deepstack.{j}``, the
output of DeepStack merger j. Blocks named in ``block_taps`` also report ``blocks.{i}.<name>`` for every name
of :data:`qvlearn.block.BLOCK_STAGES`; :meth:`VisionEncoder.trace` adds ``blocks.{i}.natural`` (Qwen2.5-VL:
block i's output in natural order)."""


def rotary_to_window_order(cos, sin, rows):
    """The rotary tables follow their tokens into window order (a port that forgets it rotates every q and k
    by another token's angles)."""
    xp = array_namespace(cos)
    return xp.take(cos, rows, axis=0), xp.take(sin, rows, axis=0)


class VisionEncoder:
    """A loaded vision tower on one backend. Call it: ``encoder(pixel_values, grid_thw)``."""

    def __init__(self, config: VisionConfig, weights: dict[str, np.ndarray], backend: str | Backend | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, weights_dtype: str = "float32"):
        """``weights_dtype="bfloat16"`` keeps the block and merger weights resident as bf16 (half the
        memory) and widens one block at a time to float32 during the forward; the results are identical
        for a bf16 checkpoint (the widening is exact), and lossy for a float32/float16 one."""
        if weights_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"weights_dtype must be 'float32' or 'bfloat16', got {weights_dtype!r}")
        self.config = config
        self.backend = get_backend(backend)
        self.chunk_bytes = int(chunk_bytes)
        self.weights_dtype = weights_dtype
        if weights_dtype == "bfloat16" and not supports_out(self.backend.xp):
            raise BackendError("weights_dtype='bfloat16' needs the numpy or cupy backend")

        def to(array):
            if weights_dtype == "bfloat16":  # keep the bf16 bit patterns; widened per block in forward
                array = np.asarray(array)
                if array.dtype != ml_dtypes.bfloat16:
                    array = array.astype(ml_dtypes.bfloat16)
                return self.backend.asarray(np.ascontiguousarray(array).view(np.uint16))
            return self.backend.asarray(array)

        # Conv3d kernel (D, C, T, P, P) -> matrix (D, C*T*P*P): the only reshape of a checkpoint tensor.
        self.patch_embed_weight = to(conv3d_weight_as_matrix(weights["patch_embed.proj.weight"]))
        self.patch_embed_bias = self.pos_table = None
        self.deepstack_mergers = []
        if config.third_generation:
            self.patch_embed_bias = to(weights["patch_embed.proj.bias"])
            self.pos_table = to(weights["pos_embed.weight"])  # [side*side, D]
            for j in range(len(config.deepstack_visual_indexes)):
                prefix = f"deepstack_merger_list.{j}."
                self.deepstack_mergers.append({k[len(prefix):]: to(v) for k, v in weights.items()
                                               if k.startswith(prefix)})
        self.blocks = []
        for i in range(config.depth):
            prefix = f"blocks.{i}."
            self.blocks.append({k[len(prefix):]: to(v) for k, v in weights.items() if k.startswith(prefix)})
        self.merger = {k[len("merger."):]: to(v) for k, v in weights.items() if k.startswith("merger.")}
        self.inv_freq = self.backend.asarray(inv_freq(config.head_dim, config.rope_theta))

    def _float32(self, array):
        """A resident weight as a float32 backend array (widened if kept in bf16)."""
        return array if self.weights_dtype == "float32" else widen_bf16(array)

    def _float32_dict(self, weights: dict) -> dict:
        return {k: self._float32(v) for k, v in weights.items()}

    def weight_bytes(self) -> int:
        """Bytes the resident weights take."""
        arrays = [self.patch_embed_weight, *self.merger.values(), *(v for b in self.blocks for v in b.values()),
                  *(v for d in self.deepstack_mergers for v in d.values())]
        arrays += [a for a in (self.patch_embed_bias, self.pos_table) if a is not None]
        return int(sum(a.size * a.dtype.itemsize for a in arrays))

    def __repr__(self) -> str:
        return f"VisionEncoder({self.config.summary()}, backend={self.backend.name!r})"

    @property
    def family(self) -> str:
        return self.config.family

    # -- input checks ---------------------------------------------------------------------------------
    def _check_inputs(self, pixel_values, grid_thw):
        cfg, be = self.config, self.backend
        grid = as_grid_thw(grid_thw, cfg.spatial_merge_size)
        rows = num_patches(grid)
        if be.owns(pixel_values) and not isinstance(pixel_values, np.ndarray):
            x = pixel_values
            shape = tuple(x.shape)
            xp = be.xp
            if len(shape) != 2 or shape[1] != cfg.patch_dim or shape[0] != rows:
                self._shape_error(shape, rows, grid)
            if not xp.isdtype(x.dtype, "real floating"):
                raise InputError(f"pixel_values must be floating point (normalised pixels), got dtype {x.dtype}; "
                                 "pass what qvlearn.preprocess returns")
            if x.dtype != xp.float32:
                x = xp.astype(x, xp.float32)
            if not bool(xp.all(xp.isfinite(x))):
                raise InputError("pixel_values hold NaN or Inf; check the preprocessing")
            return x, grid
        try:
            host = np.asarray(pixel_values)
        except Exception as exc:
            raise InputError(f"pixel_values must be an array, got {type(pixel_values).__name__}: {exc}") from None
        if host.ndim != 2 or host.shape[1] != cfg.patch_dim or host.shape[0] != rows:
            self._shape_error(host.shape, rows, grid)
        if host.dtype.kind != "f":
            hint = (" (raw 0..255 pixels? pixel_values are normalised floats)" if host.dtype.kind in "iu" else "")
            raise InputError(f"pixel_values must be floating point, got dtype {host.dtype}{hint}; pass what "
                             "qvlearn.preprocess returns")
        host = host.astype(np.float32, copy=False)
        if not np.all(np.isfinite(host)):
            bad = int(np.sum(~np.all(np.isfinite(host), axis=1)))
            raise InputError(f"pixel_values hold NaN or Inf in {bad} of {rows} rows; check the preprocessing")
        return be.asarray(host), grid

    def _shape_error(self, shape, rows, grid):
        cfg = self.config
        if len(shape) == 2 and shape[1] != cfg.patch_dim:
            from .preprocessing import FAMILY_PREPROCESSING

            other = [f for f, d in FAMILY_PREPROCESSING.items()
                     if cfg.in_channels * cfg.temporal_patch_size * d["patch_size"] ** 2 == shape[1]]
            if other:
                raise InputError(
                    f"pixel_values rows of {shape[1]} values are {' / '.join(other)} patches ({shape[1]} = "
                    f"{cfg.in_channels}*{cfg.temporal_patch_size}*P*P with another P), but this is a {cfg.family} "
                    f"encoder, which takes {cfg.patch_dim} ({cfg.patch_size}-px patches). Preprocess for it: "
                    "qvlearn.preprocess(..., family=encoder.family)")
        raise InputError(
            f"pixel_values of shape {list(shape)} do not fit grid_thw {grid.tolist()}: expected "
            f"[{rows}, {cfg.patch_dim}] (sum of t*h*w rows, each C*T*P*P = {cfg.in_channels}*"
            f"{cfg.temporal_patch_size}*{cfg.patch_size}*{cfg.patch_size} values). Pass the pixel_values and "
            f"grid_thw returned together by qvlearn.preprocess")

    # -- forward --------------------------------------------------------------------------------------
    def __call__(self, pixel_values, grid_thw, tap: Tap | None = None, block_taps=(), deepstack: bool = False):
        """``pixel_values [N, C*T*P*P]``, ``grid_thw [k, 3]`` -> merged embeddings ``[N/4, out_hidden_size]``
        float32 on the encoder's backend, in the order transformers returns them.

        ``deepstack=True`` returns ``(embeddings, deepstack_features)`` instead: the list of Qwen3-VL's DeepStack
        features, one ``[N/4, out_hidden_size]`` array per index of ``deepstack_visual_indexes`` (an empty list for
        the other families), as transformers' ``deepstack_features``.
        ``tap(name, array)`` is called with every stage of :data:`STAGES` as it is computed, and, for the
        block indexes in ``block_taps``, with the stages inside those blocks (``blocks.{i}.norm1``, ...).
        """
        cfg, be = self.config, self.backend
        xp = be.xp
        emit = tap if tap is not None else (lambda name, value: None)
        x, grid = self._check_inputs(pixel_values, grid_thw)
        m = cfg.spatial_merge_size
        emit("pixel_values", x)
        emit("grid_thw", grid)

        h = patch_embed(x, self._float32(self.patch_embed_weight))  # [N, 1176] @ [1176, D] -> [N, D]
        if cfg.third_generation:
            h = h + self._float32(self.patch_embed_bias)  # Qwen3's Conv3d has a bias
        emit("patch_embeds", h)
        if cfg.third_generation:  # + the learned position table, interpolated to every grid (host indices)
            idx, wts = interpolation_indices_and_weights(grid, cfg.position_grid_side, m)
            pos = interpolated_pos_embed(self._float32(self.pos_table), be.asarray(idx), be.asarray(wts))
            emit("pos_embeds", pos)
            h = h + pos

        # Host-side indices, moved to the backend once per forward and shared by all blocks.
        position_ids = rotary_position_ids(grid, m)  # [N, 2] (row, col)
        emit("position_ids", position_ids)
        cos, sin = rotary_cos_sin(be.asarray(position_ids), self.inv_freq)  # [N, head_dim] each
        emit("cos", cos)
        emit("sin", sin)
        cu = cu_seqlens(grid, m)
        emit("cu_seqlens", cu)
        full_plan = SegmentPlan.build(cu, be.asarray)
        window_plan = inverse = None
        if cfg.uses_windows:
            w_index, cu_window = window_index(grid, m, cfg.window_size, cfg.patch_size)
            emit("window_index", w_index)
            emit("cu_window_seqlens", cu_window)
            window_plan = SegmentPlan.build(cu_window, be.asarray)
            rows = be.asarray(patch_permutation(w_index, m))  # window order on patch rows
            h = xp.take(h, rows, axis=0)
            cos, sin = rotary_to_window_order(cos, sin, rows)
            inverse = be.asarray(inverse_permutation(w_index))

        block_taps = set(block_taps)
        deepstack_at = {b: j for j, b in enumerate(cfg.deepstack_visual_indexes)}
        features = []
        for i, weights in enumerate(self.blocks):
            plan = full_plan if cfg.is_full_attention_block(i) else window_plan
            if i in block_taps:  # step by step, reporting what happens inside the block
                h = vision_block_tapped(h, self._float32_dict(weights), cfg, cos, sin, plan,
                                        lambda name, value, i=i: emit(f"blocks.{i}.{name}", value), self.chunk_bytes)
            else:
                h = vision_block(h, self._float32_dict(weights), cfg, cos, sin, plan, self.chunk_bytes)  # [N, D]
            emit(f"blocks.{i}", h)
            if i in deepstack_at:  # Qwen3-VL: this block's output through its own merger (norm after the 2x2)
                j = deepstack_at[i]
                feature = merger_qwen3(h, self._float32_dict(self.deepstack_mergers[j]), cfg.merge_unit, cfg.eps,
                                       postshuffle=True)
                emit(f"deepstack.{j}", feature)
                features.append(feature)
        emit("last_hidden_state", h)

        mw = self._float32_dict(self.merger)
        if cfg.third_generation:
            if tap is not None:  # the merger computes it again inside; only a tap needs it by itself
                emit("merger.norm", norm(h, mw, "norm", cfg))
            merged = merger_qwen3(h, mw, cfg.merge_unit, cfg.eps)  # [N/4, out]
        else:
            normed = norm(h, mw, "ln_q", cfg)  # [N, D]
            emit("merger.ln_q", normed)
            merged = merger_mlp(merge_2x2(normed, cfg.merge_unit), mw["mlp.0.weight"], mw["mlp.0.bias"],
                                mw["mlp.2.weight"], mw["mlp.2.bias"])  # [N/4, out]
        emit("merger", merged)
        if inverse is not None:
            merged = restore_order(merged, inverse)
        emit("embeddings", merged)
        return (merged, features) if deepstack else merged

    def trace(self, pixel_values, grid_thw, to_numpy: bool = False, stages=None, tap: Tap | None = None) -> dict:
        """One forward, returning its stages by name (``embeddings`` is the output).

        ``stages``: glob patterns choosing what to keep, e.g. ``["blocks.3.*", "embeddings"]`` or
        ``["blocks.*.attn.q"]`` (:func:`qvlearn.taps.stage_names` lists them all); by default every stage
        outside the blocks' insides, ``blocks.{i}`` and (Qwen2.5-VL) ``blocks.{i}.natural`` included. A
        pattern that matches nothing raises :class:`qvlearn.taps.TapError`. ``tap(name, array)``, if given, also
        sees every stage as it is computed (the command line's progress bar).
        """
        from .taps import default_stages, select_stages

        cfg = self.config
        wanted = default_stages(cfg) if stages is None else select_stages(cfg, [stages] if isinstance(stages, str)
                                                                            else stages)
        natural = {n[: -len(".natural")] for n in wanted if n.endswith(".natural")}
        needed = set(wanted) | natural | {"window_index"}
        inner = {int(n.split(".")[1]) for n in wanted if n.startswith("blocks.") and n.count(".") > 1
                 and not n.endswith(".natural")}
        kept: dict = {}

        def keep(name, value):
            if name in needed:
                kept[name] = value
            if tap is not None:
                tap(name, value)

        self(pixel_values, grid_thw, tap=keep, block_taps=inner)
        if natural:  # block outputs back in token order: the inverse of the window permutation on patch rows
            order = window_index_module.patch_permutation(kept["window_index"], cfg.spatial_merge_size)
            rows = self.backend.asarray(np.argsort(order))
            for name in natural:
                kept[f"{name}.natural"] = self.backend.xp.take(kept[name], rows, axis=0)
        out = {}
        for name in wanted:
            value = kept[name]
            out[name] = self.backend.to_numpy(value) if to_numpy else value
        return out


def load_encoder(path: str | os.PathLike, backend: str | Backend | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, weights_dtype: str = "float32") -> VisionEncoder:
    """Open a Hugging Face snapshot directory (``config.json`` + safetensors) of Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    (and -MoE) or Qwen3.5 (and -MoE), the family read from ``config.json``.

    Only the ``visual.*`` / ``model.visual.*`` tensors are read. ``backend``: ``"numpy"`` (default), ``"cupy"``, or
    ``None`` for ``$QVLEARN_BACKEND``. ``weights_dtype="bfloat16"`` keeps weights resident in bf16 (half
    the memory) and widens one block at a time.
    """
    from pathlib import Path

    from .errors import CheckpointError

    if weights_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"weights_dtype must be 'float32' or 'bfloat16', got {weights_dtype!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_encoder takes the path of a snapshot directory (a str or pathlib.Path), got "
                          f"{type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist: give the directory of a downloaded snapshot "
                          "(or one written by qvlearn.save_random_checkpoint)")
    if path.is_file():
        raise CheckpointError(f"{path} is a file: give the snapshot directory that holds config.json and the "
                              "safetensors weights")
    config = read_config(path)
    weights = load_weights(path, config, dtype=weights_dtype)
    return VisionEncoder(config, weights, backend=backend, chunk_bytes=chunk_bytes, weights_dtype=weights_dtype)
