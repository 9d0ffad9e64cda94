"""mlx-vlm's side of make conformance: runs inside the environment that has mlx and mlx-vlm (a separate process).

    python tools/conformance/mlxvlm_runner.py JOB.json

JOB.json: ``{"snapshot": DIR, "family": "qwen2_5_vl", "vision_config": {...}, "cases": [{"inputs": NPZ,
"image": PNG or null, "out": NPZ}, ...], "repeat": 0}``. For each case it

- builds mlx-vlm's own ``VisionModel`` from ``vision_config`` (the snapshot's, or the one spelled out in full) and
  loads the snapshot's ``visual.*`` weights through the model's own ``sanitize``, strictly;
- encodes the case's pixel_values and grid (transformers', so that the arithmetic is judged alone), recording the
  outputs of the submodules :data:`qvlearn.tools.mlxvlm.MLXVLM_STAGES` names, as forward hooks would (a wrapper
  that calls the module and keeps its output; nothing in mlx-vlm is changed);
- runs mlx-vlm's own preprocessing on the image file (``mlx_vlm.utils.load_image`` and the numpy
  ``Qwen3VLImageProcessor`` with the kwargs its processors read from ``preprocessor_config.json``);
- writes everything to the case's ``out`` as NumPy arrays named by mlx-vlm's module paths.

With ``repeat`` > 0 it also times the encode (after one warm-up): ``encode_s`` in the output, median and min.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

MODULES = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "qwen3_5": "qwen3_5"}
DEFAULT_PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16, "qwen3_5": 16}
"""The default_patch_size each family's mlx-vlm processor passes when preprocessor_config.json has none."""


class Tap:
    """Calls ``inner`` and keeps its output under ``name`` (a forward hook for a framework that has none)."""

    def __init__(self, inner, name: str, store: dict):
        self.inner, self.name, self.store = inner, name, store

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.store[self.name] = out
        return out

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def _resolve(root, path: str):
    parent, obj = None, root
    for part in path.split("."):
        parent = obj
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return parent, part, obj


def install_taps(model, paths, store: dict) -> list[str]:
    """Wrap each submodule in ``paths`` (``blocks.{i}.norm1`` expanded over the blocks) that exists."""
    done = []
    for path in sorted(paths, key=lambda p: -p.count(".")):  # the insides first, then the modules around them
        expanded = [path.format(i=i) for i in range(len(model.blocks))] if "{i}" in path else [path]
        for p in expanded:
            try:
                parent, part, obj = _resolve(model, p)
            except (AttributeError, IndexError, KeyError):
                continue
            if part.isdigit():
                parent[int(part)] = Tap(obj, p, store)
            else:
                object.__setattr__(parent, part, Tap(obj, p, store))
            done.append(p)
    return done


def load_vision(snapshot: Path, family: str, vision_config: dict):
    import importlib

    import mlx.core as mx

    package = importlib.import_module(f"mlx_vlm.models.{MODULES[family]}")
    config = package.VisionConfig.from_dict(vision_config)
    model = package.VisionModel(config)
    weights = {}
    for f in sorted(snapshot.glob("*.safetensors")):
        weights.update(mx.load(str(f)))
    prefixes = ("model.visual.", "visual.")
    vision = {}
    for k, v in weights.items():
        for prefix in prefixes:
            if k.startswith(prefix):
                vision[k[len(prefix):]] = v
                break
    if not vision:
        raise SystemExit(f"{snapshot}: no visual.* or model.visual.* weights")
    model.load_weights(list(model.sanitize(vision).items()), strict=True)
    mx.eval(model.parameters())
    return model, config


def preprocess(snapshot: Path, family: str, image: str) -> dict:
    from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import Qwen3VLImageProcessor, _qwen_vl_image_kwargs
    from mlx_vlm.utils import load_image

    kwargs = _qwen_vl_image_kwargs(str(snapshot), default_patch_size=DEFAULT_PATCH[family])
    out = Qwen3VLImageProcessor(**kwargs)([load_image(image)])
    return {"processor.pixel_values": np.asarray(out["pixel_values"], np.float32),
            "processor.grid_thw": np.asarray(out["image_grid_thw"], np.int64)}


def main(job_file: str) -> int:
    import mlx.core as mx

    from qvlearn.tools.mlxvlm import MLXVLM_STAGES, applies

    job = json.loads(Path(job_file).read_text())
    snapshot, family = Path(job["snapshot"]), job["family"]
    model, config = load_vision(snapshot, family, job["vision_config"])
    store: dict = {}
    paths = sorted({path for path, _, families, _ in MLXVLM_STAGES if path.startswith(("blocks", "merger",
                                                                                          "patch_embed"))
                    and applies(families, family)})
    install_taps(model, paths, store)
    window = {}
    if hasattr(model, "get_window_index"):
        inner = model.get_window_index

        def get_window_index(grid_thw):
            index, cu = inner(grid_thw)
            window["window_index"] = index
            return index, cu

        object.__setattr__(model, "get_window_index", get_window_index)
    if hasattr(model, "fast_pos_embed_interpolate"):
        object.__setattr__(model, "fast_pos_embed_interpolate",
                           Tap(model.fast_pos_embed_interpolate, "fast_pos_embed_interpolate", store))
    for case in job["cases"]:
        store.clear()
        window.clear()
        data = np.load(case["inputs"])
        pv, grid = mx.array(data["pixel_values"].astype(np.float32)), mx.array(data["grid_thw"].astype(np.int32))
        result = model(pv, grid)
        embeddings, deepstack = (result if isinstance(result, tuple) else (result, []))
        mx.eval(embeddings, *deepstack, *store.values())
        arrays = {name: np.asarray(v, np.float32) for name, v in store.items()}
        arrays["embeddings"] = np.asarray(embeddings, np.float32)
        for j, d in enumerate(deepstack):
            arrays[f"deepstack.{j}"] = np.asarray(d, np.float32)
        if "window_index" in window:
            arrays["window_index"] = np.asarray(window["window_index"], np.int64)
        if case.get("image"):
            arrays.update(preprocess(snapshot, family, case["image"]))
        if job.get("repeat"):
            times = []
            for k in range(job["repeat"] + 1):
                t0 = time.perf_counter()
                out = model(pv, grid)
                mx.eval(out)
                if k:
                    times.append(time.perf_counter() - t0)
            arrays["encode_s"] = np.asarray([statistics.median(times), min(times)])
        np.savez(case["out"], **arrays)
    print(json.dumps({"mlx": mx.__version__, "patch_size": config.patch_size, "cases": len(job["cases"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
