"""The benchmark runs end to end on the tiny presets and reports every column (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qvlearn
from qvlearn.tools.bench import build_gpu_report, forward_flops, gpu_status, run_case

COLUMNS = ["tower", "image (px)", "patches", "qvlearn s", "transformers s", "ratio", "GFLOP", "qvlearn GFLOP/s",
           "share of matmul peak", "qvlearn peak RSS GiB", "transformers peak RSS GiB", "weights f32 GiB"]


@pytest.mark.slow  # subprocesses: half a minute
def test_bench_tiny_prints_every_column(tmp_path):
    report = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "-m", "qvlearn.tools.bench", "--tiny", "--report", str(report), "--plot",
                           str(tmp_path / "bench.png")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| tower"))
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    rows = [line for line in text.splitlines() if line.startswith("| tiny-") and line.count("|") == len(COLUMNS) + 1]
    assert len(rows) == len(qvlearn.tools.bench.TINY_CASES) == 3 and not any("failed" in r for r in rows)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(COLUMNS) and all(cells)
        float(cells[3]), float(cells[4]), float(cells[5])
    assert "GFLOP/s" in text and "Machine:" in text and "GPU" in text
    load = text[text.index("| weights in memory"):].splitlines()
    assert [c.strip() for c in load[0].strip("|").split("|")] == ["weights in memory", "cold s", "warm s"]
    assert [r.split("|")[1].strip() for r in load[2:4]] == ["float32", "bfloat16"]
    assert all(float(c) >= 0 for r in load[2:4] for c in r.strip("|").split("|")[1:])
    assert (tmp_path / "bench.png").stat().st_size > 1000
    steps = [line for line in text.splitlines() if line.startswith("| tiny-") and line.count("|") == 7]
    labels = [label for _, label in qvlearn.tools.bench.STEPS] + ["outside the blocks (s per forward)", "forward (s)"]
    assert len(steps) == len(qvlearn.tools.bench.TINY_CASES) * len(labels)  # every step of every case, none failed
    for case in qvlearn.tools.bench.TINY_CASES:
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in steps if line.startswith(f"| {case[0]} ")]
        assert [r[2] for r in rows] == labels
        assert all(float(r[3]) >= 0 and float(r[4]) >= 0 for r in rows)


def test_flop_count_by_hand():
    cfg = qvlearn.preset_config("qwen2-vl-2b")
    n, D, I = 2352, 1280, 5120
    by_hand = (2 * n * 1176 * D + 32 * (2 * n * D * 4 * D + 2 * 2 * n * D * I + 4 * n * n * D)
               + 2 * (n // 4) * 4 * D * (4 * D + 1536))
    assert forward_flops(cfg, [(1, 42, 56)]) == by_hand
    q3 = qvlearn.preset_config("qwen3-vl-8b")                     # full attention everywhere, 3 DeepStack mergers
    n, D, I, M = 1008, 1152, 4304, 4 * 1152
    by_hand = (2 * n * 1536 * D + 27 * (2 * n * D * 4 * D + 2 * 2 * n * D * I + 4 * n * n * D)
               + 4 * 2 * (n // 4) * M * (M + 4096))
    assert forward_flops(q3, [(1, 28, 36)]) == by_hand


def test_gpu_mode_without_a_gpu_says_so(tmp_path):
    """Where no GPU is lent, ``--gpu`` measures nothing and states that the CPU results stand."""
    if gpu_status()[0] is not None:
        pytest.skip("a GPU is present: the GPU cases are measured, not skipped")
    report = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "-m", "qvlearn.tools.bench", "--gpu", "--tiny", "--report", str(report)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "No GPU on this machine" in text and "CPU results" in text and "cupy" in text


@pytest.mark.slow  # subprocesses
def test_gpu_report_columns_from_real_worker_runs():
    """The GPU table, filled with the same worker runs on the CPU (NumPy / torch CPU, float32 and bf16):
    every column is there and the ratios are the workers' own medians divided."""
    case = ("tiny-qwen2-vl", 56, 84)
    rows = [(run_case("qvlearn", *case, 1, 0),
             run_case("transformers", *case, 1, 0, torch_dtype="float32"),
             run_case("transformers", *case, 1, 0, torch_dtype="bfloat16"))]
    for r in rows[0]:
        assert "error" not in r, r
    rows[0][0]["peak_device"] = rows[0][0]["peak_rss"]  # the CPU stands in for the device here
    text = build_gpu_report(rows, "CPU stand-in")
    header = next(line for line in text.splitlines() if line.startswith("| tower"))
    row = next(line for line in text.splitlines() if line.startswith("| tiny-qwen2-vl"))
    assert len(header.split("|")) == len(row.split("|")) == 12
    cells = [c.strip() for c in row.strip("|").split("|")]
    ours, f32, bf16 = rows[0]
    assert cells[2] == str(ours["patches"]) and bf16["dtype"] == "bfloat16"
    assert float(cells[5]) == pytest.approx(ours["median"] / f32["median"], abs=0.006)
    assert float(cells[7]) == pytest.approx(ours["median"] / bf16["median"], abs=0.006)


@pytest.mark.gpu
def test_gpu_bench_tiny_measures_every_case(tmp_path):
    report = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, "-m", "qvlearn.tools.bench", "--gpu", "--tiny", "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in report.read_text().splitlines() if line.startswith("| tiny-")]
    assert len(rows) == len(qvlearn.tools.bench.TINY_CASES) == 3 and not any("failed" in r for r in rows), rows


