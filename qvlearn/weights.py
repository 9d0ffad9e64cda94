"""Checkpoint I/O: reading the ``visual.*`` tensors of a Hugging Face snapshot, and writing seeded
random checkpoints in the same layout.

Explained in ``notebooks/08_whole_encoder.ipynb``.

* Only safetensors are read (``model.safetensors`` or ``model.safetensors.index.json`` + shards),
  never pickled ``.bin``/``.pt`` files. Files are opened memory-mapped by the ``safetensors``
  library; only tensors whose name starts with one of :data:`PREFIXES` are read: ``visual.`` (Qwen2/2.5-VL as
  released, an Omni thinker saved alone), ``model.visual.`` (Qwen3-VL / Qwen3.5 / Qwen4-Exp as released) or
  ``thinker.visual.`` (the Omni models); torch is not needed. Qwen2.5-Omni's separate ``attn.q/k/v`` are read as
  stored and fused for the engine by :func:`fused_qkv`.
* bf16/f16/f32 on disk, float32 in memory. bf16 -> float32 is an exact widening (the 16 bits become
  the top half of the float32), the same values torch produces with ``.float()``.
* Every key and shape is checked against the config; missing, extra or wrongly shaped tensors are
  an error that lists them, and so is any NaN or Inf in a weight (one NaN makes every embedding NaN).
* Writing is atomic (:mod:`qvlearn.atomic`): each file appears whole, and ``config.json`` comes last, so an
  interrupted write never looks like a snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from .atomic import atomic_file
from .config import VisionConfig, preset_config_dict, vision_config_from_dict
from .errors import CheckpointError
from .families import FAMILIES

PREFIXES = tuple(dict.fromkeys(["model.visual.", "visual.", *(f.weight_prefix for f in FAMILIES.values())]))
"""Where a snapshot keeps its vision tower: ``model.visual.*`` (Qwen3-VL / Qwen3.5 / Qwen4-Exp releases),
``visual.*`` (Qwen2-VL / Qwen2.5-VL releases, and the Omni thinker saved alone) or ``thinker.visual.*`` (the Omni
models). A snapshot uses one of them."""


def checkpoint_prefix(cfg: VisionConfig) -> str:
    """The prefix the released checkpoints of ``cfg``'s family use (what :func:`save_random_checkpoint` writes)."""
    return cfg.kind.weight_prefix
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
_DISK_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32}
# A float is NaN or Inf exactly when all its exponent bits are set: checked on the raw bits, no widening.
_EXPONENT_BITS = {np.dtype(np.float32): (np.uint32, 0x7F800000), np.dtype(np.float16): (np.uint16, 0x7C00),
                  np.dtype(ml_dtypes.bfloat16): (np.uint16, 0x7F80)}


def count_nonfinite(tensor: np.ndarray) -> int:
    """How many NaN or Inf values a float32 / float16 / bfloat16 array holds."""
    uint, mask = _EXPONENT_BITS[tensor.dtype]
    bits = np.ascontiguousarray(tensor).view(uint)
    return int(np.count_nonzero(np.bitwise_and(bits, uint(mask)) == uint(mask)))


_ACT_NAMES = {"quick_gelu": "QuickGELU", "silu": "SiLU", "gelu": "exact (erf) GELU",
              "gelu_pytorch_tanh": "gelu_pytorch_tanh (the tanh GELU)"}


