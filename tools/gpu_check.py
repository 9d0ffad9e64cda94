"""The GPU path checked in one command, on a machine with an NVIDIA GPU, its own python3 and no network.

    make gpu-wheels                  on a CPU machine with network: the wheels the check may need, in .whl/gpu/
    make gpu-check OUT=DIR           on the GPU machine: python3 tools/gpu_check.py --out DIR
    make gpu-check-dry               on any CPU (CI runs it): the same script, the strict stand-in in place of CuPy,
                                     torch on the CPU, small cases, a 60-second budget

The check installs only what the machine lacks (transformers at the pinned reference version, array-api-compat,
array-api-strict), from the wheels in .whl/gpu/, into a temporary folder (never the network, never the machine's own
packages), then runs its phases in order, each in a process of its own with its own time limit, so that one slow
phase cannot eat the others:

1. versions: driver, GPU, CUDA runtime, CuPy and its package, torch and its CUDA, transformers, NumPy;
2. tests: the GPU-marked tests of the test suite (CuPy against NumPy);
3. parity: ``backend="cupy"`` against transformers on CUDA in float32 (TF32 off on both sides), for every family's
   tiny tower and for Qwen2.5-VL-7B (8 blocks, the 8th full) and Qwen3-VL-8B (4 blocks, DeepStack at 1, 2, 3) at
   their released widths, on an odd grid, a video and a mixed batch: embeddings and DeepStack features;
4. bench: qvlearn on CuPy (float32) against transformers on CUDA (sdpa, float32 and bf16), whole released towers,
   warm, median of 5 with the device synchronised before every clock read, with the spread;
5. memory: the device's peak memory for a 16384-patch image (1792 x 1792) through the Qwen2.5-VL-7B tower.

It writes ``DIR/gpu_check.json`` (everything measured, every failure with its message) and ``DIR/gpu_check.md``,
whose first line says whether the GPU path is proven: every phase passed, every parity figure within 1e-5.
docs/benchmarks.md explains how to read it. Exit 0 when proven (or, dry, when every phase ran), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl" / "gpu"
PARITY_RTOL = 1e-5
PHASES = (("versions", 30), ("tests", 60), ("parity", 150), ("bench", 150), ("memory", 60))
"""The phases in order, with their time limits in seconds on a GPU machine: 450 s in all, within the 8 minutes."""
DRY_PHASES = (("versions", 8), ("tests", 15), ("parity", 17), ("bench", 10), ("memory", 10))
"""The same phases in a dry run on the CPU: 60 s in all."""
NEEDS = (  # import name, distribution, the version the check needs (None: any), whether .whl/gpu carries it
    ("numpy", "numpy", None, False), ("scipy", "scipy", None, False), ("PIL", "pillow", None, False),
    ("safetensors", "safetensors", None, False), ("ml_dtypes", "ml-dtypes", None, False),
    ("tqdm", "tqdm", None, False), ("threadpoolctl", "threadpoolctl", None, False), ("pytest", "pytest", None, False),
    ("torch", "torch", None, False), ("array_api_compat", "array-api-compat", None, True),
    ("array_api_strict", "array-api-strict", None, True), ("transformers", "transformers", "pinned", True),
)
WHEEL_LIMIT = 64 * 2**20  # what travels to the GPU machine with the repository


def pinned(dist: str) -> str:
    """The version constraints.txt pins for ``dist``."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("_", "-") == dist:
            return version.strip()
    raise SystemExit(f"gpu_check: constraints.txt pins no version of {dist}")