def test_the_report_names_the_machine_its_blas_kernel_and_both_libraries_matmul_rates():
    from qvlearn.tools.bench import machine, machine_line

    info = machine((256,))
    line = machine_line(info)
    assert info["blas_kernel"] and info["blas_threads"] >= 1 and info["numpy_gflops"] > 0
    assert info["torch"]["gflops"] > 0 and info["torch"]["capability"]          # measured in its own process
    assert f"({info['blas_kernel']} kernels, {info['blas_threads']} threads)" in line
    assert "NumPy **" in line and "torch **" in line and "256^3" in line
    fake = dict(info, flags=["avx2", "fma", "avx512f", "avx512_vnni"], torch={})
    assert "AVX512F, AVX512_VNNI" in machine_line(fake) and "no AVX-512" not in machine_line(fake)
    assert "torch not installed" in machine_line(fake)


def test_the_kernels_report_puts_each_family_beside_transformers():
    from qvlearn.config import preset_config
    from qvlearn.cost import forward_flops
    from qvlearn.tools.bench import INNER, STEPS, build_kernels_report

    def worker(preset, scale, median, depth=0):
        steps = {"projection": 10 * scale, "attention": 5 * scale, "finish": 20 * scale, "block": 35 * scale,
                 "outside blocks s": 0.1, "matmul": 50 * scale, "bias": scale, "norm": scale, "activation": scale}
        return dict(preset=preset, patches=2352, depth=depth, median=median, steps=steps, grid_thw=[[1, 42, 56]],
                    matmul_gflops=100.0 * scale)
    rows = [([worker("qwen2.5-vl-7b", 2.0, 8.0, 8), worker("qwen2.5-vl-7b", 1.0, 4.0, 8)],
             worker("qwen2.5-vl-7b", 4.0, 16.0, 8)),
            ([dict(preset="qwen2-vl-2b", error=["killed"]), worker("qwen2-vl-2b", 1.0, 1.0)],
             worker("qwen2-vl-2b", 1, 1))]
    info = dict(cpu="CPU", arch="x86_64", cores=2, flags=["avx2"], numpy="2", blas="openblas", blas_version="0.3",
                blas_kernel="Haswell", blas_threads=2, numpy_gflops=100.0, torch={}, sizes=[2048])
    report = build_kernels_report(rows, ["Haswell", "SkylakeX"], "Haswell", info)
    assert "| qvlearn Haswell (as loaded) ms | qvlearn SkylakeX ms | transformers ms |" in report
    assert "| qwen2.5-vl-7b | 8 | 2352 | whole block | 70.0 | 35.0 | 140.0 | 0.50 | 0.25 |" in report
    assert "| qwen2.5-vl-7b | 8 | 2352 | forward (s) | 8.00 | 4.00 | 16.00 | 0.50 | 0.25 |" in report
    assert sum(line.startswith("| qwen2.5-vl-7b") for line in report.splitlines()) == len(STEPS) + 2 + len(INNER)
    assert "| qwen2.5-vl-7b | 8 | 2352 | inside: matmuls of the linear layers (core-ms) | 100.0 | 50.0 | n/a | | |" \
        in report
    flops = forward_flops(preset_config("qwen2.5-vl-7b", depth=8, fullatt_block_indexes=[7]), [[1, 42, 56]])
    floors = [flops / rate / 1e9 for rate in (200.0, 100.0, 400.0)]  # each process's own matmul rate
    assert (f"| qwen2.5-vl-7b | 8 | 2352 | matmul floor (s): {flops / 1e9:.0f} GFLOP at the process's 2048^3 rate | "
            f"{floors[0]:.2f} | {floors[1]:.2f} | {floors[2]:.2f} | 2.00 | 4.00 |") in report
    assert "| qwen2-vl-2b | | | failed: ['killed'] |" in report
    ignored = dict(worker("qwen3-vl-8b", 1.0, 1.0), blas_kernel="Haswell")  # OPENBLAS_CORETYPE did not take
    report = build_kernels_report([([worker("qwen3-vl-8b", 1.0, 1.0), ignored], worker("qwen3-vl-8b", 1, 1))],
                                  ["Haswell", "SkylakeX"], "Haswell", info)
    assert "| qwen3-vl-8b | | | failed: asked for SkylakeX's kernels, OpenBLAS ran Haswell's |" in report


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_the_step_clock_times_without_changing_a_bit(checkpoint, mixed_batch_for, preset):
    """The benchmark's clocked kernel table computes exactly what the engine's does, and its inner timers see
    every block's matmuls, bias adds, norms and activations (and nothing outside the blocks)."""
    import numpy as np

    from qvlearn.tools.bench import INNER, _QvlearnSteps

    encoder = qvlearn.load_encoder(checkpoint(preset))
    pixel_values, grid_thw = mixed_batch_for(encoder.config)
    clock = _QvlearnSteps()
    timed = encoder.with_kernels(clock.kernels(encoder.kernels))
    plain, clocked = encoder(pixel_values, grid_thw), timed(pixel_values, grid_thw)
    for a, b in zip(plain if isinstance(plain, tuple) else (plain,), clocked if isinstance(clocked, tuple)
                    else (clocked,)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    steps = clock.per_block(1.0)
    assert clock.blocks == encoder.config.depth
    assert all(steps[key] > 0 for key, _ in INNER), steps
    assert steps["matmul"] < 2 * steps["block"]  # core time of two parts at most: inside the blocks only
