"""Benchmark: qvlearn (NumPy, float32) against transformers (torch CPU, float32, sdpa) in one run.

    python -m qvlearn.bench --report R.md --plot P.png   # every CPU case, the 1792x1792 memory case, loading
    python -m qvlearn.bench --tiny                       # a seconds-long smoke run on the tiny presets
    python -m qvlearn.bench --gpu --report G.md          # qvlearn on CuPy against transformers on CUDA

Each (implementation, case) runs in its own subprocess on the same seeded random-weight checkpoint and
the same input, so that its peak resident memory is its own: the worker loads the tower, runs the
warm-up forwards, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the timed
forwards and reads the peak (``VmHWM``). Times are medians. The FLOP count is analytic (matmuls only:
every linear layer, ``q k^T`` and ``p v`` of every segment). The report names the machine: the CPU and its
vector flags, NumPy's BLAS with the kernel it picked and its threads (threadpoolctl), torch's build, and the
float32 matmul throughput of both NumPy and torch measured in the same run (best of 2048^3 and 4096^3 products),
so that a machine's limit can be told from the engine's.
Loading is timed cold (the checkpoint's pages dropped from the page cache) and warm, in a fresh process.
On a machine without a GPU, ``--gpu`` says so and measures nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..cost import forward_flops

CASES = [  # (preset, resized height, resized width): multiples of 28 (32 for Qwen3), kept as they are;
    # 1024, 2352 (2304 for Qwen3's 16-pixel patches) and 9216 patches in each family
    ("qwen2.5-vl-7b", 448, 448), ("qwen2.5-vl-7b", 588, 784), ("qwen2.5-vl-7b", 1344, 1344),
    ("qwen2-vl-2b", 448, 448), ("qwen2-vl-2b", 588, 784), ("qwen2-vl-2b", 1344, 1344),
    ("qwen3-vl-8b", 512, 512), ("qwen3-vl-8b", 768, 768), ("qwen3-vl-8b", 1536, 1536),
    # the rest of the lineage, at 2352 / 2304 patches: Qwen3.5's small tower (768 wide, 12 heads of 64), and
    # Qwen2.5-Omni's (transformers runs its separate q, k, v; qvlearn one fused qkv)
    ("qwen3.5-0.8b", 768, 768), ("qwen2.5-omni-7b", 588, 784),
]
TINY_CASES = [("tiny-qwen2.5-vl", 112, 112), ("tiny-qwen2-vl", 112, 168), ("tiny-qwen3-vl", 128, 192)]
BIG_CASES = [  # 16384 patches, timed and measured for memory on towers cut to their first blocks (preset, h, w, depth):
    # 4 blocks, all full attention, for Qwen2-VL and Qwen3-VL; 8 for Qwen2.5-VL, whose first full block is the 8th
    ("qwen2-vl-2b", 1792, 1792, 4), ("qwen2.5-vl-7b", 1792, 1792, 8), ("qwen3-vl-8b", 2048, 2048, 4),
]
STEP_CASES = [("qwen2.5-vl-7b", 588, 784), ("qwen2-vl-2b", 588, 784), ("qwen3-vl-8b", 768, 768)]  # per-step profile
STEPS = [  # (key, what it covers): the steps of a block, as qvlearn.engine.block.vision_block runs them
    ("projection", "norm1 → qkv (→ RoPE: qvlearn)"),
    ("attention", "attention (RoPE → attention: transformers)"),
    ("first half", "norm1 → qkv → RoPE → attention"),
    ("finish", "proj → residual → norm2 → MLP → residual"),
    ("block", "whole block"),
]
KERNEL_CASES = [  # --kernels: (preset, h, w, depth; 0 = whole tower): the same tower whole and cut to 8 blocks,
    # full attention at 9216 patches, Qwen3-VL whole; per step, qvlearn under each OpenBLAS family the CPU runs
    ("qwen2.5-vl-7b", 588, 784, 0), ("qwen2.5-vl-7b", 588, 784, 8), ("qwen2-vl-2b", 1344, 1344, 4),
    ("qwen3-vl-8b", 768, 768, 0),
]
INNER = [  # qvlearn's kernels inside its blocks, core-ms per block (the row parts run them side by side)
    ("matmul", "inside: matmuls of the linear layers (core-ms)"), ("bias", "inside: bias adds (core-ms)"),
    ("norm", "inside: norms (core-ms)"), ("activation", "inside: MLP activations (core-ms)"),
]
BUSY_CASES = [("qwen2-vl-2b", 588, 784)]  # run again beside a competing process
COMPETITOR = ("import numpy as np\n"  # one core's worth of float32 matmuls, forever (killed by the benchmark)
              "a = np.ones((1024, 1024), dtype=np.float32)\n"
              "while True:\n    a @ a\n")
LARGE = 5000  # cases with more patches are timed once, without warm-up


def shortened(preset: str, depth: int) -> dict:
    """Vision overrides that cut ``preset`` to its first ``depth`` blocks (none when ``depth`` is 0): the lists
    naming blocks (full-attention blocks, DeepStack taps) keep the blocks that remain."""
    if not depth:
        return {}
    from ..config import PRESETS

    vision = PRESETS[preset]["vision_config"]
    overrides = {"depth": depth}
    for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
        if key in vision:
            overrides[key] = [i for i in vision[key] if i < depth]
    return overrides


def matmul_gflops(size: int = 4096, repeat: int = 5, wrap=None) -> float:
    """The float32 ``size``³ product's rate in this process (median of ``repeat``), NumPy's, or the library that
    ``wrap`` hands the arrays to (``torch.from_numpy``: torch's)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a.copy()
    if wrap is not None:
        a, b = wrap(a), wrap(b)
    a @ b
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _peak_rss_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(args) -> dict:
    """One implementation on one case, in this process; prints a JSON line.

    On a GPU (``--backend cupy`` / ``--device cuda``) the input is moved to the device before the clock
    starts (for both implementations), every timed forward ends with a device synchronisation, and the
    peak memory is the device's: the CuPy memory pool's peak of used bytes, torch's
    ``max_memory_allocated``; on the CPU it is the process's peak resident set."""
    from ..config import preset_config
    from ..preprocessing import preprocess
    from .course import model_dir

    path = model_dir(args.preset, **shortened(args.preset, args.depth))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    pixel_values, grid_thw = preprocess(images=[image], family=preset_config(args.preset).family,
                                        max_pixels=max(16777216, args.height * args.width))
    baseline = _rss("VmRSS")
    start = time.perf_counter()
    if args.worker == "qvlearn":
        from ..backend import get_backend
        from ..encoder import load_encoder

        backend = get_backend(args.backend)
        device_peak = CupyPeak() if args.backend == "cupy" else None
        encoder = load_encoder(path, backend=backend, weights_dtype=args.weights_dtype)
        weights = encoder.weight_bytes()
        x = backend.asarray(pixel_values)

        def run():
            encoder(x, grid_thw)
            backend.synchronize()
        threads = _blas_threads()
        dtype = "float32"
    else:
        import torch

        from .reference import reference_tower

        dtype = args.torch_dtype
        model = reference_tower(path, attn_implementation="sdpa", dtype=getattr(torch, dtype)).to(args.device)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        x = torch.from_numpy(pixel_values).to(args.device, getattr(torch, dtype))
        g = torch.from_numpy(grid_thw).to(args.device)
        device_peak = TorchPeak(torch) if args.device == "cuda" else None

        def run():
            with torch.no_grad():
                model(x, g)
            if args.device == "cuda":
                torch.cuda.synchronize()
        threads = torch.get_num_threads()
    load_seconds = time.perf_counter() - start
    clock = None
    if args.steps:
        clock = _QvlearnSteps() if args.worker == "qvlearn" else _TransformersSteps(model)
        if args.worker == "qvlearn":
            encoder = encoder.with_kernels(clock.kernels(encoder.kernels))
    for _ in range(args.warmup):
        run()
    _peak_rss_reset()
    if device_peak:
        device_peak.reset()
    times, steps = [], None
    for _ in range(args.repeat):
        if clock:
            clock.reset()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if clock and times[-1] == min(times):  # the steps of the fastest forward
            steps = clock.per_block(times[-1])
    rate = None
    if args.steps:  # the process's own float32 matmul rate, after its forwards: the floor of its matmuls
        if args.worker == "qvlearn":
            rate = matmul_gflops(2048) if args.backend == "numpy" else None
        elif args.device == "cpu":
            rate = matmul_gflops(2048, wrap=torch.from_numpy)
    blas_kernel = None
    if args.worker == "qvlearn" and args.backend == "numpy":
        from .blas import numpy_blas

        blas_kernel = numpy_blas().get("architecture")
    result = dict(impl=args.worker, preset=args.preset, height=args.height, width=args.width,
                  patches=int(grid_thw.prod(1).sum()), grid_thw=grid_thw.tolist(), times=times,
                  median=statistics.median(times), peak_rss=_rss("VmHWM"), baseline_rss=baseline,
                  weight_bytes=int(weights), load_seconds=load_seconds, threads=threads,
                  weights_dtype=args.weights_dtype, depth=args.depth, dtype=dtype,
                  peak_device=device_peak.peak() if device_peak else None, steps=steps, matmul_gflops=rate,
                  blas_kernel=blas_kernel)
    print(json.dumps(result))
    return result


class _StepClock:
    """Wall time per named step, summed over one forward; ``per_block`` turns the sums into milliseconds per
    block plus the seconds spent outside the blocks."""

    def __init__(self):
        self.seconds, self.blocks = {}, 0

    def reset(self):
        self.seconds, self.blocks = {}, 0

    def add(self, name, seconds):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def count_block(self) -> None:
        self.blocks += 1

    def per_block(self, total) -> dict:
        out = {name: 1e3 * s / max(1, self.blocks) for name, s in self.seconds.items()}
        out["outside blocks s"] = total - self.seconds.get("block", 0.0)
        return out


class _QvlearnSteps(_StepClock):
    """The three steps of every qvlearn block (:func:`qvlearn.engine.block.vision_block`): ``projection`` (norm1,
    qkv, RoPE: ``K.project``), ``attention`` (``K.attend``) and ``finish`` (proj, residual, norm2, MLP, residual:
    ``K.finish``), and the whole ``block``, timed by a kernel table whose entries wrap the engine's with a clock
    (:meth:`kernels`). Inside the blocks, the ``matmul``, ``bias``, ``norm`` and ``activation`` kernels are timed
    too, summed over the row parts that run them side by side (core time, not wall time)."""

    def kernels(self, base):
        """``base`` with its block steps timed."""
        def timed(name, fn):
            def run(*args, **kwargs):
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                self.add(name, time.perf_counter() - t0)
                return out
            return run

        lock, inside = threading.Lock(), [False]

        def inner(name, fn):  # called from the row parts' threads: summed core time, inside the blocks only
            def run(*args, **kwargs):
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                if inside[0]:
                    with lock:
                        self.add(name, time.perf_counter() - t0)
                return out
            return run

        def linear(x, weight, bias=None):  # the engine's linear, its matmul and its bias add timed apart
            y = inner("matmul", lambda: x @ weight.T)()
            return y if bias is None else inner("bias", lambda: y.__iadd__(bias))()

        def counted(*args, **kwargs):
            self.blocks += 1
            inside[0] = True
            try:
                return timed("block", base.block)(*args, **kwargs)
            finally:
                inside[0] = False
        from ..engine.kernels import KERNELS

        own_linear = base.linear is KERNELS.linear  # another table's linear (a precision emulation) is timed whole
        return base.replace(project=timed("projection", base.project), attend=timed("attention", base.attend),
                            finish=timed("finish", base.finish), block=counted,
                            linear=linear if own_linear else inner("matmul", base.linear),
                            layer_norm=inner("norm", base.layer_norm), rms_norm=inner("norm", base.rms_norm),
                            activations=MappingProxyType({k: inner("activation", f)
                                                          for k, f in base.activations.items()}))


class _TransformersSteps(_StepClock):
    """The same steps in transformers' vision blocks, from forward hooks on ``norm1``, ``attn`` (and its ``qkv``,
    ``proj``), ``norm2``, ``mlp`` and the block: ``projection`` = norm1 + qkv; ``attention`` = attn - qkv - proj
    (RoPE, sdpa, reshapes); ``finish`` = block - norm1 - attention - qkv (proj, norm2, MLP, the residuals)."""

    def __init__(self, model):
        super().__init__()
        self.starts = {}
        for blk in model.blocks:
            for name, module in (("block", blk), ("norm1", blk.norm1), ("attn", blk.attn), ("qkv", blk.attn.qkv),
                                 ("proj", blk.attn.proj), ("norm2", blk.norm2), ("mlp", blk.mlp)):
                module.register_forward_pre_hook(
                    lambda m, a, name=name: self.starts.__setitem__(name, time.perf_counter()))
                module.register_forward_hook(
                    lambda m, a, o, name=name: self.add(name, time.perf_counter() - self.starts[name]))
            blk.register_forward_pre_hook(lambda m, a: self.count_block())

    def per_block(self, total) -> dict:
        raw = super().per_block(total)
        attention = raw["attn"] - raw["qkv"] - raw["proj"]
        return {"projection": raw["norm1"] + raw["qkv"], "attention": attention,
                "finish": raw["block"] - raw["norm1"] - raw["qkv"] - attention, "block": raw["block"],
                "outside blocks s": raw["outside blocks s"]}


class CupyPeak:
    """Peak bytes in use in CuPy's default memory pool, read at every allocation."""

    def __init__(self):
        import cupy

        self.pool = cupy.get_default_memory_pool()
        self.value = 0

        def malloc(size):
            memory = self.pool.malloc(size)
            self.value = max(self.value, self.pool.used_bytes())
            return memory
        cupy.cuda.set_allocator(malloc)

    def reset(self):
        self.value = self.pool.used_bytes()

    def peak(self) -> int:
        return int(self.value)


class TorchPeak:
    """Peak bytes torch has allocated on its CUDA device (``max_memory_allocated``)."""

    def __init__(self, torch):
        self.cuda = torch.cuda

    def reset(self):
        self.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return int(self.cuda.max_memory_allocated())


def _evict(files) -> None:
    """Drop the files' pages from the page cache (POSIX_FADV_DONTNEED), so that the next read is cold."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load_worker(args) -> dict:
    """Time ``load_encoder`` on ``args.preset``'s bf16 checkpoint: cold (the file's pages evicted from
    the page cache first) and warm, for float32 and bf16-resident weights; prints a JSON line."""
    from ..encoder import load_encoder
    from .course import model_dir

    path = Path(model_dir(args.preset))
    files = sorted(path.glob("*.safetensors"))
    result = dict(preset=args.preset, file_bytes=sum(f.stat().st_size for f in files),
                  evict=hasattr(os, "posix_fadvise"))
    for weights_dtype in ("float32", "bfloat16"):
        for state in ("cold", "warm"):
            if state == "cold" and result["evict"]:
                _evict(files)
            start = time.perf_counter()
            encoder = load_encoder(path, weights_dtype=weights_dtype)
            result[f"{weights_dtype} {state}"] = time.perf_counter() - start
            del encoder
    print(json.dumps(result))
    return result


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info

        return max((i.get("num_threads") or 0) for i in threadpool_info()) or None
    except Exception:
        return os.cpu_count()


def run_case(impl, preset, height, width, repeat, warmup, weights_dtype="float32", depth=0, timeout=3600,
             backend="numpy", device="cpu", torch_dtype="float32", steps=False, coretype=None) -> dict:
    """One worker process; ``coretype``: OpenBLAS's kernel family for it (``$OPENBLAS_CORETYPE``)."""
    cmd = [sys.executable, "-m", "qvlearn.tools.bench", "--worker", impl, "--preset", preset, "--height", str(height),
           "--width", str(width), "--repeat", str(repeat), "--warmup", str(warmup), "--weights-dtype", weights_dtype,
           "--depth", str(depth), "--backend", backend, "--device", device, "--torch-dtype", torch_dtype]
    cmd += ["--steps"] if steps else []
    env = dict(os.environ, OPENBLAS_CORETYPE=coretype) if coretype else None
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return dict(impl=impl, preset=preset, height=height, width=width, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kernels_main(args) -> str:
    """``--kernels``: :data:`KERNEL_CASES` step by step, transformers beside qvlearn under OpenBLAS's pick and under
    every other family of :data:`qvlearn.tools.blas.FAMILIES` this CPU runs, case by case, in one run."""
    from .blas import cpu_flags, numpy_blas, runnable_families

    info = machine((2048, 4096), getattr(args, "blas_choice", None))
    print(machine_line(info), flush=True)
    picked = numpy_blas().get("architecture")
    families = [picked] + [f for f in runnable_families(cpu_flags()) if f.lower() != str(picked).lower()]
    rows = []
    for preset, h, w, depth in KERNEL_CASES:
        ours = [run_case("qvlearn", preset, h, w, args.repeat, args.warmup, depth=depth, steps=True,
                         coretype=None if f == picked else f) for f in families]
        theirs = run_case("transformers", preset, h, w, args.repeat, args.warmup, depth=depth, steps=True)
        rows.append((ours, theirs))
        print(*(json.dumps(r) for r in (*ours, theirs)), sep="\n", flush=True)
    return build_kernels_report(rows, families, picked, info)


def build_kernels_report(rows, families, picked, info) -> str:
    names = [f"qvlearn {f}" + (" (as loaded)" if f == picked else "") for f in families]
    lines = ["# Per step, by OpenBLAS kernel family", "", machine_line(info), "",
             "Command: `python -m qvlearn.bench --kernels`. Milliseconds per block in the fastest of the timed "
             "forwards (as in the per-step profile); the forward in seconds (median of the timed forwards); ratios "
             "against transformers. Each column is its own process; \"as loaded\" is the family OpenBLAS runs in the "
             "benchmark's process.", "",
             "| tower | blocks | patches | step | " + " | ".join(f"{n} ms" for n in names) + " | transformers ms | "
             + " | ".join(f"ratio {f}" for f in families) + " |",
             "|---|---:|---:|---|" + "---:|" * (2 * len(families) + 1)]
    for ours, theirs in rows:
        bad = [r.get("error") or "no steps" for r in (*ours, theirs) if "error" in r or not r.get("steps")]
        bad += [f"asked for {f}'s kernels, OpenBLAS ran {r['blas_kernel']}'s" for f, r in zip(families, ours)
                if r.get("blas_kernel") and str(r["blas_kernel"]).lower() != str(f).lower()]
        if bad:
            lines.append(f"| {theirs.get('preset') or ours[0]['preset']} | | | failed: {bad[0]} |")
            continue
        steps = [dict(r["steps"]) for r in (*ours, theirs)]
        for d in steps:
            d["first half"] = d["projection"] + d["attention"]
        depth = theirs.get("depth") or _full_depth(theirs["preset"])
        for key, label in STEPS + [("forward", "forward (s)")]:
            values = ([r["median"] for r in (*ours, theirs)] if key == "forward" else [d[key] for d in steps])
            fmt = "{:.2f}" if key == "forward" else "{:.1f}"
            lines.append(f"| {theirs['preset']} | {depth} | {theirs['patches']} | {label} | "
                         + " | ".join(fmt.format(v) for v in values) + " | "
                         + " | ".join(f"{v / values[-1]:.2f}" for v in values[:-1]) + " |")
        for key, label in INNER:
            if all(key in d for d in steps[:-1]):
                lines.append(f"| {theirs['preset']} | {depth} | {theirs['patches']} | {label} | "
                             + " | ".join(f"{d[key]:.1f}" for d in steps[:-1]) + " | n/a |" + " |" * len(ours))
        if all(r.get("matmul_gflops") for r in (*ours, theirs)):
            from ..config import preset_config

            flops = forward_flops(preset_config(theirs["preset"], **shortened(theirs["preset"], theirs.get("depth")
                                                                              or 0)), theirs["grid_thw"])
            floors = [flops / r["matmul_gflops"] / 1e9 for r in (*ours, theirs)]
            lines.append(f"| {theirs['preset']} | {depth} | {theirs['patches']} | matmul floor (s): "
                         f"{flops / 1e9:.0f} GFLOP at the process's 2048^3 rate | "
                         + " | ".join(f"{v:.2f}" for v in floors) + " | "
                         + " | ".join(f"{v / floors[-1]:.2f}" for v in floors[:-1]) + " |")
    return "\n".join(lines) + "\n"


def _full_depth(preset: str) -> int:
    from ..config import preset_config

    return preset_config(preset).depth


def run_load(preset, timeout=600) -> dict:
    cmd = [sys.executable, "-m", "qvlearn.tools.bench", "--worker", "load", "--preset", preset]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return dict(preset=preset, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gpu_status() -> tuple[str | None, str, bool]:
    """``(device name or None, why not, whether torch has CUDA)``."""
    try:
        from ..backend import get_backend

        get_backend("cupy")
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:
        return None, str(exc).split(". ")[0], False  # e.g. "the cupy backend is not usable here (...)"
    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    except Exception:
        torch_cuda = False
    return name, "", torch_cuda


def gpu_note() -> str:
    name, why, _ = gpu_status()
    if name:
        return f"CuPy finds a GPU here ({name}); the GPU cases are measured with `python -m qvlearn.bench --gpu`."
    return f"No GPU on this machine ({why}): the GPU cases were not measured; the CPU results stand."


def build_load_report(load) -> str:
    if not load:
        return ""
    if "error" in load:
        return f"Loading {load['preset']}: failed: {load['error']}\n"
    method = ("cold: the file's pages dropped from the page cache with posix_fadvise(POSIX_FADV_DONTNEED) first"
              if load["evict"] else "cold: not available on this OS (no posix_fadvise), both runs may be warm")
    lines = [f"Loading the {load['preset']} checkpoint ({load['file_bytes'] / 1e9:.2f} GB of bf16 safetensors) with "
             f"`load_encoder` ({method}):", "",
             "| weights in memory | cold s | warm s |", "|---|---:|---:|"]
    for dt in ("float32", "bfloat16"):
        lines.append(f"| {dt} | {load[dt + ' cold']:.2f} | {load[dt + ' warm']:.2f} |")
    return "\n".join(lines) + "\n"


def build_gpu_report(rows, device_name, torch_cuda=True) -> str:
    """``rows``: ``(qvlearn on cupy, transformers float32, transformers bf16)`` per case."""
    lines = [f"Device: **{device_name}**. qvlearn: CuPy backend, float32. transformers 5.23 on CUDA, "
             "`attn_implementation=\"sdpa\"`, float32 and bf16; same checkpoint and input, input already on the "
             "device, a synchronisation after every forward; medians. Peak memory: the device memory in use "
             "(CuPy memory pool / torch `max_memory_allocated`), weights included.", "",
             "| tower | image (px) | patches | qvlearn CuPy f32 s | transformers f32 s | ratio | transformers bf16 s | "
             "ratio to bf16 | qvlearn peak GiB | transformers f32 peak GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ours, f32, bf16 in rows:
        if "error" in ours:
            lines.append(f"| {ours['preset']} | {ours['height']}x{ours['width']} | failed: {ours['error']} |")
            continue

        def t(r):
            if r is None:
                return None, "not run (torch has no CUDA here)" if not torch_cuda else "not run"
            if "error" in r:
                return None, f"failed: {r['error']}"
            return r["median"], f"{r['median']:.3f}"
        t32, s32 = t(f32)
        t16, s16 = t(bf16)
        ratio = f"{ours['median'] / t32:.2f}" if t32 else "n/a"
        ratio16 = f"{ours['median'] / t16:.2f}" if t16 else "n/a"
        ref_mem = _gb(f32["peak_device"]) if t32 and f32.get("peak_device") is not None else "n/a"
        lines.append(f"| {ours['preset']} | {ours['height']}x{ours['width']} | {ours['patches']} | "
                     f"{ours['median']:.3f} | {s32} | {ratio} | {s16} | {ratio16} | {_gb(ours['peak_device'] or 0)} | "
                     f"{ref_mem} |")
    return "\n".join(lines) + "\n"


def build_steps_report(rows) -> str:
    """``rows``: ``(qvlearn, transformers)`` worker results with ``steps``, one pair per case."""
    if not rows:
        return ""
    lines = ["Where the time goes: milliseconds per block, averaged over the blocks of the fastest of the timed "
             "forwards (whole towers; qvlearn's steps timed around the functions its block calls, transformers' "
             "with forward hooks on its modules). RoPE sits on either side of the qkv/attention line, so the first "
             "half of the block is also given as one step. Outside the blocks: patch embedding, positions, "
             "mergers and the rest of the forward.", "",
             "| tower | patches | step | qvlearn ms/block | transformers ms/block | ratio |",
             "|---|---:|---|---:|---:|---:|"]
    for ours, theirs in rows:
        if "error" in ours or "error" in theirs or not ours.get("steps") or not theirs.get("steps"):
            why = ours.get("error") or theirs.get("error") or "no steps"
            lines.append(f"| {ours['preset']} | | failed: {why} | | | |")
            continue
        a, b = dict(ours["steps"]), dict(theirs["steps"])
        for d in (a, b):
            d["first half"] = d["projection"] + d["attention"]
        for key, label in STEPS:
            lines.append(f"| {ours['preset']} | {ours['patches']} | {label} | {a[key]:.1f} | {b[key]:.1f} | "
                         f"{a[key] / b[key]:.2f} |")
        o, t = a["outside blocks s"], b["outside blocks s"]
        lines.append(f"| {ours['preset']} | {ours['patches']} | outside the blocks (s per forward) | {o:.2f} | "
                     f"{t:.2f} | {o / t:.2f} |")
        lines.append(f"| {ours['preset']} | {ours['patches']} | forward (s) | {min(ours['times']):.2f} | "
                     f"{min(theirs['times']):.2f} | {min(ours['times']) / min(theirs['times']):.2f} |")
    return "\n".join(lines) + "\n"


def _gb(x) -> str:
    return f"{x / 2**30:.2f}"


def build_report(results, peak_gflops, command, machine_info=None) -> str:
    from ..config import preset_config

    lines = ["| tower | image (px) | patches | qvlearn s | transformers s | ratio | GFLOP | qvlearn GFLOP/s | "
             "share of matmul peak | qvlearn peak RSS GiB | transformers peak RSS GiB | weights f32 GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ours, theirs in results:
        if "error" in ours:
            lines.append(f"| {ours['preset']} | {ours['height']}x{ours['width']} | failed: {ours['error']} |")
            continue
        cfg = preset_config(ours["preset"], **shortened(ours["preset"], ours.get("depth") or 0))
        flops = forward_flops(cfg, ours["grid_thw"])
        rate = flops / ours["median"] / 1e9
        t_ref = theirs.get("median") if theirs and "error" not in theirs else None
        ratio = f"{ours['median'] / t_ref:.2f}" if t_ref else "n/a"
        ref_s = f"{t_ref:.2f}" if t_ref else ("could not finish" if theirs else "not run")
        ref_mem = _gb(theirs["peak_rss"]) if t_ref else "n/a"
        name = ours["preset"] + (f" ({ours['depth']} blocks)" if ours.get("depth") else "")
        name += " bf16-resident" if ours.get("weights_dtype") == "bfloat16" else ""
        name += " **busy**" if ours.get("busy") else ""
        lines.append(f"| {name} | {ours['height']}x{ours['width']} | {ours['patches']} | {ours['median']:.2f} | "
                     f"{ref_s} | {ratio} | {flops / 1e9:.0f} | {rate:.0f} | {rate / peak_gflops:.0%} | "
                     f"{_gb(ours['peak_rss'])} | {ref_mem} | {_gb(_f32_bytes(cfg))} |")
    header = [
        "# Benchmarks", "",
        "Generated by `python -m qvlearn.bench` (see `qvlearn/tools/bench.py` for the method). "
        "qvlearn runs NumPy float32;",
        "the reference is transformers 5.23 on torch CPU, float32, `attn_implementation=\"sdpa\"`; both on the same",
        "seeded random-weight checkpoint (bf16 on disk) and the same image, on the same machine and threads, "
        "in one run.",
        "Times are medians of the timed forwards after warm-up (cases above 5000 patches: one forward, no warm-up).",
        "Peak RSS is the peak resident memory of the process during the timed forwards "
        "(libraries and weights included).",
        "Rows marked **busy** ran while another process kept one core busy with single-threaded float32 matmuls.", "",
        machine_line(machine_info) if machine_info else
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({_cpu_name()}), NumPy {np.__version__}; "
        f"measured float32 matmul throughput (NumPy): **{peak_gflops:.0f} GFLOP/s**.", "",
        f"Command: `{command}`", "",
    ]
    return "\n".join(header + lines) + "\n"


def _f32_bytes(cfg) -> int:
    from ..weights import expected_shapes

    return 4 * sum(int(np.prod(s)) for s in expected_shapes(cfg).values())


def _cpu_name() -> str:
    from .blas import cpu_model

    return cpu_model()


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
              "amx_bf16")


def _cpu_flags() -> list[str]:
    """The vector-instruction flags of this CPU that decide the BLAS kernels (from /proc/cpuinfo; empty elsewhere)."""
    from .blas import cpu_flags

    have = cpu_flags()
    return [f for f in SIMD_FLAGS if f in have]


def _torch_info(size: int) -> dict:
    """torch's build and threads and its float32 matmul throughput, measured in a subprocess (the benchmark's own
    process never imports torch); an empty dict where torch is not installed."""
    code = ("import json, statistics, time, torch\n"
            f"a = torch.randn({size}, {size}); b = a.clone(); a @ b\n"
            "times = []\n"
            "for _ in range(5):\n    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)\n"
            "print(json.dumps(dict(version=torch.__version__, threads=torch.get_num_threads(),\n"
            "    capability=torch.backends.cpu.get_cpu_capability(), mkl=torch.backends.mkl.is_available(),\n"
            f"    gflops=2 * {size} ** 3 / statistics.median(times) / 1e9)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}


def machine(sizes=(2048, 4096), blas_choice=None) -> dict:
    """What a reader needs to tell this machine's limits from the engine's: the CPU, its vector flags, NumPy's BLAS
    with the kernel it picked and its threads (threadpoolctl), torch's build, and both libraries' float32 matmul
    throughput measured now (the best of the given square sizes), and the start-up check's ``blas_choice``
    (:class:`qvlearn.tools.blas.Choice`) when there was one."""
    from .blas import numpy_blas

    blas = numpy_blas()
    torch = {}
    for size in sizes:
        info = _torch_info(size)
        if info and info["gflops"] > torch.get("gflops", 0):
            torch = info
    return dict(cpu=_cpu_name(), arch=platform.machine(), cores=os.cpu_count(), flags=_cpu_flags(),
                numpy=np.__version__, blas=blas.get("internal_api", "unknown"), blas_version=blas.get("version"),
                blas_kernel=blas.get("architecture"), blas_threads=blas.get("num_threads"),
                numpy_gflops=max(matmul_gflops(s) for s in sizes), torch=torch, sizes=list(sizes),
                blas_choice=dataclasses.asdict(blas_choice) if blas_choice is not None else None)


def machine_line(m: dict) -> str:
    flags = ", ".join(f.upper() for f in m["flags"]) or "flags unknown"
    avx512 = "" if any(f.startswith("avx512") for f in m["flags"]) or not m["flags"] else "; no AVX-512"
    torch = m["torch"]
    torch_part = (f"torch {torch['version']} ({torch['capability']} kernels, {'MKL' if torch['mkl'] else 'no MKL'}, "
                  f"{torch['threads']} threads)" if torch else "torch not installed")
    rate = f"NumPy **{m['numpy_gflops']:.0f}**" + (f", torch **{torch['gflops']:.0f}**" if torch else "")
    return (f"Machine: {m['cpu']} ({m['arch']}, {m['cores']} cores; {flags}{avx512}); NumPy {m['numpy']} with "
            f"{m['blas']} {m['blas_version']} ({m['blas_kernel']} kernels, {m['blas_threads']} threads); {torch_part}. "
            f"float32 matmul throughput measured in this run (best of the "
            f"{' and '.join(f'{n}^3' for n in m['sizes'])} products): {rate} GFLOP/s.{blas_choice_text(m)}")


def blas_choice_text(m: dict) -> str:
    """The start-up check of OpenBLAS's kernels (:mod:`qvlearn.tools.blas`), as the report says it."""
    choice = m.get("blas_choice")
    if not choice:
        return ""
    if choice.get("chosen"):
        return (f" The engine's start-up check: {choice['why']}; so this run uses {choice['chosen']}'s kernels "
                f"(OPENBLAS_CORETYPE={choice['chosen']}; transformers runs torch's own BLAS either way).")
    return f" The engine's start-up check: {choice['why']}."



def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r[0]["preset"] for r in results if "error" not in r[0] and not r[0].get("depth")
                      and not r[0].get("busy")})
    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        rows = [(o, t) for o, t in results if o["preset"] == preset and "error" not in o and not o.get("depth")
                and o.get("weights_dtype", "float32") == "float32" and not o.get("busy")]
        rows.sort(key=lambda r: r[0]["patches"])
        ax.plot([o["patches"] for o, _ in rows], [o["median"] for o, _ in rows], marker="o", label="qvlearn (NumPy)")
        ref = [(o["patches"], t["median"]) for o, t in rows if t and "median" in t]
        if ref:
            ax.plot(*zip(*ref), marker="s", label="transformers (torch, sdpa)")
        ax.set_title(preset)
        ax.set_xlabel("patches")
        ax.set_ylabel("seconds per forward")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvlearn.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny presets, one timed run: a smoke test")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU cases: qvlearn on CuPy against transformers on CUDA (float32 and bf16)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--big-depth", type=int, default=None,
                        help="blocks of the towers in the 16384-patch cases (default: 4, and 8 for Qwen2.5-VL; "
                             "0: skip them)")
    parser.add_argument("--big-only", action="store_true", help="run only the 16384-patch cases")
    parser.add_argument("--no-busy", action="store_true",
                        help="skip the runs beside a competing process (another process busy on one core)")
    parser.add_argument("--no-steps", action="store_true",
                        help="skip the per-step profile (time per block step in both implementations)")
    parser.add_argument("--kernels", action="store_true",
                        help="only the per-step profile of four towers (7B whole and cut to 8 blocks, 2B at 9216 "
                             "patches, Qwen3-VL), qvlearn under each OpenBLAS kernel family this CPU runs")
    parser.add_argument("--report", default=None, help="write the Markdown report here (default: print only)")
    parser.add_argument("--plot", default=None, help="write the time-vs-patches plot here")
    parser.add_argument("--worker", choices=["qvlearn", "transformers", "load"], help=argparse.SUPPRESS)
    for name, kind, default in (("--preset", str, ""), ("--height", int, 0), ("--width", int, 0),
                                ("--weights-dtype", str, "float32"), ("--depth", int, 0), ("--backend", str, "numpy"),
                                ("--device", str, "cpu"), ("--torch-dtype", str, "float32")):
        parser.add_argument(name, type=kind, default=default, help=argparse.SUPPRESS)
    parser.add_argument("--steps", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        load_worker(args) if args.worker == "load" else worker(args)
        return 0
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"error: the benchmark times qvlearn against transformers and needs torch and transformers ({exc}); "
              "run it from the project's .venv (make setup) or pip install 'qvlearn[reference]'", file=sys.stderr)
        return 2
    args.blas_choice = None
    if argv is None and not args.gpu:  # the benchmark's own command line: OpenBLAS's kernels chosen as the CLI does
        from .blas import adopt

        args.blas_choice = adopt(log=lambda line: print(line, file=sys.stderr, flush=True))
    report = gpu_main(args) if args.gpu else kernels_main(args) if args.kernels else cpu_main(args)
    print(report)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
    return 0


def _command(args) -> str:
    flags = [f for f, on in (("--gpu", args.gpu), ("--tiny", args.tiny), ("--big-only", args.big_only)) if on]
    return " ".join(["python -m qvlearn.bench", *flags])


def cpu_main(args) -> str:
    info = machine((1024,) if args.tiny else (2048, 4096), getattr(args, "blas_choice", None))
    peak = info["numpy_gflops"]
    print(machine_line(info), flush=True)
    cases = TINY_CASES if args.tiny else [] if args.big_only else CASES
    results = []
    from ..config import preset_config

    for preset, h, w in cases:
        patch = preset_config(preset).patch_size
        n = (h // patch) * (w // patch)
        repeat, warmup = (1, 0) if args.tiny or n > LARGE else (args.repeat, args.warmup)
        pair = tuple(run_case(impl, preset, h, w, repeat, warmup) for impl in ("qvlearn", "transformers"))
        results.append(pair)
        print(json.dumps(pair[0]), json.dumps(pair[1]), sep="\n", flush=True)
        if n == 2352 and preset == "qwen2.5-vl-7b":  # the bf16-resident option on the headline case
            bf16 = run_case("qvlearn", preset, h, w, repeat, warmup, weights_dtype="bfloat16")
            results.append((bf16, None))
            print(json.dumps(bf16), flush=True)
    for preset, h, w, depth in [] if args.tiny or args.big_depth == 0 else BIG_CASES:
        depth = args.big_depth or depth
        pair = tuple(run_case(impl, preset, h, w, 1, 0, depth=depth) for impl in ("qvlearn", "transformers"))
        results.append(pair)
        print(json.dumps(pair[0]), json.dumps(pair[1]), sep="\n", flush=True)
    if not args.tiny and not args.big_only and not args.no_busy:
        results += busy_runs(args)
    steps = []
    for preset, h, w in [] if args.big_only or args.no_steps else TINY_CASES if args.tiny else STEP_CASES:
        repeat, warmup = (1, 0) if args.tiny else (2, 1)
        steps.append(tuple(run_case(impl, preset, h, w, repeat, warmup, steps=True)
                           for impl in ("qvlearn", "transformers")))
        print(*(json.dumps(r) for r in steps[-1]), sep="\n", flush=True)
    load = None
    if not args.big_only:
        load = run_load(TINY_CASES[0][0] if args.tiny else "qwen2.5-vl-7b")
        print(json.dumps(load), flush=True)
    if args.plot:
        plot([r for r in results if r[1] is not None or r[0].get("weights_dtype") == "float32"], args.plot)
    return (build_report(results, peak, _command(args), info) + "\n" + build_steps_report(steps) + "\n"
            + build_load_report(load) + "\n" + gpu_note() + "\n")


def busy_runs(args) -> list:
    """:data:`BUSY_CASES` again while another process keeps one core busy with single-threaded float32 matmuls
    (both implementations keep their usual thread counts): how each degrades on a shared machine."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env)
    results = []
    try:
        for preset, h, w in BUSY_CASES:
            pair = tuple(run_case(impl, preset, h, w, args.repeat, args.warmup) for impl in ("qvlearn", "transformers"))
            for r in pair:
                r["busy"] = 1
            results.append(pair)
            print(json.dumps(pair[0]), json.dumps(pair[1]), sep="\n", flush=True)
    finally:
        competitor.kill()
        competitor.wait()
    return results


def gpu_main(args) -> str:
    name, why, torch_cuda = gpu_status()
    if name is None:
        return (f"# GPU benchmark\n\nNo GPU on this machine ({why}): the GPU cases were not measured; the CPU "
                "results (`python -m qvlearn.bench`) stand.\n")
    cases = TINY_CASES if args.tiny else CASES + [c[:3] for c in BIG_CASES]  # a GPU runs them at full depth
    rows = []
    for preset, h, w in cases:
        repeat, warmup = (1, 1) if args.tiny else (args.repeat, args.warmup)
        ours = run_case("qvlearn", preset, h, w, repeat, warmup, backend="cupy")
        refs = [run_case("transformers", preset, h, w, repeat, warmup, device="cuda", torch_dtype=dt)
                if torch_cuda else None for dt in ("float32", "bfloat16")]
        rows.append((ours, *refs))
        print(*(json.dumps(r) for r in rows[-1]), sep="\n", flush=True)
    return ("# GPU benchmark\n\n" + f"Command: `{_command(args)}`\n\n" + build_gpu_report(rows, name, torch_cuda))


if __name__ == "__main__":
    sys.exit(main())