# -- set-up: what is missing, from the wheels -------------------------------------------------------------------------
def download_wheels(folder: Path) -> int:
    """``make gpu-wheels``: the carried wheels for Python 3.12 on x86-64 Linux, at constraints.txt's versions."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    wanted = [f"{dist}=={pinned(dist)}" for _, dist, _, carried in NEEDS if carried]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *wanted]
    if subprocess.call(cmd):
        print("gpu-wheels: pip download failed (is the package index reachable?)", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in folder.glob("*.whl"))
    print(f"gpu-wheels: {len(wanted)} wheels in {folder} ({size / 2**20:.1f} MiB of the "
          f"{WHEEL_LIMIT / 2**20:.0f} MiB that may travel): {', '.join(wanted)}")
    if size > WHEEL_LIMIT:
        print("gpu-wheels: too large to travel with the repository", file=sys.stderr)
        return 1
    return 0


def missing_packages() -> list[tuple[str, str, str]]:
    """``(dist, wanted version or "", what is there)`` for each need this Python lacks or has at another version."""
    from importlib import metadata

    lacking = []
    for module, dist, version, _ in NEEDS:
        want = pinned(dist) if version == "pinned" else ""
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            have = ""
        if not have or (want and have != want):
            lacking.append((dist, want, have or "not installed"))
    return lacking


def install_missing(site: Path, wheels: Path) -> dict:
    """Install what is missing from ``wheels`` into ``site`` (pip --no-index --no-deps: never the network)."""
    lacking = missing_packages()
    report = {"missing": [f"{d} {w or ''} (here: {h})".replace("  ", " ") for d, w, h in lacking], "installed": []}
    files = []
    for dist, want, _ in lacking:
        stem = dist.replace("-", "_")
        found = sorted(wheels.glob(f"{stem}-{want or ''}*.whl"))
        if not found:
            report.setdefault("unavailable", []).append(dist)
            continue
        files.append(found[-1])
    if files:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--target", str(site), *map(str, files)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            report["install_error"] = proc.stderr.strip()[-500:]
        report["installed"] = [f.name for f in files]
    return report


# -- the phases, each in a process of its own --------------------------------------------------------------------------
class Recorder:
    """The phase's results, written to its JSON file after every item, so that a phase stopped at its time limit
    still hands over what it measured."""

    def __init__(self, path: Path):
        self.path, self.data = path, {"items": []}

    def add(self, **item):
        self.data["items"].append(item)
        self.save()

    def set(self, **values):
        self.data.update(values)
        self.save()

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def _setup(dry: bool):
    """``(backend name, torch device, torch)`` of the run, with TF32 off in torch (cuBLAS and cuDNN)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return ("strict", "cpu", torch) if dry else ("cupy", "cuda", torch)


def phase_versions(rec: Recorder, dry: bool) -> None:
    import numpy

    backend_name, device, torch = _setup(dry)
    import transformers

    import qvlearn

    info = {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "torch_sees_cuda": bool(torch.cuda.is_available()),
            "transformers": transformers.__version__, "qvlearn": qvlearn.__version__}
    backend = qvlearn.get_backend(backend_name)
    info["backend"] = backend.describe()
    if not dry:
        import cupy

        info["cupy"] = cupy.__version__
        info["cupy_package"] = backend.package
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"not run: {exc}"
    rec.set(info=info, ok=True)


def phase_tests(rec: Recorder, dry: bool) -> None:
    files = ["tests/test_backend.py", "tests/test_qwen3.py", "tests/test_bench.py"]  # where the GPU tests live
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *files]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    rec.set(command=" ".join(cmd[2:]), returncode=proc.returncode, summary=lines[-1] if lines else "",
            tail="\n".join(lines[-15:]) + proc.stderr[-1500:], ok=proc.returncode == 0)


def _snapshot(work: Path, preset: str, dtype: str = "bfloat16", **overrides) -> Path:
    import qvlearn

    name = preset + "".join(f"-{k}{v}" for k, v in sorted(overrides.items())).replace(" ", "").replace(",", "_")
    path = work / f"{name}-{dtype}"
    if not (path / "config.json").exists():
        qvlearn.save_random_checkpoint(path, preset, dtype=dtype, **overrides)
    return path


def _inputs(family: str) -> dict:
    """The three inputs of the parity phase, preprocessed as ``family`` is."""
    import numpy as np

    import qvlearn

    rng = np.random.default_rng(1)
    odd = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)  # an odd merged grid (5 x 8 for 14-px patches)
    square = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    video = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]  # 3 frames: padded to 4
    return {"odd grid": qvlearn.preprocess(images=[odd], family=family),
            "video": qvlearn.preprocess(videos=[video], family=family),
            "mixed batch": qvlearn.preprocess(images=[odd, square], videos=[video], family=family)}


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0))


