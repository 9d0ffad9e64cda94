"""Which of OpenBLAS's kernels NumPy runs: the one CPU-dependent choice made before NumPy loads.

NumPy's wheels bundle OpenBLAS built for every x86-64 CPU family (``DYNAMIC_ARCH``); when the library loads it picks
the kernels of one family from the CPU's vendor, model and features, or the family ``$OPENBLAS_CORETYPE`` names.
The pick decides the float32 GEMM rate, and so most of the engine's time: on an AMD Zen 5 (AVX-512), NumPy 2.4's
OpenBLAS 0.3.31 picks its SkylakeX (AVX-512) kernels and runs the engine's linear layers at about twice the rate of its
Haswell (AVX2) kernels on the same core. A CPU newer than the OpenBLAS release, or one behind a hypervisor that hides
its model, can get an older family's kernels (OpenBLAS issue 6029: Zen 5 taken for a CPU without AVX), and a
``$OPENBLAS_CORETYPE`` left in a shell profile keeps an older family for good. The pick cannot be changed once the
library is loaded.

So the command line (``qvlearn encode``, ``qvlearn taps``) and the benchmark (``python -m qvlearn.bench``) do this
at start, before any work:

1. read the kernels OpenBLAS picked (threadpoolctl) and the CPU's flags (``/proc/cpuinfo``);
2. if the CPU can run a better family of :data:`FAMILIES` than the one picked, measure both, each in a short
   process of its own (the engine's call shape: ``x @ W.T``, 1024 x 1280 @ 1280 x 3840, float32, one thread); the
   better family is chosen when it is at least :data:`MIN_GAIN` times faster. The measurement is kept in the qvlearn
   cache (``blas.json``, keyed by the CPU, NumPy, the OpenBLAS library and the pick), so it runs once per machine
   and install;
3. if the library picked by itself and the choice differs, run the same command again in a new process with
   ``$OPENBLAS_CORETYPE`` set (``os.execve``); its note says what was measured and chosen. If
   ``$OPENBLAS_CORETYPE`` was set before start, it is kept, and the note says what the other family measured.

Nothing is measured where OpenBLAS picked the best family the CPU runs, where NumPy uses another BLAS, or off
Linux; ``QVLEARN_BLAS=as-is`` turns the check off. A library user, whose NumPy is loaded before qvlearn is, gets the
same finding from :func:`describe`, and sets the variable before Python starts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV = "QVLEARN_BLAS"  # "auto" (the default) or "as-is": keep the library's pick
ADOPTED_ENV = "QVLEARN_BLAS_ADOPTED"  # set in the new process: what was chosen, so that it is said once
CORETYPE_ENV = "OPENBLAS_CORETYPE"
MIN_GAIN = 1.2  # a family is chosen over the pick only when measured at least this many times faster
SHAPE = (1024, 1280, 3840)  # rows, in, out: the engine's linear layers (x @ W.T), one part per core

FAMILIES = (  # OpenBLAS's x86-64 kernel families the choice considers, best first, and the CPU flags each needs
    ("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)
RANK = {  # OpenBLAS's names for the families it may pick (lower case) -> the rank of its float32 GEMM kernels
    "skylakex": 0, "cooperlake": 0, "sapphirerapids": 0,  # AVX-512
    "haswell": 1, "zen": 1,  # AVX2 + FMA
    "sandybridge": 2, "bulldozer": 2, "piledriver": 2, "steamroller": 2, "excavator": 2,  # AVX
}

_PROBE = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info
kernel = next((i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"), None)
rows, d_in, d_out = {shape}
rng = np.random.default_rng(0)
x = rng.standard_normal((rows, d_in), dtype=np.float32)
w = rng.standard_normal((d_out, d_in), dtype=np.float32)
x @ w.T
best = float("inf")
for _ in range(5):
    t = time.perf_counter(); x @ w.T; best = min(best, time.perf_counter() - t)
print(json.dumps(dict(kernel=kernel, gflops=2 * rows * d_in * d_out / best / 1e9)))
"""


@dataclass
class Choice:
    """What the start-up check found: the library and the kernels it ``picked``, the ``runnable`` families of
    :data:`FAMILIES` this CPU has the flags for, the ``measured`` float32 GEMM rates (GFLOP/s, one core, by family),
    the ``chosen`` family (None: keep the pick) and ``why``, in words."""

    library: str | None
    version: str | None
    picked: str | None
    runnable: list = field(default_factory=list)
    measured: dict = field(default_factory=dict)
    chosen: str | None = None
    why: str = ""


