"""The whole vision encoder of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5.

Explained in ``notebooks/08_whole_encoder.ipynb`` (and ``notebooks/13_qwen3_vl.ipynb`` for the third generation).
The same forward in plain NumPy, to read and port from, is :mod:`qvlearn.spec`; this one runs the engine's kernel
table (:mod:`qvlearn.engine.kernels`), and the two are tested equal stage by stage.

    pixel_values [N, C*T*P*P] --patch_embed (+ bias in Qwen3)--> [N, D]
      (Qwen3) + the learned position table, interpolated to the grid
      (2.5-VL) permute rows, cos and sin into window order
      --blocks (full attention per frame pair, or per window in 2.5-VL's window blocks)--> [N, D]
        (Qwen3-VL) after the blocks at deepstack_visual_indexes: a DeepStack merger -> [N/4, out_hidden_size]
      --merger: norm, 2x2 concat, MLP--> [N/4, out_hidden_size]
      (2.5-VL) rows back to natural order
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import ml_dtypes
import numpy as np

from .backend import Backend, get_backend, supports_out, widen_bf16
from .config import VisionConfig, read_config
from .engine.attention import DEFAULT_CHUNK_BYTES, SegmentPlan
from .engine.kernels import KERNELS, Kernels
from .engine.patch_embed import conv3d_weight_as_matrix
from .engine.window_index import patch_permutation
from .errors import BackendError, ConfigError, InputError
from .grid import as_grid_thw, num_patches
from .stages import STAGES, block_of, default_stages, select_stages  # noqa: F401  (STAGES: qvlearn.STAGES)
from .weights import fused_qkv, load_weights

Tap = Callable[[str, object], None]


def _no_tap(name, value):
    pass


class VisionEncoder:
    """A loaded vision tower on one backend. Call it: ``encoder(pixel_values, grid_thw)``."""

    def __init__(self, config: VisionConfig, weights: dict[str, np.ndarray], backend: str | Backend | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, weights_dtype: str = "float32", kernels: Kernels = KERNELS):
        """``weights_dtype="bfloat16"`` keeps the block and merger weights resident as bf16 (half the
        memory) and widens one block at a time to float32 during the forward; the results are identical
        for a bf16 checkpoint (the widening is exact), and lossy for a float32/float16 one. ``kernels``: the
        kernel table the forward runs (:data:`qvlearn.engine.kernels.KERNELS`)."""
        if not isinstance(kernels, Kernels):
            raise ConfigError(f"kernels must be a qvlearn.engine.kernels.Kernels table, got {type(kernels).__name__}")
        self.kernels = kernels
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

        weights = fused_qkv(config, weights)  # Qwen2.5-Omni's separate q, k, v: one fused qkv, as every family
        # Conv3d kernel (D, C, T, P, P) -> matrix (D, C*T*P*P): the only reshape of a checkpoint tensor.
        self.patch_embed_weight = to(conv3d_weight_as_matrix(weights["patch_embed.proj.weight"]))
        kind = config.kind
        self.patch_embed_bias = to(weights["patch_embed.proj.bias"]) if kind.patch_bias else None
        self.pos_table = to(weights["pos_embed.weight"]) if kind.position_table else None  # [side*side, D]
        self.deepstack_mergers = []
        for j in range(len(config.deepstack_visual_indexes)):
            prefix = f"{kind.deepstack_name}.{j}."
            self.deepstack_mergers.append({k[len(prefix):]: to(v) for k, v in weights.items() if k.startswith(prefix)})
        self.blocks = []
        for i in range(config.depth):
            prefix = f"blocks.{i}."
            self.blocks.append({k[len(prefix):]: to(v) for k, v in weights.items() if k.startswith(prefix)})
        self.merger = {k[len("merger."):]: to(v) for k, v in weights.items() if k.startswith("merger.")}
        self.inv_freq = self.backend.asarray(kernels.inv_freq(config.head_dim, config.rope_theta))

    def with_kernels(self, kernels: Kernels) -> "VisionEncoder":
        """This encoder (its weights shared, not copied) running another kernel table."""
        if not isinstance(kernels, Kernels):
            raise ConfigError(f"kernels must be a qvlearn.engine.kernels.Kernels table, got {type(kernels).__name__}")
        other = copy.copy(self)
        other.kernels = kernels
        other.inv_freq = self.backend.asarray(kernels.inv_freq(self.config.head_dim, self.config.rope_theta))
        return other

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
            from .families import FAMILIES

            other = [f for f, d in FAMILIES.items()
                     if cfg.in_channels * cfg.temporal_patch_size * d.preprocessing["patch_size"] ** 2 == shape[1]]
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
        ``tap(name, array)`` is called with every stage of :data:`qvlearn.stages.STAGES` as it is computed, and, for
        the block indexes in ``block_taps``, with the stages inside those blocks (``blocks.{i}.norm1``, ...).
        """
        cfg, K, xp, to = self.config, self.kernels, self.backend.xp, self.backend.asarray
        emit = tap or _no_tap
        x, grid = self._check_inputs(pixel_values, grid_thw)  # [N, C*T*P*P] on the backend, [k, 3] host
        m, kind, f32 = cfg.spatial_merge_size, cfg.kind, self._float32
        emit("pixel_values", x)
        emit("grid_thw", grid)
        h = K.patch_embed(x, f32(self.patch_embed_weight))  # [N, C*T*P*P] @ [C*T*P*P, D] -> [N, D]
        if kind.patch_bias:
            h = h + f32(self.patch_embed_bias)
        emit("patch_embeds", h)
        if kind.position_table:  # + the learned position table, interpolated to every grid (host indices)
            idx, wts = K.position_interpolation(grid, cfg.position_grid_side, m)
            pos = K.position_embed(f32(self.pos_table), to(idx), to(wts))  # [N, D]
            emit("pos_embeds", pos)
            h = h + pos
        # Host-side indices, moved to the backend once per forward and shared by all blocks.
        position_ids = K.position_ids(grid, m)  # [N, 2] (row, col)
        emit("position_ids", position_ids)
        cos, sin = K.rotary(to(position_ids), self.inv_freq)  # [N, head_dim] each
        emit("cos", cos)
        emit("sin", sin)
        cu = K.cu_seqlens(grid, m)
        emit("cu_seqlens", cu)
        plans = {True: SegmentPlan.build(cu, to)}  # full attention: per frame pair
        if kind.windows:  # window blocks: the rows, and cos/sin with them, into window order
            w_index, cu_window = K.window_index(grid, m, cfg.window_size, cfg.patch_size)
            emit("window_index", w_index)
            emit("cu_window_seqlens", cu_window)
            plans[False] = SegmentPlan.build(cu_window, to)
            rows = to(patch_permutation(w_index, m))
            h = xp.take(h, rows, axis=0)
            cos, sin = K.window_order(cos, sin, rows)
        deepstack_at = K.deepstack_taps(cfg)  # {block: DeepStack merger}
        features = []
        for i, w in enumerate(self.blocks):
            inner = (lambda name, value, i=i: emit(f"blocks.{i}.{name}", value)) if i in block_taps else None
            plan = plans[bool(K.full_attention(cfg, i))]
            h = K.block(K, h, self._float32_dict(w), cfg, cos, sin, plan, self.chunk_bytes, inner)  # [N, D]
            emit(f"blocks.{i}", h)
            if i in deepstack_at:  # Qwen3-VL: this block's output through its own merger (norm after the 2x2)
                j = deepstack_at[i]
                features.append(K.merger(K, h, self._float32_dict(self.deepstack_mergers[j]), cfg, True))
                emit(f"deepstack.{j}", features[-1])
        emit("last_hidden_state", h)
        merged = K.merger(K, h, self._float32_dict(self.merger), cfg, False, emit)  # [N/4, out]
        emit("merger", merged)
        if kind.windows:  # merged rows back to natural order
            merged = K.restore_order(merged, to(K.window_inverse(w_index)))
        emit("embeddings", merged)
        return (merged, features) if deepstack else merged

    def trace(self, pixel_values, grid_thw, to_numpy: bool = False, stages=None, tap: Tap | None = None) -> dict:
        """One forward, returning its stages by name (``embeddings`` is the output).

        ``stages``: glob patterns choosing what to keep, e.g. ``["blocks.3.*", "embeddings"]`` or
        ``["blocks.*.attn.q"]`` (:func:`qvlearn.stages.stage_names` lists them all); by default every stage
        outside the blocks' insides, ``blocks.{i}`` and (Qwen2.5-VL) ``blocks.{i}.natural`` included. A
        pattern that matches nothing raises :class:`qvlearn.errors.TapError`. ``tap(name, array)``, if given, also
        sees every stage as it is computed (the command line's progress bar).
        """
        cfg = self.config
        wanted = default_stages(cfg) if stages is None else select_stages(cfg, [stages] if isinstance(stages, str)
                                                                            else stages)
        natural = {n[: -len(".natural")] for n in wanted if n.endswith(".natural")}
        needed = set(wanted) | natural | {"window_index"}
        inner = {block_of(n)[0] for n in wanted if (block_of(n) or (0, None))[1] not in (None, "natural")}
        kept: dict = {}

        def keep(name, value):
            if name in needed:
                kept[name] = value
            if tap is not None:
                tap(name, value)

        self(pixel_values, grid_thw, tap=keep, block_taps=inner)
        if natural:  # block outputs back in token order: the inverse of the window permutation on patch rows
            order = patch_permutation(kept["window_index"], cfg.spatial_merge_size)
            rows = self.backend.asarray(np.argsort(order))
            for name in natural:
                kept[f"{name}.natural"] = self.backend.xp.take(kept[name], rows, axis=0)
        out = {}
        for name in wanted:
            value = kept[name]
            out[name] = self.backend.to_numpy(value) if to_numpy else value
        return out


def load_encoder(path: str | os.PathLike, backend: str | Backend | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, weights_dtype: str = "float32",
                 kernels: Kernels = KERNELS) -> VisionEncoder:
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
    return VisionEncoder(config, weights, backend=backend, chunk_bytes=chunk_bytes, weights_dtype=weights_dtype,
                         kernels=kernels)