def phase_parity(rec: Recorder, dry: bool, work: Path) -> None:
    import qvlearn
    from qvlearn.tools.reference import reference_tower, reference_trace

    backend_name, device, torch = _setup(dry)
    tiny = ("tiny-qwen2.5-vl", "tiny-qwen3-vl") if dry else (  # dry: the windowed and the DeepStack code paths
        "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5", "tiny-qwen4-exp", "tiny-qwen2.5-omni",
        "tiny-qwen3-omni")
    towers = [(p, {}) for p in tiny]
    if not dry:  # released widths, cut in depth
        towers += [("qwen2.5-vl-7b", {"depth": 8}),
                   ("qwen3-vl-8b", {"depth": 4, "deepstack_visual_indexes": [1, 2, 3]})]
    worst = 0.0
    for preset, overrides in towers:
        path = _snapshot(work, preset, **overrides)
        label = preset + (f" ({overrides['depth']} blocks)" if overrides else "")
        try:
            encoder = qvlearn.load_encoder(path, backend=backend_name)
            tower = reference_tower(path, dtype=torch.float32).to(device)
            for name, (pixel_values, grid_thw) in _inputs(encoder.family).items():
                ours, features = encoder(pixel_values, grid_thw, deepstack=True)
                encoder.backend.synchronize()
                theirs = reference_trace(tower, pixel_values, grid_thw)
                figures = {"embeddings": _rel(encoder.backend.to_numpy(ours), theirs["embeddings"])}
                for j, feature in enumerate(features):
                    figures[f"deepstack.{j}"] = _rel(encoder.backend.to_numpy(feature), theirs[f"deepstack.{j}"])
                worst = max(worst, *figures.values())
                rec.add(tower=label, input=name, grid_thw=grid_thw.tolist(), rel=figures,
                        ok=all(v <= PARITY_RTOL for v in figures.values()))
            del tower
        except Exception as exc:  # recorded with its message; the other towers still run
            rec.add(tower=label, error=f"{type(exc).__name__}: {exc}"[:500], ok=False)
    items = rec.data["items"]
    rec.set(worst=worst, ok=bool(items) and all(i["ok"] for i in items), rtol=PARITY_RTOL)


def _timed(run, sync, repeat: int, warmup: int) -> dict:
    for _ in range(warmup):
        run()
        sync()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return {"times": times, "median": statistics.median(times), "min": min(times), "max": max(times)}


class DevicePeak:
    """The peak of device memory in use: the benchmark's CuPy pool peak or torch's peak, or None on the CPU."""

    def __init__(self, kind: str, torch=None):
        from qvlearn.tools.bench import CupyPeak, TorchPeak

        self.meter = CupyPeak() if kind == "cupy" else TorchPeak(torch) if kind == "torch" else None

    def reset(self):
        if self.meter is not None:
            self.meter.reset()

    def peak(self) -> int | None:
        return None if self.meter is None else self.meter.peak()


def _image(height: int, width: int, family: str):
    import numpy as np

    import qvlearn

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return qvlearn.preprocess(images=[pixels], family=family)


def _qvlearn_case(path, height, width, backend_name, repeat, warmup, weights_dtype="float32"):
    import qvlearn

    encoder = qvlearn.load_encoder(path, backend=backend_name, weights_dtype=weights_dtype)
    pixel_values, grid_thw = _image(height, width, encoder.family)
    x = encoder.backend.asarray(pixel_values)
    peak = DevicePeak(backend_name)
    peak.reset()
    result = _timed(lambda: encoder(x, grid_thw), encoder.backend.synchronize, repeat, warmup)
    return dict(result, patches=int(grid_thw.prod(1).sum()), peak_device=peak.peak())


def _torch_case(path, height, width, device, torch, dtype, repeat, warmup):
    from qvlearn.tools.reference import reference_tower

    tower = reference_tower(path, attn_implementation="sdpa", dtype=getattr(torch, dtype)).to(device)
    family = qvlearn_family(path)
    pixel_values, grid_thw = _image(height, width, family)
    x = torch.from_numpy(pixel_values).to(device, getattr(torch, dtype))
    grid = torch.from_numpy(grid_thw).to(device)
    peak = DevicePeak("torch" if device == "cuda" else "none", torch)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        with torch.no_grad():
            tower(x, grid)
    peak.reset()
    result = _timed(run, sync, repeat, warmup)
    return dict(result, patches=int(grid_thw.prod(1).sum()), peak_device=peak.peak())


def qvlearn_family(path) -> str:
    import qvlearn

    return qvlearn.read_config(path).family


