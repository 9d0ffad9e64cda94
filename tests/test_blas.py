"""The start-up check of OpenBLAS's kernels (qvlearn.tools.blas): what it measures, chooses and does.

Every verdict here is on stated inputs (a CPU's flags, the library's pick, measured rates handed in), so it cannot
depend on the machine; the two tests that touch the real library check what it reports, not how fast it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qvlearn.errors import InputError
from qvlearn.tools import blas, cli

AVX512 = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
AVX2 = {"avx2", "fma"}
AS_STARTED = os.environ.get(blas.CORETYPE_ENV)  # how this process's OpenBLAS was loaded
OPENBLAS = dict(internal_api="openblas", version="0.3.31", architecture="Haswell", filepath="/x/libopenblas.so")


def rates(table):
    """A stand-in for :func:`blas.measure`: the rate of each family, and the calls it was asked for."""
    calls = []

    def measure(family):
        calls.append(family)
        kernel = family or OPENBLAS["architecture"]
        rate = table.get(kernel)
        return {"error": "killed"} if rate is None else {"kernel": kernel, "gflops": rate}
    return measure, calls


@pytest.fixture(autouse=True)
def no_user_coretype(monkeypatch, tmp_path):
    monkeypatch.delenv(blas.CORETYPE_ENV, raising=False)
    monkeypatch.delenv(blas.ADOPTED_ENV, raising=False)
    monkeypatch.delenv(blas.ENV, raising=False)  # conftest keeps subprocesses as-is; here the default is checked
    monkeypatch.setenv("QVLEARN_CACHE", str(tmp_path / "cache"))


def test_families_follow_the_flags():
    assert blas.runnable_families(AVX512) == ["SkylakeX", "Haswell"]
    assert blas.runnable_families(AVX2) == ["Haswell"]
    assert blas.runnable_families(AVX512 - {"avx512vl"}) == ["Haswell"]  # SkylakeX's kernels need every one
    assert blas.better_than_pick("Haswell", ["SkylakeX", "Haswell"]) == ["SkylakeX"]
    assert blas.better_than_pick("Zen", ["SkylakeX", "Haswell"]) == ["SkylakeX"]
    assert blas.better_than_pick("SkylakeX", ["SkylakeX", "Haswell"]) == []
    assert blas.better_than_pick("Cooperlake", ["SkylakeX", "Haswell"]) == []
    assert blas.better_than_pick("Neoverse", ["SkylakeX"]) == []  # a pick the table does not rank: left alone


def test_a_faster_family_is_chosen_and_measured_once():
    measure, calls = rates({"Haswell": 198.0, "SkylakeX": 391.0})
    choice = blas.choose(OPENBLAS, AVX512, measure=measure)
    assert choice.chosen == "SkylakeX" and calls == [None, "SkylakeX"]
    assert "measured 391 against 198 GFLOP/s" in choice.why and "2.0x" in choice.why
    again = blas.choose(OPENBLAS, AVX512, measure=measure)  # the cache answers: nothing measured again
    assert again.chosen == "SkylakeX" and calls == [None, "SkylakeX"]
    assert blas.choose(OPENBLAS, AVX512, use_cache=False, measure=measure).chosen == "SkylakeX"
    assert len(calls) == 4


def test_the_pick_is_kept_when_the_gain_is_small_or_unmeasured():
    small, _ = rates({"Haswell": 200.0, "SkylakeX": 230.0})  # 1.15x < MIN_GAIN
    choice = blas.choose(OPENBLAS, AVX512, use_cache=False, measure=small)
    assert choice.chosen is None and "less than 1.2x" in choice.why
    failed, _ = rates({"Haswell": 200.0})  # SkylakeX's probe died
    choice = blas.choose(OPENBLAS, AVX512, use_cache=False, measure=failed)
    assert choice.chosen is None and "could not be measured" in choice.why

    def ignored(family):  # the library ran another kernel than the one asked for: not a measurement of it
        return {"kernel": "Haswell", "gflops": 500.0 if family else 200.0}
    assert blas.choose(OPENBLAS, AVX512, use_cache=False, measure=ignored).chosen is None


def test_nothing_is_measured_where_there_is_nothing_to_choose(monkeypatch):
    measure, calls = rates({"Haswell": 1.0, "SkylakeX": 1000.0})
    best = blas.choose(dict(OPENBLAS, architecture="SkylakeX"), AVX512, measure=measure)
    assert best.chosen is None and "the best of the families" in best.why
    assert blas.choose(OPENBLAS, AVX2, measure=measure).chosen is None
    mkl = blas.choose(dict(internal_api="mkl", architecture=None), AVX512, measure=measure)
    assert mkl.chosen is None and "not OpenBLAS" in mkl.why
    monkeypatch.setenv(blas.CORETYPE_ENV, "SkylakeX")  # the user's own choice, already the best: named
    user = blas.choose(dict(OPENBLAS, architecture="SkylakeX"), AVX512, measure=measure)
    assert user.chosen is None and "OPENBLAS_CORETYPE=SkylakeX was set" in user.why
    assert calls == []


def test_a_coretype_set_before_start_is_kept_and_measured(monkeypatch):
    monkeypatch.setenv(blas.CORETYPE_ENV, "Haswell")
    measure, calls = rates({"Haswell": 198.0, "SkylakeX": 391.0})
    user = blas.choose(OPENBLAS, AVX512, measure=measure)
    assert user.chosen is None and calls == [None, "SkylakeX"]
    assert "OPENBLAS_CORETYPE=Haswell was set before start" in user.why and "measured 391 against 198" in user.why
    assert "unset OPENBLAS_CORETYPE or set it to SkylakeX" in user.why
    monkeypatch.setattr(sys, "platform", "linux")
    choose = blas.choose
    monkeypatch.setattr(blas, "choose", lambda: choose(OPENBLAS, AVX512, measure=measure))
    said = []
    assert blas.adopt(["x"], log=said.append, execve=lambda *a: pytest.fail("started again")).chosen is None
    assert said == [f"BLAS: {user.why}"]  # from the cache: nothing measured again
    assert calls == [None, "SkylakeX"]


def test_a_damaged_cache_is_measured_again(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "blas.json").write_text("[not json")
    measure, calls = rates({"Haswell": 198.0, "SkylakeX": 391.0})
    assert blas.choose(OPENBLAS, AVX512, measure=measure).chosen == "SkylakeX" and len(calls) == 2
    assert len(json.loads((tmp_path / "cache" / "blas.json").read_text())) == 1


def test_adopt_starts_the_command_again_with_the_choice(monkeypatch):
    chosen = blas.Choice(library="openblas", version="0.3.31", picked="Haswell", chosen="SkylakeX", why="measured")
    monkeypatch.setattr(blas, "choose", lambda: chosen)
    monkeypatch.setattr(sys, "platform", "linux")
    started = []
    blas.adopt(["/bin/qvlearn", "encode", "a.png"], execve=lambda *a: started.append(a))
    (exe, argv, env), = started
    assert exe == sys.executable and argv == [sys.executable, "encode", "a.png"]
    assert env[blas.CORETYPE_ENV] == "SkylakeX" and json.loads(env[blas.ADOPTED_ENV])["chosen"] == "SkylakeX"
    monkeypatch.setenv(blas.ENV, "as-is")
    assert blas.adopt(["x"], execve=lambda *a: started.append(a)) is None and len(started) == 1
    monkeypatch.setenv(blas.ENV, "fast")
    with pytest.raises(InputError, match="QVLEARN_BLAS='fast': expected 'auto'"):
        blas.adopt(["x"], execve=lambda *a: started.append(a))


def test_the_command_line_checks_before_encode_and_taps_only(monkeypatch):
    seen = []
    monkeypatch.setattr(blas, "adopt", lambda log=None: seen.append("adopt"))
    monkeypatch.setattr(cli, "cmd_compare", lambda args: 0)
    monkeypatch.setattr(cli, "cmd_encode", lambda args: 0)
    out = ["--out", "e.safetensors"]
    for argv, expected in ((["compare", "a", "b"], []), (["encode", "--backend", "cupy", "x.png", *out], []),
                           (["encode", "x.png", *out], ["adopt"])):
        seen.clear()
        assert cli.main(argv, adopt_blas=True) == 0
        assert seen == expected, argv
    seen.clear()
    cli.main(["encode", "x.png", *out])  # called as a function (a notebook, a test): never started again
    assert seen == []


@pytest.mark.skipif(blas.numpy_blas().get("internal_api") != "openblas", reason="NumPy's BLAS is not OpenBLAS")
def test_the_real_library_is_measured_as_it_runs(monkeypatch):
    if AS_STARTED:
        monkeypatch.setenv(blas.CORETYPE_ENV, AS_STARTED)
    picked = blas.numpy_blas()["architecture"]  # by the library, or by $OPENBLAS_CORETYPE: the probe inherits both
    run = blas.measure(None)
    assert run["kernel"] == picked and run["gflops"] > 0
    assert "error" not in blas.measure("Haswell") or "avx2" not in blas.cpu_flags()


@pytest.mark.skipif(blas.numpy_blas().get("internal_api") != "openblas" or "avx2" not in blas.cpu_flags()
                    or not sys.platform.startswith("linux"), reason="needs OpenBLAS on a Linux CPU with AVX2")
def test_a_started_again_process_runs_the_chosen_kernels(tmp_path):
    code = ("import os\n"
            "from qvlearn.tools import blas\n"
            "blas.choose = lambda: blas.Choice(library='openblas', version='v', picked='Prescott', chosen='Haswell',\n"
            "                                  why='a stand-in choice')\n"
            "blas.adopt(log=print)\n"
            "print('runs', blas.numpy_blas()['architecture'], os.getpid())\n")
    env = {k: v for k, v in os.environ.items() if k not in (blas.ENV, blas.CORETYPE_ENV, blas.ADOPTED_ENV)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("BLAS: a stand-in choice: this run uses Haswell's kernels (OPENBLAS_CORETYPE=Haswell")
    assert lines[1].split()[:2] == ["runs", "Haswell"]


def test_numpys_own_blas_is_read_when_scipys_is_loaded_too(monkeypatch):
    import numpy as np
    import threadpoolctl

    site = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    scipys = dict(user_api="blas", internal_api="openblas", version="0.3.30", architecture="Haswell",
                  filepath=os.path.join(site, "scipy.libs", "libscipy_openblas-1.so"))
    numpys = dict(scipys, version="0.3.31", filepath=os.path.join(site, "numpy.libs", "libscipy_openblas64_-2.so"))
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [dict(user_api="openmp"), scipys, numpys])
    assert blas.numpy_blas()["version"] == "0.3.31"
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [scipys])  # NumPy's not found: the first BLAS
    assert blas.numpy_blas()["version"] == "0.3.30"
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [])
    assert blas.numpy_blas() == {}
