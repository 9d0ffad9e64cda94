"""make conformance, mlx-vlm: its vision towers checked stage by stage against transformers, and its preprocessing.

Called by conformance.py (``--runtime mlx-vlm`` runs this part alone). mlx and mlx-vlm are installed, pinned by
version and sha256 (mlxvlm-requirements.txt, --no-deps: the vision code needs none of mlx-vlm's serving extras), into
build/conformance/mlx-site; tools/conformance/mlxvlm_runner.py runs in a separate process with that folder on its
path (so that its BLAS can be swapped for the timing), and this side turns what it wrote into tap files
(qvlearn.tools.mlxvlm.taps_from_mlxvlm) and judges them as llama.cpp's are judged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from conformance import (
    TAPS_DIR,
    TIMING_IMAGE,
    TIMING_TOWER,
    TOWERS,
    WORK,
    Failed,
    Picture,
    Tower,
    image_file,
    judge,
    log,
    pictures,
    reference_taps,
    save_committed,
    sh,
    transformers_inputs,
    vision_of,
    write_snapshot,
)

HERE = Path(__file__).resolve().parent
SITE = WORK / "mlx-site"
REQUIREMENTS = HERE / "mlxvlm-requirements.txt"
RUNNER = HERE / "mlxvlm_runner.py"
VERSIONS = {"mlx": "0.32.4", "mlx-cpu": "0.32.4", "mlx-vlm": "0.7.10"}
OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"


def install() -> dict:
    """mlx, mlx-cpu and mlx-vlm in build/conformance/mlx-site, checked against the pinned hashes."""
    stamp = SITE / ".installed"
    if stamp.is_file() and stamp.read_text() == REQUIREMENTS.read_text():
        return VERSIONS
    log("installing mlx-vlm (pinned wheels, sha256-checked) into build/conformance/mlx-site")
    sh([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--upgrade", "--target",
        SITE, "-r", REQUIREMENTS])
    stamp.write_text(REQUIREMENTS.read_text())
    return VERSIONS


def full_vision_config(snapshot: Path) -> dict:
    """The snapshot's vision_config with every key spelled out (transformers' defaults filled in; the model_type
    stays the snapshot's, which mlx-vlm's towers check)."""
    from transformers import AutoConfig

    written = json.loads((snapshot / "config.json").read_text())["vision_config"]
    return {**AutoConfig.from_pretrained(snapshot).vision_config.to_dict(), "model_type": written["model_type"]}


PATCHES = sorted((HERE / "patches-mlxvlm").glob("*.patch"))
PATCHED = WORK / "mlx-site-patched"


def patched_site() -> Path:
    """A copy of mlx_vlm with tools/conformance/patches-mlxvlm/*.patch applied (mlx itself is the installed one)."""
    import shutil

    shutil.rmtree(PATCHED, ignore_errors=True)
    PATCHED.mkdir(parents=True)
    shutil.copytree(SITE / "mlx_vlm", PATCHED / "mlx_vlm")
    for patch in PATCHES:
        sh(["patch", "-p1", "--quiet", "-i", patch], WORK / "logs" / "patch-mlxvlm.log", cwd=PATCHED)
    return PATCHED


def run_runner(job: dict, name: str, env: dict | None = None, timeout: float | None = None,
               variant: str = "upstream") -> dict:
    """Run the runner on ``job``; its summary line, or ``{"error": the runner's last line}``."""
    import subprocess

    path = WORK / "mlx" / f"{name}-{variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=1))
    sites = [str(PATCHED)] if variant == "patched" else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sites, str(SITE), os.environ.get("PYTHONPATH", "")]),
           **(env or {})}
    try:
        proc = subprocess.run([sys.executable, RUNNER, path], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    if proc.returncode:
        lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def preprocessing_verdict(arrays: dict, pv, grid) -> dict:
    """mlx-vlm's processor against transformers': the grids, and the pixels where the grids agree."""
    grid_mlx = np.asarray(arrays["processor.grid_thw"]).ravel().tolist()
    grid_ref = np.asarray(grid).ravel().tolist()
    out = {"grid_mlx": grid_mlx, "grid_ref": grid_ref, "same_grid": grid_mlx == grid_ref}
    if out["same_grid"]:
        a = np.asarray(arrays["processor.pixel_values"], np.float64)
        b = np.asarray(pv, np.float64)
        out["pixels_max_abs"] = float(np.max(np.abs(a - b)))
        out["pixels_differ"] = int(np.count_nonzero(np.abs(a - b) > 1e-5))
    return out


def run_tower(tower: Tower, quick: bool, variant: str = "upstream") -> list[dict]:
    """Every picture of ``tower``: mlx-vlm's tower on transformers' inputs (stage by stage) and its preprocessing."""
    snapshot = write_snapshot(tower)
    family = vision_of(tower).family
    patch = vision_of(tower).kind.preprocessing["patch_size"]
    pics = [p for p in pictures(patch) if not p.realistic]
    cases, job_cases = [], []
    for pic in pics:
        image = image_file(pic)
        pv, grid = transformers_inputs(image, family)
        inputs = WORK / "mlx" / f"{tower.name.replace('/', '-')}-{pic.name}-inputs.npz"
        inputs.parent.mkdir(parents=True, exist_ok=True)
        np.savez(inputs, pixel_values=np.asarray(pv, np.float32), grid_thw=np.asarray(grid))
        job_cases.append({"inputs": str(inputs), "image": str(image),
                          "out": str(inputs).replace("-inputs", f"-{variant}-out")})
    config = json.loads((snapshot / "config.json").read_text())
    name = tower.name.replace("/", "-")
    as_written = run_runner({"snapshot": str(snapshot), "family": family, "vision_config": config["vision_config"],
                             "cases": job_cases[:1]}, f"{name}-as-written", variant=variant)
    loaded = {"as_written": as_written}
    if "error" in as_written:
        log(f"  mlx-vlm {variant} {tower.name}: the snapshot's own vision_config fails: {as_written['error'][:120]}")
    # the wheel's reference BLAS takes many minutes for a released width: those towers run on OpenBLAS
    blas, env = ("the wheel's BLAS", {}) if tower.tiny else ("OpenBLAS (preloaded)", openblas_env())
    result = run_runner({"snapshot": str(snapshot), "family": family, "vision_config": full_vision_config(snapshot),
                         "cases": job_cases}, f"{name}-spelled-out", env, variant=variant)
    loaded["spelled_out"] = result
    if "error" in result:
        raise Failed(f"mlx-vlm could not run {tower.name} even with every vision key spelled out: {result['error']}")
    from qvlearn.tools.mlxvlm import taps_from_mlxvlm

    for pic, job_case in zip(pics, job_cases):
        arrays = dict(np.load(job_case["out"]))
        pv, grid = (np.load(job_case["inputs"])[k] for k in ("pixel_values", "grid_thw"))
        stages = taps_from_mlxvlm(arrays, family, pixel_values=pv, grid_thw=grid)
        ref, ours = reference_taps(snapshot, family, pv, grid)
        case = {"runtime": "mlx-vlm", "variant": variant, "tower": tower.name, "family": family, "image": pic.name,
                "blas": blas,
                "arithmetic": judge(stages, ref, ours), "preprocessing": preprocessing_verdict(arrays, pv, grid),
                "config": {"as_written": as_written.get("error") or "loads",
                           "patch_size_as_written": as_written.get("patch_size")}}
        cases.append(case)
        if tower.tiny and pic.name == "multiple" and not quick and variant == "upstream":  # notebook 15 reads them
            save_committed(TAPS_DIR / f"{tower.name}-{pic.name}-mlxvlm.safetensors", stages,
                           f"mlx-vlm {VERSIONS['mlx-vlm']}", config)
            if family == "qwen2_5_vl":
                save_committed(TAPS_DIR / f"{tower.name}-{pic.name}-mlxvlm-preprocessing.safetensors",
                               taps_from_mlxvlm(arrays, family, preprocessing=True), "mlx-vlm's processor", config)
        a, p = case["arithmetic"], case["preprocessing"]
        log(f"  mlx-vlm {variant:8s} {tower.name:16s} {pic.name:12s}: first {a['first']} "
            f"(rel {a['first_rel'] or 0:.1e}); "
            f"embeddings {a['embeddings_rel']:.1e}; grid {'same' if p['same_grid'] else 'differs'}"
            + (f", pixels max {p['pixels_max_abs']:.1e}" if p["same_grid"] else ""))
    return cases


def openblas_env() -> dict:
    if not Path(OPENBLAS).is_file():
        raise Failed(f"{OPENBLAS} is not installed, and mlx's own BLAS takes many minutes per encode at a released "
                     "width: on Debian, apt-get install libopenblas0-pthread (or run --quick, the tiny towers)")
    return {"LD_PRELOAD": OPENBLAS, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}


def timing(repeat: int = 3) -> list[dict]:
    """mlx-vlm on the timing tower and image, with the BLAS its wheel ships and with OpenBLAS preloaded."""
    snapshot = write_snapshot(TIMING_TOWER)
    family = vision_of(TIMING_TOWER).family
    image = image_file(Picture("timing", TIMING_IMAGE, "timing"))
    pv, grid = transformers_inputs(image, family)
    inputs = WORK / "mlx" / "timing-inputs.npz"
    np.savez(inputs, pixel_values=np.asarray(pv, np.float32), grid_thw=np.asarray(grid))
    job = {"snapshot": str(snapshot), "family": family, "vision_config": full_vision_config(snapshot),
           "cases": [{"inputs": str(inputs), "image": None, "out": str(WORK / "mlx" / "timing-out.npz")}],
           "repeat": repeat}
    rows = []
    for blas, env, timeout in (("the wheel's BLAS", {}, 120), ("OpenBLAS (preloaded)", {"LD_PRELOAD": OPENBLAS},
                                                                 900)):
        if env and not Path(OPENBLAS).is_file():
            rows.append({"runtime": "mlx-vlm", "blas": blas, "error": f"{OPENBLAS} is not installed (Debian: "
                                                                      "apt-get install libopenblas0-pthread)"})
            continue
        env = {**env, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
        out = run_runner(job, f"timing-{'openblas' if env.get('LD_PRELOAD') else 'bundled'}", env, timeout)
        if "error" in out:
            rows.append({"runtime": "mlx-vlm", "blas": blas, "error": out["error"]})
        else:
            median, low = np.load(job["cases"][0]["out"])["encode_s"].tolist()
            rows.append({"runtime": "mlx-vlm", "blas": blas, "median_s": median, "min_s": low})
        log(f"  mlx-vlm, {blas}: {rows[-1].get('median_s', rows[-1].get('error'))}")
    return rows


def run(quick: bool) -> dict:
    versions = install()
    towers = [t for t in TOWERS if t.tiny or not quick]
    log("mlx-vlm " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    cases = []
    for tower in towers:
        cases += run_tower(tower, quick)
    patched_site()
    log(f"mlx-vlm with {', '.join(p.name for p in PATCHES)}")
    for tower in towers:
        cases += run_tower(tower, quick, "patched")
    hashes = [ln.split("--hash=")[1] for ln in REQUIREMENTS.read_text().splitlines() if "--hash=" in ln]
    out = {"versions": versions, "patches": [p.name for p in PATCHES], "hashes": hashes, "cases": cases}
    if not quick:
        out["timing"] = timing()
    return out
