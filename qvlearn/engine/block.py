"""The engine's vision block and merger: fast kernels, one assembly, run through the kernel table.

Explained in ``notebooks/06_attention.ipynb`` and ``notebooks/05_norms_and_activations.ipynb``; the plain
forward to read first is :mod:`qvlearn.spec`, which this computes (tested equal, stage by stage).

    x = x + attn(norm1(x))          project (norm1 -> qkv -> RoPE), attend, then finish:
    x = x + mlp(norm2(x))           proj -> residual -> norm2 -> MLP -> residual

Every function takes the kernel table ``K`` (:class:`qvlearn.engine.kernels.Kernels`) and calls the kernels it
needs through it, so a table with one entry swapped (a bug of the zoo, the precision emulation, the benchmark's
timers) changes exactly that step. A block is three steps, each one entry of the table: ``K.project``,
``K.attend``, ``K.finish``. With a ``tap`` the same three steps run and report the stages inside the block
(:attr:`qvlearn.families.Family.block_stages`); only ``finish`` then runs on all rows at once.
"""

from __future__ import annotations

from typing import NamedTuple

from array_api_compat import array_namespace

from ..config import VisionConfig
from .parallel import row_parallel
from .rotary import rotate_as_pairs, rotation_factors


def _no_tap(name, value):
    pass


