"""What a forward will cost, known before it runs: patches, matrix-product FLOPs (per block and in all) and peak
memory, from the config and ``grid_thw`` alone.

The command line prints the estimate before it encodes and refuses work beyond its limits (``--max-patches``,
``--max-memory``); its progress bar advances by each block's FLOPs, so its time left is right when the
full-attention blocks cost more than the others. The benchmark counts FLOPs with :func:`forward_flops`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .config import VisionConfig
from .engine.window_index import cu_seqlens, window_index

RELEASED_MAX_PATCHES = 65536
"""The most patches the released processors make of one image (12845056 px at 14 px, 16777216 px at 16 px, which
are both 65536 patches): the default ``--max-patches``, per image or frame pair."""

BASE_BYTES = 300 * 2**20  # the interpreter, NumPy, SciPy and Pillow loaded (measured: about 250 MB resident)


@dataclass(frozen=True)
class Cost:
    """The estimate of one forward: ``patches`` in all, ``largest`` in one image or frame pair, ``tokens`` after
    the merge, ``block_flops`` (one entry per block), ``flops`` in all (blocks, patch embedding and mergers) and
    ``peak_bytes`` (resident memory, an upper estimate: the weights in float32 and the bf16 checkpoint's pages that
    loading maps in, the inputs, one block's temporaries; measured: 4.09 GB for the Qwen2.5-VL-7B tower on
    images/sample.jpg, estimated 4.5 GB)."""

    patches: int
    largest: int
    tokens: int
    block_flops: tuple
    flops: int
    peak_bytes: int

    def summary(self) -> str:
        return (f"{self.patches:,} patches ({self.tokens:,} tokens), about {_flops(self.flops)} and "
                f"{self.peak_bytes / 1e9:.1f} GB of memory")


def _flops(n: float) -> str:
    return f"{n / 1e12:.1f} TFLOP" if n >= 1e12 else f"{n / 1e9:.0f} GFLOP" if n >= 1e10 else f"{n / 1e9:.2g} GFLOP"


def block_flops(cfg: VisionConfig, grid_thw) -> list[int]:
    """Matrix-product FLOPs (2 per multiply-add) of each block: the projections, the MLP (three matrices for a gated
    MLP, two otherwise) and attention over its segments (each image's frame pair, or each window)."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    n = int(np.sum(grid.prod(1)))
    D, I = cfg.width, cfg.mlp_width
    mlp = (3 if cfg.kind.mlp == "gated" else 2) * 2 * n * D * I
    linear = 2 * n * D * 3 * D + 2 * n * D * D + mlp
    full = np.diff(cu_seqlens(grid)).astype(np.int64)
    windows = (np.diff(window_index(grid, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)[1]).astype(np.int64)
               if cfg.uses_windows else full)
    attention = {True: int(np.sum(4 * full * full * D)), False: int(np.sum(4 * windows * windows * D))}
    return [linear + attention[cfg.is_full_attention_block(i)] for i in range(cfg.depth)]


def forward_flops(cfg: VisionConfig, grid_thw) -> int:
    """Matrix-product FLOPs of one forward (2 per multiply-add): patch embedding, blocks, merger(s)."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    n = int(np.sum(grid.prod(1)))
    M = cfg.width * cfg.merge_unit
    merger = 2 * (n // cfg.merge_unit) * M * (M + cfg.out_hidden_size)
    merger *= 1 + len(cfg.deepstack_visual_indexes)  # Qwen3-VL's DeepStack mergers have the same shape
    return 2 * n * cfg.patch_dim * cfg.width + sum(block_flops(cfg, grid)) + merger


def weight_count(cfg: VisionConfig) -> int:
    from .weights import expected_shapes

    return int(sum(int(np.prod(shape)) for shape in expected_shapes(cfg).values()))


def estimate(cfg: VisionConfig, grid_thw, chunk_bytes: int = 64 * 2**20, reference: bool = False) -> Cost:
    """The :class:`Cost` of one float32 forward of ``cfg``'s tower over ``grid_thw``; with ``reference``,
    transformers' eager attention's, which holds the scores and the softmax of a whole segment, every head."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    n = int(np.sum(grid.prod(1)))
    largest = int(np.max(grid[:, 1] * grid[:, 2])) if len(grid) else 0
    per_block = block_flops(cfg, grid)
    D, I = cfg.width, cfg.mlp_width
    activations = 4 * n * (cfg.patch_dim + 10 * D + 2 * I)  # inputs, residual stream, q/k/v, MLP temporaries
    peak = BASE_BYTES + (4 + 2) * weight_count(cfg) + activations + chunk_bytes  # f32 weights, mapped bf16 file
    if reference:
        peak += 2 * 4 * cfg.num_heads * largest * largest + BASE_BYTES  # scores and probabilities; torch itself
    return Cost(n, largest, n // cfg.merge_unit, tuple(per_block), forward_flops(cfg, grid), int(peak))


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new process now (Linux's MemAvailable; the physical memory
    elsewhere), or None when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