def weight_role(cfg: VisionConfig, name: str) -> str:
    """What the checkpoint tensor ``name`` (without the prefix; ``blocks.{i}.`` and ``{j}`` of a DeepStack merger may
    be left out) does in ``cfg``'s tower, written from the family entry: its norm, MLP, activation and merger names,
    so that no family's note is copied to another."""
    kind = cfg.kind
    norm = "LayerNorm" if kind.norm == "layer" else "RMSNorm"
    act = _ACT_NAMES.get(cfg.hidden_act, cfg.hidden_act)
    inner = name.replace("blocks.{i}.", "")
    if inner.startswith("blocks."):
        inner = inner.split(".", 2)[2]
    part, _, what = inner.rpartition(".")
    if what == "bias" and part not in ("patch_embed.proj", "attn.qkv") and not part.endswith(("norm1", "norm2")) \
            and not part.endswith(kind.merger_names[0]):
        return "its bias"
    if part == "patch_embed.proj":
        if what == "bias":
            return "Conv3d bias: `patch_embeds = pixel_values @ W.T + b`"
        bias = " + b" if kind.patch_bias else ""
        return (f"Conv3d kernel (D, C, T, P, P){'' if kind.patch_bias else ', no bias'}; as a matrix "
                f"`reshape(D, C*T*P*P)`: `patch_embeds = pixel_values @ W.T{bias}`")
    if part == "pos_embed":
        side = cfg.position_grid_side
        return (f"learned absolute positions [side*side, D] ({side}*{side} here), bilinearly interpolated (corners "
                "aligned) to each grid and added to patch_embeds")
    if part in ("norm1", "norm2"):
        where = "pre-attention" if part == "norm1" else "pre-MLP"
        return f"{where} {norm} {'gain' if what == 'weight' else 'bias'}"
    if part == "attn.qkv":
        return ("fused projection; output rows q (all heads), then k, then v, each head-major" if what == "weight"
                else "its bias, same layout")
    if part in (f"attn.{n}" for n in kind.qkv_names if n != "qkv"):
        role = {"q": "query", "k": "key", "v": "value"}[part[-1]]
        return f"the {role} projection alone (D -> D); the fused qkv is concat(q, k, v) by output rows"
    if part == "attn.proj":
        return "attention output projection (D -> D)"
    mlp = [f"mlp.{n}" for n in kind.mlp_names]
    if part in mlp:
        if kind.mlp == "gated":
            return {0: f"gated MLP's gate (D -> I): `{act}(gate(x)) * up(x)`", 1: "gated MLP's up branch (D -> I)",
                    2: "gated MLP's down (I -> D)"}[mlp.index(part)]
        return f"MLP up (D -> I), then {act}" if mlp.index(part) == 0 else "MLP down (I -> D)"
    norm_name, fc1, fc2 = kind.merger_names
    mergers = (("merger.", "merger", "over D, before the 2x2 concat"),
               (f"{kind.deepstack_name}.{{j}}.", "DeepStack merger j", "over 4D, after the 2x2 concat"))
    for prefix, title, over in mergers:
        if part == prefix + norm_name:
            return f"{title} {norm} {'gain' if what == 'weight' else 'bias'} ({over})"
        if part == prefix + fc1:
            return f"{title} Linear(4D, 4D), then exact (erf) GELU"
        if part == prefix + fc2:
            return f"{title} Linear(4D, out_hidden_size): the LLM width"
    raise KeyError(f"no role for {name!r} in {cfg.family}")


def expected_shapes(cfg: VisionConfig) -> dict[str, tuple]:
    """Checkpoint name (without ``visual.``) -> shape, for every tensor of the vision tower, in the order of the
    family table's description (:mod:`qvlearn.families`)."""
    kind = cfg.kind
    D, I, C, T, P = cfg.width, cfg.mlp_width, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
    M, out = D * cfg.merge_unit, cfg.out_hidden_size
    shapes = {"patch_embed.proj.weight": (D, C, T, P, P)}
    if kind.patch_bias:
        shapes["patch_embed.proj.bias"] = (D,)
    if kind.position_table:
        shapes["pos_embed.weight"] = (cfg.num_position_embeddings, D)

    def norm(name, width):  # LayerNorm: weight and bias; RMSNorm: weight only
        shapes[name + ".weight"] = (width,)
        if kind.norm == "layer":
            shapes[name + ".bias"] = (width,)

    def linear(name, n_out, n_in):
        shapes.update({name + ".weight": (n_out, n_in), name + ".bias": (n_out,)})

    for i in range(cfg.depth):
        b = f"blocks.{i}."
        norm(b + "norm1", D)
        norm(b + "norm2", D)
        if kind.qkv_names == ("qkv",):
            linear(b + "attn.qkv", 3 * D, D)
        else:  # Qwen2.5-Omni: q, k and v as three linears
            for name in kind.qkv_names:
                linear(b + f"attn.{name}", D, D)
        linear(b + "attn.proj", D, D)
        *inner, last = kind.mlp_names  # fc1 / gate, up: D -> I; fc2 / down: I -> D
        for name in inner:
            linear(b + f"mlp.{name}", I, D)
        linear(b + f"mlp.{last}", D, I)
    norm_name, fc1, fc2 = kind.merger_names
    mergers = [("merger.", D)] + [(f"{kind.deepstack_name}.{j}.", M) for j in range(len(cfg.deepstack_visual_indexes))]
    for prefix, norm_width in mergers:  # the main merger normalises over D, DeepStack's over 4D
        norm(prefix + norm_name, norm_width)
        linear(prefix + fc1, M, M)
        linear(prefix + fc2, out, M)
    return shapes