class Projection(NamedTuple):
    """q, k, v ``[N, heads, d]`` of one block. ``paired``: q and k hold each head's rotated channels in pairs
    (``j`` next to ``j + d/2``; the scores are those of the checkpoint's halves layout), as
    :func:`project_in_place` writes them; :meth:`checkpoint_order` gives them back in the checkpoint's order."""

    q: object
    k: object
    v: object
    paired: bool = False

    def checkpoint_order(self):
        """``(q, k)`` in the checkpoint's channel order (``[x1 | x2]`` halves), as transformers has them."""
        if not self.paired:
            return self.q, self.k
        xp = array_namespace(self.q)

        def halves(x):  # [N, heads, d] pairs -> halves
            n, heads, d = x.shape
            return xp.reshape(xp.permute_dims(xp.reshape(x, (n, heads, d // 2, 2)), (0, 1, 3, 2)), (n, heads, d))
        return halves(self.q), halves(self.k)


def norm(K, x, w: dict, name: str, cfg: VisionConfig):
    """The family's norm (``cfg.kind.norm``) of ``w[name.*]``: LayerNorm with bias, or RMSNorm."""
    if cfg.kind.norm == "layer":
        return K.layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"], cfg.eps)
    return K.rms_norm(x, w[f"{name}.weight"], cfg.eps)


def mlp_fc(K, x, w: dict, cfg: VisionConfig, tap=_no_tap):
    """``fc2(act(fc1 x))``: ``[N, D] -> [N, I] -> [N, D]`` (Qwen2-VL, the third generation). ``tap`` sees
    ``fc1`` (before the activation) and ``act``."""
    fc1, fc2 = cfg.kind.mlp_names
    hidden = K.linear(x, w[f"mlp.{fc1}.weight"], w[f"mlp.{fc1}.bias"])  # [N, I]
    tap("fc1", hidden)
    hidden = K.activations[cfg.hidden_act](hidden)
    tap("act", hidden)
    return K.linear(hidden, w[f"mlp.{fc2}.weight"], w[f"mlp.{fc2}.bias"])  # [N, D]


def mlp_gated(K, x, w: dict, cfg: VisionConfig, tap=_no_tap):
    """``down(act(gate x) * up x)``: ``[N, D] -> 2 x [N, I] -> [N, D]`` (Qwen2.5-VL). ``tap`` sees ``gate``
    (before the activation), ``up`` and ``act`` (``act(gate) * up``, the input of ``down_proj``)."""
    gate_name, up_name, down_name = cfg.kind.mlp_names
    gate = K.linear(x, w[f"mlp.{gate_name}.weight"], w[f"mlp.{gate_name}.bias"])  # [N, I]
    tap("gate", gate)
    hidden = K.activations[cfg.hidden_act](gate)  # [N, I], a new array
    up = K.linear(x, w[f"mlp.{up_name}.weight"], w[f"mlp.{up_name}.bias"])  # [N, I]
    tap("up", up)
    hidden *= up
    tap("act", hidden)
    return K.linear(hidden, w[f"mlp.{down_name}.weight"], w[f"mlp.{down_name}.bias"])  # [N, D]


def mlp(K, x, w: dict, cfg: VisionConfig, tap=_no_tap):
    """The block's MLP, of the family's kind (``cfg.kind.mlp``)."""
    return (K.mlp_gated if cfg.kind.mlp == "gated" else K.mlp_fc)(K, x, w, cfg, tap)


def project_by_halves(K, x, w: dict, cfg: VisionConfig, cos, sin) -> Projection:
    """Block step 1, norm1 -> qkv -> RoPE, as the checkpoint lays q and k out: ``K.split_qkv`` views the
    ``[N, 3D]`` output as ``[N, 3, heads, d]``, ``K.rotate`` turns q and k by halves (``rotate_half``). On row
    ranges (NumPy: side by side). Every backend but NumPy runs this step (CuPy, the strict stand-in)."""
    def project(a, b):  # rows a:b
        qkv = K.linear(norm(K, x[a:b, ...], w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"])
        q, k, v = K.split_qkv(qkv, cfg.num_heads)
        return K.rotate(q, cos[a:b, ...], sin[a:b, ...]), K.rotate(k, cos[a:b, ...], sin[a:b, ...]), v
    return Projection(*row_parallel(project, x))


def project_in_place(K, x, w: dict, cfg: VisionConfig, cos, sin) -> Projection:
    """Block step 1 on NumPy: each row range writes into arrays made once, q and k rotated as one complex
    multiplication (:func:`qvlearn.engine.rotary.rotate_as_pairs`: each head's rotated channels in pairs, ``j`` next to
    ``j + d/2``, for both q and k, so the scores are those of the halves layout), v as the checkpoint lays it
    out. No concatenation after the parts."""
    xp = array_namespace(x)
    n, heads, d = x.shape[0], cfg.num_heads, cfg.head_dim
    rot = rotation_factors(cos, sin)  # [N, d/2] complex64
    qk = xp.empty((n, 2, heads, d // 2), dtype=xp.complex64)  # q and k, rotated, as pairs
    v = xp.empty((n, heads, d), dtype=x.dtype)

    def project(a, b):  # rows a:b
        qkv = K.linear(norm(K, x[a:b, ...], w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"])  # [rows, 3D]
        qkv = xp.reshape(qkv, (b - a, 3, heads, d))
        rotate_as_pairs(qkv[:, :2, ...], rot[a:b, ...], qk[a:b, ...])
        v[a:b, ...] = qkv[:, 2, ...]
    row_parallel(project, x)
    qk = xp.reshape(qk.view(x.dtype), (n, 2, heads, d))
    return Projection(qk[:, 0, ...], qk[:, 1, ...], v, paired=True)


def projection_step(xp, K=None):
    """The projection step for arrays of namespace ``xp`` with the table ``K``: :func:`project_in_place` on NumPy,
    :func:`project_by_halves` on every other backend (so CuPy runs the path the strict stand-in tests on CPU). The
    in-place step is the fast form of the table's own ``rotate`` and ``split_qkv``; a table that replaces either
    (a bug of the zoo, a kernel under trial) takes the by-halves step on NumPy too, so that the replacement runs."""
    from array_api_compat import is_numpy_namespace

    from .kernels import KERNELS

    own = K is None or (K.rotate is KERNELS.rotate and K.split_qkv is KERNELS.split_qkv)
    return project_in_place if is_numpy_namespace(xp) and own else project_by_halves


def project(K, x, w: dict, cfg: VisionConfig, cos, sin) -> Projection:
    """Block step 1 (norm1 -> qkv -> RoPE), by :func:`projection_step`."""
    return projection_step(array_namespace(x), K)(K, x, w, cfg, cos, sin)


def finish(K, x, mixed, w: dict, cfg: VisionConfig, tap=None):
    """Block step 3, row by row: ``h = x + proj(mixed)``; ``h + mlp(norm2(h))``. ``mixed [N, D]`` is the
    attention's output with the heads side by side. On row ranges side by side (NumPy), or, with a ``tap``, on
    all rows at once reporting ``attn``, ``residual1``, ``norm2``, ``mlp.*`` and ``mlp``."""
    report = tap or _no_tap
    mlp_tap = (lambda name, value: report(f"mlp.{name}", value)) if tap else _no_tap

    def rows(a, b):  # rows a:b
        attn = K.linear(mixed[a:b, ...], w["attn.proj.weight"], w["attn.proj.bias"])  # [rows, D]
        report("attn", attn)
        h = x[a:b, ...] + attn  # the first residual
        report("residual1", h)
        normed = norm(K, h, w, "norm2", cfg)
        report("norm2", normed)
        out = mlp(K, normed, w, cfg, mlp_tap)
        report("mlp", out)
        if tap:
            return h + out  # a new array: what was reported stays as it was
        h += out  # the second residual
        return h
    return rows(0, x.shape[0]) if tap else row_parallel(rows, x)


def vision_block(K, x, w: dict, cfg: VisionConfig, cos, sin, plan, chunk_bytes: int, tap=None):
    """One block: ``x [N, D]`` -> ``[N, D]``. ``w``: checkpoint names without the ``blocks.{i}.`` prefix;
    ``cos, sin [N, head_dim]`` (the second half repeats the first); ``plan``: the
    :class:`qvlearn.engine.attention.SegmentPlan` of the segments this block attends within. ``tap(name, array)``
    sees the stages inside the block (``norm1``, ``attn.q``, ``attn.k``, ... ``mlp``), q and k in the checkpoint's
    channel order after RoPE and before the ``1/sqrt(d)`` scale."""
    xp = array_namespace(x)
    n, dim = x.shape
    if tap is not None:
        tap("norm1", norm(K, x, w, "norm1", cfg))  # computed again inside project: only a tap needs it alone
    p = K.project(K, x, w, cfg, cos, sin)  # q, k, v [N, heads, d]
    if tap is not None:
        q, k = p.checkpoint_order()
        tap("attn.q", q)
        tap("attn.k", k)
    mixed = K.attend(p.q, p.k, p.v, plan, cfg.head_dim ** -0.5, chunk_bytes)  # [N, heads, d]
    return K.finish(K, x, xp.reshape(mixed, (n, dim)), w, cfg, tap)


def merger(K, x, w: dict, cfg: VisionConfig, postshuffle: bool = False, tap=_no_tap):
    """``[N, D] -> [N/4, out]``: the family's norm, the 2x2 concatenation (``K.merge_2x2``), a linear, the exact
    GELU (``K.merger_act``), a linear; names from ``cfg.kind.merger_names`` (``ln_q, mlp.0, mlp.2`` or ``norm,
    linear_fc1, linear_fc2``). ``postshuffle=True``: a DeepStack merger, which normalises after the concatenation
    (the family's norm over 4D: a LayerNorm in Qwen3-VL). ``tap`` sees the norm's output as ``merger.<norm name>``."""
    norm_name, fc1, fc2 = cfg.kind.merger_names
    if postshuffle:
        h = norm(K, K.merge_2x2(x, cfg.merge_unit), w, norm_name, cfg)  # [N/4, 4D]
    else:
        h = norm(K, x, w, norm_name, cfg)  # [N, D]
        tap(f"merger.{norm_name}", h)
        h = K.merge_2x2(h, cfg.merge_unit)  # [N/4, 4D]
    h = K.merger_act(K.linear(h, w[f"{fc1}.weight"], w[f"{fc1}.bias"]))  # [N/4, 4D]
    return K.linear(h, w[f"{fc2}.weight"], w[f"{fc2}.bias"])  # [N/4, out]