def phase_bench(rec: Recorder, dry: bool, work: Path) -> None:
    backend_name, device, torch = _setup(dry)
    cases = ([("tiny-qwen2.5-vl", 112, 112)] if dry else
             [("qwen2.5-vl-7b", 588, 784), ("qwen3-vl-8b", 768, 768)])
    repeat, warmup = (2, 1) if dry else (5, 2)
    for preset, height, width in cases:
        path = _snapshot(work, preset)
        runs = [("qvlearn", "float32", lambda: _qvlearn_case(path, height, width, backend_name, repeat, warmup))]
        runs += [("transformers", dt, lambda dt=dt: _torch_case(path, height, width, device, torch, dt, repeat,
                                                                 warmup)) for dt in ("float32", "bfloat16")]
        for impl, dtype, run in runs:
            try:
                rec.add(case=f"{preset} {height}x{width}", impl=impl, dtype=dtype, **run(), ok=True)
                if device == "cuda":
                    torch.cuda.empty_cache()  # the last tower's memory, before the next one is loaded
            except Exception as exc:
                rec.add(case=f"{preset} {height}x{width}", impl=impl, dtype=dtype,
                        error=f"{type(exc).__name__}: {exc}"[:500], ok=False)
    rec.set(ok=all(i["ok"] for i in rec.data["items"]))


def phase_memory(rec: Recorder, dry: bool, work: Path) -> None:
    backend_name, device, torch = _setup(dry)
    preset, side = ("tiny-qwen2.5-vl", 448) if dry else ("qwen2.5-vl-7b", 1792)  # 16384 patches on the GPU
    path = _snapshot(work, preset)
    for impl in ("qvlearn", "transformers"):
        try:
            if impl == "qvlearn":
                result = _qvlearn_case(path, side, side, backend_name, 1, 0)
            else:
                result = _torch_case(path, side, side, device, torch, "float32", 1, 0)
            rec.add(case=f"{preset} {side}x{side}", impl=impl, **result, ok=True)
        except Exception as exc:
            rec.add(case=f"{preset} {side}x{side}", impl=impl, error=f"{type(exc).__name__}: {exc}"[:500], ok=False)
    rec.set(ok=all(i["ok"] for i in rec.data["items"]))


RUNNERS = {"versions": phase_versions, "tests": phase_tests, "parity": phase_parity, "bench": phase_bench,
           "memory": phase_memory}


def run_phase(name: str, result: Path, work: Path, dry: bool) -> int:
    rec = Recorder(result)
    rec.set(ok=False)
    runner = RUNNERS[name]
    args = (rec, dry, work) if name in ("parity", "bench", "memory") else (rec, dry)
    try:
        runner(*args)
    except Exception as exc:
        rec.set(ok=False, error=f"{type(exc).__name__}: {exc}"[:1000])
        return 1
    return 0 if rec.data.get("ok") else 1