def cpu_flags() -> set[str]:
    """This CPU's flags as the kernel reports them (``/proc/cpuinfo``); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def numpy_blas() -> dict:
    """threadpoolctl's record of the BLAS NumPy loaded (``internal_api``, ``version``, ``architecture``: the kernels
    it picked, ``filepath``, ``num_threads``): the one in NumPy's wheel (``numpy.libs``, ``numpy/.dylibs``) when
    there are several (SciPy's wheel brings its own OpenBLAS), else the first; empty if there is none."""
    import numpy as np
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))  # site-packages: numpy/, numpy.libs/
    own = [i for i in found if os.path.basename(os.path.dirname(str(i.get("filepath", "")))).startswith("numpy")
           and str(i.get("filepath", "")).startswith(home)]
    return (own or found or [{}])[0]  # NumPy's own (SciPy's OpenBLAS may be loaded too), else the first


def runnable_families(flags: set[str]) -> list[str]:
    """The families of :data:`FAMILIES` whose instructions this CPU has, best first."""
    return [name for name, needs in FAMILIES if needs <= flags]


def better_than_pick(picked: str | None, runnable: list[str]) -> list[str]:
    """The runnable families ranked above the pick (none when the pick is not a family :data:`RANK` knows)."""
    rank = RANK.get((picked or "").lower())
    if rank is None:
        return []
    return [name for name in runnable if RANK[name.lower()] < rank]