def fused_qkv(cfg: VisionConfig, weights: dict) -> dict:
    """The weights with one fused ``blocks.{i}.attn.qkv`` per block, as the engine and :mod:`qvlearn.spec` read
    them. A family that stores ``attn.q``, ``attn.k``, ``attn.v`` apart (Qwen2.5-Omni) gets them concatenated by
    output rows -- exactly the fused layer, since ``x @ concat(Wq, Wk, Wv).T = concat(x Wq^T, x Wk^T, x Wv^T)``;
    every other family's weights are returned as they are."""
    names = cfg.kind.qkv_names
    if names == ("qkv",) or "blocks.0.attn.q.weight" not in weights:
        return weights
    out = {k: v for k, v in weights.items() if ".attn." not in k or k.split(".attn.")[1].split(".")[0] not in names}
    for i in range(cfg.depth):
        for part in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{part}"] = np.concatenate(
                [np.asarray(weights[f"blocks.{i}.attn.{n}.{part}"]) for n in names], axis=0)
    return out


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The safetensors files of the snapshot at ``path`` that hold its vision tensors, as :func:`load_weights` reads
    them: the shards the index names when there is one, else ``model.safetensors``, else every ``*.safetensors``.
    Refuses an index that names files outside the folder, or one that disagrees with a ``model.safetensors`` beside
    it. The reference (transformers) loads exactly these files."""
    path = Path(path)
    index = path / INDEX_FILE
    single = path / SINGLE_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {exc}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index} is not a valid safetensors index: its weight_map must map tensor names "
                                  "to shard file names")
        names = sorted({f for k, f in weight_map.items() if k.startswith(PREFIXES)})
        outside = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts or "\\" in n]
        if outside:
            raise CheckpointError(f"{index} names shards outside the snapshot folder: {outside[:3]}; a snapshot's "
                                  "index names files beside it (model-00001-of-00002.safetensors). Fix or replace "
                                  "the index")
        if not names:
            raise CheckpointError(f"{index} maps no {' or '.join(p + '*' for p in PREFIXES)} tensors: is this a "
                                  "Qwen-VL snapshot?")
        if single.exists() and SINGLE_FILE not in names:
            raise CheckpointError(f"{path} holds both {SINGLE_FILE} and {INDEX_FILE}, and the index names other files "
                                  f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): two copies of the "
                                  "weights that transformers and qvlearn would read differently. Keep one: remove "
                                  f"{SINGLE_FILE}, or the index and its shards")
        missing = [n for n in names if not (path / n).exists()]
        if missing:
            raise CheckpointError(f"shards listed in {index.name} are missing from {path}: {missing} "
                                  "(an interrupted download? fetch the snapshot again)")
        return [path / n for n in names]
    if single.exists():
        return [single]
    others = sorted(p.name for p in path.glob("*.safetensors"))
    if others:
        return [path / n for n in others]
    pickled = sorted({n for n in _PICKLED if (path / n).exists()} | {p.name for p in path.glob("*.bin")})
    if pickled:
        raise CheckpointError(f"{path} holds only pickled weights ({pickled}); qvlearn reads safetensors only, "
                              "never pickles. Use a snapshot with model.safetensors, or convert it with "
                              "safetensors' convert tooling")
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path}")


def load_weights(path: str | os.PathLike, cfg: VisionConfig, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Read every ``visual.*`` tensor of the snapshot at ``path`` as NumPy arrays of ``dtype`` (float32,
    or bfloat16 for bf16-resident encoders: no conversion for a bf16 checkpoint), checked against
    ``cfg``. Keys are returned without the ``visual.`` prefix."""
    from safetensors import SafetensorError, safe_open

    if dtype not in ("float32", "bfloat16"):
        raise CheckpointError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        raise CheckpointError(f"{path} is a pickled checkpoint; qvlearn reads safetensors only, never pickles")
    expected = expected_shapes(cfg)
    weights: dict[str, np.ndarray] = {}
    wrong: list[str] = []
    extra: list[str] = []
    nonfinite: list[str] = []
    seen_prefixes: set[str] = set()
    for file in weight_files(path):
        try:
            with safe_open(file, framework="numpy") as f:
                for key in f.keys():
                    prefix = next((p for p in PREFIXES if key.startswith(p)), None)
                    if prefix is None:
                        continue
                    seen_prefixes.add(prefix)
                    name = key[len(prefix):]
                    if name not in expected:
                        extra.append(name)
                        continue
                    shape = tuple(f.get_slice(key).get_shape())
                    if shape != expected[name]:
                        wrong.append(f"{key}: {shape} in the file, {expected[name]} expected")
                        continue
                    tensor = f.get_tensor(key)
                    if tensor.dtype not in (np.float32, np.float16, ml_dtypes.bfloat16):
                        raise CheckpointError(f"{key} in {file.name} has dtype {tensor.dtype}; expected bf16, "
                                              "f16 or f32")
                    bad = count_nonfinite(tensor)
                    if bad:
                        nonfinite.append(f"{key} ({bad} of {tensor.size} values, in {file.name})")
                    target = _DISK_DTYPES[dtype]
                    # float32: exact widening of bf16/f16; bfloat16: a no-op for bf16 files
                    weights[name] = tensor if tensor.dtype == target else tensor.astype(target)
        except SafetensorError as exc:
            raise CheckpointError(f"{file} is not a readable safetensors file ({exc}); the file may be truncated "
                                  "or corrupt: download it again") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read {file}: {exc}") from None
    if len(seen_prefixes) > 1:
        raise CheckpointError(f"{path} holds vision tensors under {' and '.join(sorted(seen_prefixes))}; a "
                              "snapshot uses one layout. Remove the stray copy (a merge of two checkpoints?)")
    prefix = next(iter(seen_prefixes), checkpoint_prefix(cfg))
    missing = sorted(set(expected) - set(weights) - {w.split(":")[0][len(prefix):] for w in wrong})
    extra = sorted(extra)
    if missing or extra or wrong:
        lines = [f"the {prefix}* tensors in {path} do not match the {cfg.family} config ({cfg.summary()}):"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(prefix + k for k in missing))
        if extra:
            lines.append(f"  unexpected ({len(extra)}): " + ", ".join(prefix + k for k in extra))
        if wrong:
            lines.append(f"  wrong shape ({len(wrong)}): " + "; ".join(wrong))
        lines.append("Check that config.json belongs to these weights.")
        raise CheckpointError("\n".join(lines))
    if nonfinite:
        raise CheckpointError(f"{len(nonfinite)} tensor(s) in {path} hold NaN or Inf, which would make every "
                              f"embedding NaN: " + "; ".join(nonfinite) + ". The file is corrupt or was saved from a "
                              "diverged run: download it again")
    return weights