# -- the parent: set-up, phases under their limits, the report ----------------------------------------------------
def check(out: Path, dry: bool, wheels: Path) -> int:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": dry, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
              "python": sys.executable, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="qvlearn-gpu-check-") as tmp:
        tmp = Path(tmp)
        site = tmp / "site"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1")
        if dry:
            report["setup"] = {"note": "dry run: the environment's own packages, nothing installed"}
        else:
            report["setup"] = install_missing(site, wheels)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT), env.get("PYTHONPATH")) if p)
        if dry:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        work = tmp / "snapshots"
        work.mkdir()
        for name, limit in (DRY_PHASES if dry else PHASES):
            result = tmp / f"{name}.json"
            began = time.monotonic()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--result", str(result),
                   "--work", str(work)] + (["--dry"] if dry else [])
            print(f"gpu-check: {name} (limit {limit} s) ...", flush=True)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=ROOT)
                status = "passed" if proc.returncode == 0 else "failed"
                stderr = proc.stderr
            except subprocess.TimeoutExpired as exc:
                status = f"timed out after {limit} s"
                stderr = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else \
                    (exc.stderr or "")
            phase = json.loads(result.read_text()) if result.exists() else {}
            phase.update(status=status, seconds=round(time.monotonic() - began, 1))
            if status != "passed" and stderr.strip():
                phase["stderr_tail"] = stderr.strip()[-1500:]
            report["phases"][name] = phase
            print(f"gpu-check: {name} {status} in {phase['seconds']} s", flush=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    passed = all(p["status"] == "passed" for p in report["phases"].values())
    report["proven"] = passed and not dry
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print((out / "gpu_check.md").read_text().splitlines()[0])
    return 0 if passed else 1


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def markdown(report: dict) -> str:
    phases = report["phases"]
    info = phases.get("versions", {}).get("info", {})
    failed = [f"{n} {p['status']}" for n, p in phases.items() if p["status"] != "passed"]
    if report["dry_run"]:
        head = ("# GPU check, dry run on the CPU: " + ("every phase ran" if not failed else "FAILED: " +
                ", ".join(failed)) + " (the strict stand-in, not a GPU: this proves the script, not the GPU path)")
    elif report["proven"]:
        head = (f"# The GPU path is PROVEN on {info.get('backend', 'the GPU')}: every phase passed, parity within "
                f"{PARITY_RTOL:g} of transformers on CUDA (worst {phases['parity'].get('worst', float('nan')):.1e})")
    else:
        head = "# The GPU path is NOT proven: " + ", ".join(failed)
    lines = [head, "", f"Run {report['started']} on {report['host']} in {report['seconds']} s "
             f"({'dry run' if report['dry_run'] else 'GPU'}), Python {info.get('python', '?')}.", ""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
    setup = report.get("setup", {})
    lines += ["## Set-up", "", f"- missing here: {', '.join(setup.get('missing', [])) or 'nothing'}",
              f"- installed from .whl/gpu: {', '.join(setup.get('installed', [])) or 'nothing'}"]
    if setup.get("unavailable") or setup.get("install_error"):
        lines.append(f"- NOT available: {setup.get('unavailable')} {setup.get('install_error', '')}")
    lines += ["", "## Phases", "", "| phase | status | seconds |", "|---|---|---:|"]
    lines += [f"| {n} | {p['status']} | {p['seconds']} |" for n, p in phases.items()]
    for name, phase in phases.items():
        if phase.get("error") or phase.get("stderr_tail"):
            lines += ["", f"{name}: `{phase.get('error') or phase['stderr_tail'].splitlines()[-1]}`"]
    tests = phases.get("tests", {})
    if tests:
        lines += ["", "## GPU-marked tests", "", f"`{tests.get('command', '')}`: {tests.get('summary', 'not run')}"]
    parity = phases.get("parity", {}).get("items", [])
    if parity:
        lines += ["", f"## Parity against transformers, float32 (max |a - b| / max |b|; limit {PARITY_RTOL:g})", "",
                  "| tower | input | grid_thw | embeddings | DeepStack (worst) | |", "|---|---|---|---:|---:|---|"]
        for item in parity:
            if "error" in item:
                lines.append(f"| {item['tower']} | | | failed: {item['error'][:200]} | | FAIL |")
                continue
            rel = item["rel"]
            deep = max((v for k, v in rel.items() if k.startswith("deepstack")), default=None)
            lines.append(f"| {item['tower']} | {item['input']} | {item['grid_thw']} | {rel['embeddings']:.1e} | "
                         f"{'' if deep is None else f'{deep:.1e}'} | {'ok' if item['ok'] else 'FAIL'} |")
    for name, title in (("bench", "Speed (warm, device synchronised before every clock read)"),
                        ("memory", "Peak device memory, one large image (16384 patches on a GPU)")):
        items = phases.get(name, {}).get("items", [])
        if not items:
            continue
        lines += ["", f"## {title}", "", "| case | implementation | patches | median ms | min ms | max ms | "
                  "peak device GiB |", "|---|---|---:|---:|---:|---:|---:|"]
        for item in items:
            impl = f"{item['impl']} {item.get('dtype', 'float32')}"
            if "error" in item:
                lines.append(f"| {item['case']} | {impl} | failed: {item['error'][:200]} | | | | |")
                continue
            peak = item.get("peak_device")
            peak = "n/a" if peak is None else f"{peak / 2**30:.2f}"
            lines.append(f"| {item['case']} | {impl} | {item['patches']} | {_ms(item['median'])} | "
                         f"{_ms(item['min'])} | {_ms(item['max'])} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry", action="store_true", help="on the CPU: the strict stand-in, torch on the CPU")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="the wheels to install what is missing from")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="make gpu-wheels: fill DIR and stop")
    parser.add_argument("--phase", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels)
    if args.phase:
        return run_phase(args.phase, args.result, args.work, args.dry)
    if args.out is None:
        parser.error("--out DIR is required (make gpu-check OUT=DIR)")
    return check(args.out, args.dry, args.wheels)


if __name__ == "__main__":
    sys.exit(main())