def measure(family: str | None, timeout: float = 120) -> dict:
    """The float32 GEMM rate of OpenBLAS's ``family`` kernels (None: the pick, as this process made it) on one core,
    in a new process: ``{"kernel": what OpenBLAS ran, "gflops": rate}``, or ``{"error": why}``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **{ENV: "as-is"})
    env.pop(ADOPTED_ENV, None)
    if family:
        env[CORETYPE_ENV] = family
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE.format(shape=SHAPE)], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": last[:200]}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "no measurement printed"}


def _key(blas: dict) -> str:
    import numpy as np

    return " | ".join([cpu_model(), " ".join(sorted(cpu_flags() & set().union(*(n for _, n in FAMILIES)))),
                       f"numpy {np.__version__}", str(blas.get("filepath")), str(blas.get("version")),
                       f"picked {blas.get('architecture')}"])


def _cache_file() -> Path | None:
    from ..errors import OutputError
    from .cache import cache_dir

    try:
        return cache_dir() / "blas.json"
    except OutputError:
        return None


def _read_cache(key: str) -> dict | None:
    path = _cache_file()
    try:
        return json.loads(path.read_text()).get(key) if path else None
    except (OSError, ValueError, AttributeError):
        return None


def _write_cache(key: str, record: dict) -> None:
    from ..atomic import atomic_file
    from ..errors import OutputError

    path = _cache_file()
    if path is None:
        return
    try:
        table = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    table[key] = record
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(table, indent=1) + "\n")
    except (OSError, OutputError):
        pass  # a cache that cannot be written only means measuring again next time


def choose(blas: dict | None = None, flags: set[str] | None = None, use_cache: bool = True, measure=measure) -> Choice:
    """The start-up check, without acting on it: which kernels NumPy's OpenBLAS runs now, and which it should run
    (measured, or read from the cache)."""
    blas = numpy_blas() if blas is None else blas
    flags = cpu_flags() if flags is None else flags
    library, picked = blas.get("internal_api"), blas.get("architecture")
    choice = Choice(library=library, version=blas.get("version"), picked=picked)
    if library != "openblas":
        choice.why = f"NumPy's BLAS is {library or 'unknown'}, not OpenBLAS: nothing to choose"
        return choice
    user_set = os.environ.get(CORETYPE_ENV) if not os.environ.get(ADOPTED_ENV) else None
    choice.runnable = runnable_families(flags)
    better = better_than_pick(picked, choice.runnable)
    if user_set and not better:
        choice.why = f"${CORETYPE_ENV}={user_set} was set before start: OpenBLAS runs {picked}"
        return choice
    if not better:
        choice.why = (f"OpenBLAS picked {picked}, the best of the families this CPU runs"
                      if choice.runnable and RANK.get((picked or "").lower()) is not None
                      else f"OpenBLAS picked {picked}; no family the check knows is better on this CPU")
        return choice
    key = _key(blas)
    cached = _read_cache(key) if use_cache else None
    if cached is not None:
        choice.measured = cached
    else:
        runs = {picked: measure(None)}
        for family in better:
            runs[family] = measure(family)
        choice.measured = {name: round(r["gflops"], 1) for name, r in runs.items()
                           if "gflops" in r and (name == picked or str(r.get("kernel", "")).lower() == name.lower())}
        if use_cache and picked in choice.measured:
            _write_cache(key, choice.measured)
    base = choice.measured.get(picked)
    best = max(better, key=lambda name: choice.measured.get(name, 0.0))
    rate = choice.measured.get(best)
    if not base or not rate:
        choice.why = f"OpenBLAS picked {picked}; {best} could not be measured on this CPU, so the pick is kept"
    elif rate >= MIN_GAIN * base and user_set:
        choice.why = (f"${CORETYPE_ENV}={user_set} was set before start, so OpenBLAS runs {picked}'s kernels and "
                      f"they are kept; this CPU also runs {best}'s, measured {rate:.0f} against {base:.0f} GFLOP/s "
                      f"(float32, one core), {rate / base:.1f}x: unset {CORETYPE_ENV} or set it to {best} for that")
    elif rate >= MIN_GAIN * base:
        choice.chosen = best
        choice.why = (f"OpenBLAS picked {picked} on a CPU that runs {best}'s kernels; measured {rate:.0f} against "
                      f"{base:.0f} GFLOP/s (float32, one core), {rate / base:.1f}x")
    else:
        choice.why = (f"OpenBLAS picked {picked}; {best} measured {rate:.0f} against {base:.0f} GFLOP/s, less than "
                      f"{MIN_GAIN}x, so the pick is kept")
    return choice


def adopt(argv: list[str] | None = None, log=None, execve=os.execve) -> Choice | None:
    """At a command's start: :func:`choose`, and if the choice differs from the pick, run the same command again
    with ``$OPENBLAS_CORETYPE`` set (this does not return then). In the new process, returns what was chosen and
    says it through ``log``. Returns None when nothing was checked (``QVLEARN_BLAS=as-is``, off Linux)."""
    adopted = os.environ.get(ADOPTED_ENV)
    if adopted:
        try:
            choice = Choice(**json.loads(adopted))
        except (ValueError, TypeError):
            return None
        blas = numpy_blas()
        if str(blas.get("architecture", "")).lower() != str(choice.chosen).lower():
            choice.why += f"; but OpenBLAS runs {blas.get('architecture')} in this process"
        if log:
            log(f"BLAS: {choice.why}: this run uses {choice.chosen}'s kernels ({CORETYPE_ENV}={choice.chosen}; "
                f"{ENV}=as-is keeps the library's pick)")
        return choice
    mode = os.environ.get(ENV, "auto")
    if mode not in ("auto", "as-is"):
        from ..errors import InputError

        raise InputError(f"${ENV}={mode!r}: expected 'auto' (measure and choose OpenBLAS's kernels) or 'as-is' "
                         "(keep the library's pick)")
    if mode == "as-is" or not sys.platform.startswith("linux"):
        return None
    choice = choose()
    if choice.chosen is None:
        if log and choice.measured:  # measured, and kept: the user's $OPENBLAS_CORETYPE, or a gain too small
            log(f"BLAS: {choice.why}")
        return choice
    env = dict(os.environ, **{CORETYPE_ENV: choice.chosen, ADOPTED_ENV: json.dumps(asdict(choice))})
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    argv = list(argv if argv is not None else getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    execve(sys.executable, [sys.executable, *argv[1:]], env)
    return choice  # only when execve is a stand-in (tests)


def describe(choice: Choice | None = None) -> str:
    """One line on the BLAS this process runs and the check's advice, for a library user or a report."""
    choice = choice or choose()
    blas = numpy_blas()
    line = (f"NumPy's BLAS: {blas.get('internal_api', 'unknown')} {blas.get('version', '')} running "
            f"{blas.get('architecture', 'unknown')} kernels, {blas.get('num_threads', '?')} threads. {choice.why}")
    if choice.chosen and str(blas.get("architecture", "")).lower() != choice.chosen.lower():
        line += (f". Set {CORETYPE_ENV}={choice.chosen} before Python starts (the command line and the benchmark do "
                 "it by themselves)")
    return line + "."