# ----------------------------------------------------------------------------------------------------
# Seeded random checkpoints in the real layout
# ----------------------------------------------------------------------------------------------------
def random_weights(cfg: VisionConfig, seed: int = 0, progress=None) -> dict[str, np.ndarray]:
    """Seeded float32 weights for every tensor of the tower, scaled so that activations stay in a
    realistic range through all blocks; norm gains are random too (1 + N(0, 0.1)), so that a port
    that ignores them, or applies them in the wrong place, fails the comparison.
    ``progress(n)``, if given, is called with each tensor's element count as it is made."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith(("norm1.weight", "norm2.weight", "ln_q.weight", "norm.weight")):
            w = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            w = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(1.0 / np.sqrt(fan_in))
        weights[name] = w.astype(np.float32, copy=False)
        if progress is not None:
            progress(w.size)
    return weights


def checkpoint_bytes(cfg: VisionConfig, dtype: str = "bfloat16") -> int:
    """The size on disk of a checkpoint of ``cfg``'s tower in ``dtype`` (the tensors, without headers)."""
    return int(sum(np.prod(shape) for shape in expected_shapes(cfg).values())) * np.dtype(_DISK_DTYPES[dtype]).itemsize


def save_checkpoint(path: str | os.PathLike, config: dict, weights: dict[str, np.ndarray], dtype="bfloat16",
                    max_shard_bytes: int | None = None, prefix: str | None = None) -> Path:
    """Write ``config.json`` and the weights as safetensors in ``dtype``, prefixed as the family's releases are
    (``visual.`` for Qwen2/2.5-VL, ``model.visual.`` for Qwen3-VL / Qwen3.5 / Qwen4-Exp, ``thinker.visual.`` for the
    Omni models) unless ``prefix`` is given.

    With ``max_shard_bytes`` the tensors are split over shards with a ``model.safetensors.index.json``,
    as large Hugging Face snapshots are.
    """
    from safetensors.numpy import save_file

    if dtype not in _DISK_DTYPES:
        raise CheckpointError(f"dtype must be one of {sorted(_DISK_DTYPES)}, got {dtype!r}")
    if prefix is None:
        prefix = checkpoint_prefix(vision_config_from_dict(config))
    if prefix not in PREFIXES:
        raise CheckpointError(f"prefix must be one of {PREFIXES}, got {prefix!r}")
    path = Path(path)
    config = dict(config, torch_dtype=dtype)
    disk = {prefix + k: np.ascontiguousarray(v.astype(_DISK_DTYPES[dtype])) for k, v in weights.items()}

    def write_config():  # last: a folder without config.json is not taken for a snapshot
        with atomic_file(path / "config.json") as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    if max_shard_bytes is None:
        with atomic_file(path / SINGLE_FILE) as tmp:
            save_file(disk, str(tmp), metadata={"format": "pt"})
        write_config()
        return path
    shards, current, size = [], {}, 0
    for key, value in disk.items():
        if current and size + value.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = value
        size += value.nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        with atomic_file(path / name) as tmp:
            save_file(shard, str(tmp), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": sum(v.nbytes for v in disk.values())}, "weight_map": weight_map}
    with atomic_file(path / INDEX_FILE) as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    write_config()
    return path


def save_random_checkpoint(path: str | os.PathLike, preset: str, seed: int = 0, dtype: str = "bfloat16",
                           max_shard_bytes: int | None = None, prefix: str | None = None, progress=None,
                           overwrite: bool = False, **vision_overrides) -> Path:
    """Write a snapshot directory in the real Hugging Face layout with seeded random weights.

    ``preset``: one of :data:`qvlearn.config.PRESETS`: ``qwen2-vl-2b`` ... ``qwen2.5-vl-72b``; ``qwen3-vl-2b`` ...
    ``qwen3-vl-235b-a22b``, ``qwen3-vl-embedding-2b`` / ``-8b``, ``qwen3-vl-reranker-2b`` / ``-8b``;
    ``qwen3.5-0.8b`` ... ``qwen3.8-27b``; ``qwen3.8-flash-next`` (Qwen4-Exp);
    ``qwen2.5-omni-3b``, ``qwen2.5-omni-7b``, ``qwen3-omni-30b-a3b``; and the ``tiny-*`` towers (``tiny-qwen2-vl``,
    ``tiny-qwen2.5-vl``, ``tiny-qwen3-vl``, ``tiny-qwen3.5``, ``tiny-qwen4-exp``, ``tiny-qwen2.5-omni``,
    ``tiny-qwen3-omni``). ``vision_overrides`` change vision_config fields, e.g. ``depth=4`` for a shallow
    full-width tower (a windowed tower cut in depth keeps the released full-attention blocks that still exist and
    makes its last block full, unless ``fullatt_block_indexes`` is given too).
    ``dtype``: ``bfloat16`` (as released), ``float16`` or ``float32``. ``prefix``: one of :data:`PREFIXES`
    (default: as the family's releases). ``progress(n)`` is called as tensors of ``n`` values are made. An unknown
    override is an error. A folder that already holds a snapshot is refused unless ``overwrite``. Returns the
    directory, which :func:`qvlearn.load_encoder` opens like a download.
    """
    config = preset_config_dict(preset, **vision_overrides)
    cfg = vision_config_from_dict(config, source=f"preset {preset}")
    existing = Path(path)
    if not overwrite and existing.is_dir() and ((existing / "config.json").exists() or any(
            existing.glob("*.safetensors"))):
        raise CheckpointError(f"{existing} already holds a snapshot (config.json or safetensors files): writing "
                              "random weights there would replace it. Give a new folder, or pass overwrite=True")
    return save_checkpoint(path, config, random_weights(cfg, seed, progress), dtype=dtype,
                           max_shard_bytes=max_shard_bytes, prefix=prefix)
