"""compare read by a porter: every misleading verdict of an earlier version now says what is wrong.

Each test makes the mistake a porter makes (half-precision taps, q tapped after the scale, taps of another
image, a stage of the other family, an eps outside the square root) and checks the message and the exit code.
"""

from __future__ import annotations

import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from array_api_compat import array_namespace

import qvlearn
from qvlearn.engine.kernels import KERNELS
from qvlearn.stages import INNER_STAGES, TAP_STAGES, block_of
from qvlearn.tools.taps import EXIT_INPUTS, TAP_TABLE, TapError, compare_taps, exit_code, format_table, suggest

PY = [sys.executable, "-m", "qvlearn"]


@pytest.fixture(scope="module")
def golden(checkpoint, mixed_batch):
    encoder = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    return encoder.trace(*mixed_batch, to_numpy=True, stages="*")


def _first_bad(rows):
    return next(r for r in rows if not r.ok)


def test_the_tap_table_names_every_stage_with_its_meaning():
    names = {row[0] for row in TAP_TABLE}
    assert names == {n for n in TAP_STAGES} | {f"blocks.{{i}}.{n}" for n in INNER_STAGES}
    text = {row[0]: row[4] for row in TAP_TABLE}
    assert "before" in text["blocks.{i}.attn.q"] and "1/sqrt(head_dim)" in text["blocks.{i}.attn.q"]
    assert "starting at 0" in text["cu_seqlens"] and "patch rows" in text["cu_window_seqlens"]
    assert "(row, col)" in text["position_ids"] and "silu(gate) * up" in text["blocks.{i}.mlp.act"]


def test_misspellings_point_into_the_same_block():
    assert suggest("blocks.2.atn") == "blocks.2.attn"
    assert suggest("blocks.7.norm_1") == "blocks.7.norm1"
    assert "v is not a tap stage" in suggest("blocks.0.attn.v") and "blocks.0.attn" in suggest("blocks.0.attn.v")
    assert suggest("blocks.3.mlp.down_proj") == "the MLP's output is blocks.3.mlp"
    assert suggest("deepstack_1") == "deepstack.1"
    with pytest.raises(TapError, match=r"'blocks\.2\.atn' \(did you mean 'blocks\.2\.attn'\?\)"):
        compare_taps({"blocks.2.atn": np.zeros(3), "embeddings": np.zeros(3)}, {"embeddings": np.zeros(3)})


def test_stage_takes_globs_and_ignores_other_names(golden):
    port = dict(golden, **{"my_debug_tensor": np.zeros(3, np.float32)})
    rows = compare_taps(port, golden, stages=["blocks.0.*"])
    inner = qvlearn.preset_config("tiny-qwen2.5-vl").kind.block_stages
    assert [r.name for r in rows] == [f"blocks.0.{n}" for n in inner] + ["blocks.0.natural"]
    assert all(r.ok for r in rows)
    with pytest.raises(TapError, match="not tap stages: 'my_debug_tensor'"):  # without --stage, refused by name
        compare_taps(port, golden)


def _advised(note: str) -> tuple[float, float]:
    """The --rtol and --scale-tol that a half-precision note advises."""
    match = re.search(r"--rtol (\S+) --scale-tol ([^`\s]+)", note)
    assert match, note
    return float(match.group(1)), float(match.group(2))


def _half(taps: dict, dtype, keep_dtype=False) -> dict:
    out = {}
    for k, v in taps.items():
        out[k] = v if v.dtype != np.float32 else v.astype(dtype) if keep_dtype else v.astype(dtype).astype(np.float32)
    return out


def test_half_precision_taps_say_so(golden):
    fp16 = _half(golden, np.float16, keep_dtype=True)
    row = _first_bad(compare_taps(fp16, golden, stages=["blocks.0.norm1"]))
    assert "holds float16" in row.note and "--rtol 1e-3 --scale-tol 1e-3" in row.note
    rows = compare_taps(fp16, golden)  # the whole file: the inputs are the same image, rounded
    assert rows[0].name == "pixel_values" and "float16" in rows[0].note and "inputs differ" not in rows[0].note
    assert exit_code(rows) == 1
    bf16 = _half(golden, ml_dtypes.bfloat16)  # bf16 values in float32 (in float16's range too: named bf16 all the same)
    row = _first_bad(compare_taps(bf16, golden, stages=["blocks.0.norm1"]))
    assert "only values of bfloat16" in row.note and "--rtol 1e-2 --scale-tol 1e-2" in row.note
    real_bf16 = _half(golden, ml_dtypes.bfloat16, keep_dtype=True)  # tensors stored as BF16
    assert "holds bfloat16" in _first_bad(compare_taps(real_bf16, golden, stages=["blocks.0.norm1"])).note
    assert compare_taps(golden, golden, stages=["blocks.0.norm1"])[0].note == ""  # float32 values are not flagged


# Values computed without a BLAS (an exact range, correctly rounded divisions): the same bits on every machine.
_EXACT = {"blocks.0.norm1": ((np.arange(4096, dtype=np.float32) - 1000) / np.float32(777.0)).reshape(64, 64),
          "embeddings": ((np.arange(96 * 16, dtype=np.float32) % 97 - 48) / np.float32(3.0)).reshape(16, 96)}


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_names_the_format_on_exact_values(dtype):
    """A file of bf16 values inside float16's range is named bf16, a file of fp16 values fp16: built on values whose
    verdict cannot depend on the machine."""
    rows = compare_taps(_half(_EXACT, dtype), _EXACT)
    name = "float16" if dtype == np.float16 else "bfloat16"
    assert not rows[0].ok and f"only values of {name}:" in rows[0].note


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("source", ["exact", "golden"])
def test_the_half_precision_advice_passes_on_a_clean_file(dtype, source, request):
    """The flags a half-precision note advises pass on the reference rounded to that format, every stage."""
    reference = _EXACT if source == "exact" else request.getfixturevalue("golden")
    clean = _half(reference, dtype)
    rtol, scale_tol = _advised(_first_bad(compare_taps(clean, reference)).note)
    assert all(r.ok for r in compare_taps(clean, reference, rtol=rtol, scale_tol=scale_tol))


def test_a_constant_factor_is_named(golden):
    d = golden["blocks.0.attn.q"].shape[-1]
    scaled = dict(golden, **{"blocks.0.attn.q": golden["blocks.0.attn.q"] * np.float32(d ** -0.5)})
    row = _first_bad(compare_taps(scaled, golden))
    assert row.name == "blocks.0.attn.q" and "constant factor" in row.note and "after the attention scale" in row.note
    doubled = dict(golden, **{"blocks.0.attn.k": golden["blocks.0.attn.k"] * 2})
    row = _first_bad(compare_taps(doubled, golden))
    assert row.name == "blocks.0.attn.k" and "2 x the reference" in row.note


def test_taps_of_another_image_are_not_called_a_port_bug(checkpoint, golden):
    encoder = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    rng = np.random.default_rng(9)
    other = qvlearn.preprocess(images=[rng.integers(0, 256, (150, 230, 3), dtype=np.uint8),
                                       rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)],
                               videos=[[rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]])
    taps = encoder.trace(*other, to_numpy=True, stages="*")
    rows = compare_taps(taps, golden)
    assert rows[0].name == "pixel_values" and "inputs differ" in rows[0].note
    assert exit_code(rows) == EXIT_INPUTS
    assert "the inputs differ at pixel_values" in format_table(rows, 1e-5)


def test_a_stage_of_the_other_family_fails(golden):
    port = dict(golden, **{"blocks.0.mlp.fc1": golden["blocks.0.mlp.gate"]})
    rows = compare_taps(port, golden)
    bad = [r for r in rows if not r.ok]
    assert [r.name for r in bad] == ["blocks.0.mlp.fc1"] and "another family" in bad[0].note


def _rms_outside_the_root(x, weight, eps=1e-6):
    """RMSNorm with eps added after the square root: x / (rms + eps)."""
    xp = array_namespace(x)
    return x / (xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True)) + eps) * weight


def test_the_baseline_sets_a_scale_floor_per_stage(checkpoint, mixed_batch):
    """eps outside the root: a scale error far below 1e-6 but ~100x the clean port's; the baseline's scale floor
    catches it at norm1, where the bug lives."""
    from qvlearn.tools.reference import reference_tower, reference_trace

    path = checkpoint("tiny-qwen2.5-vl")
    encoder = qvlearn.load_encoder(path)
    golden = encoder.trace(*mixed_batch, to_numpy=True, stages="*")
    reference = reference_trace(reference_tower(path), *mixed_batch, stages="*")
    port = encoder.with_kernels(KERNELS.replace(rms_norm=_rms_outside_the_root)).trace(*mixed_batch, to_numpy=True,
                                                                                        stages="*")
    without = _first_bad(compare_taps(port, golden))
    assert without.name != "blocks.0.norm1"  # the fixed tolerance misses it at norm1
    rows = compare_taps(port, golden, baseline=reference)
    first = _first_bad(rows)
    assert first.name == "blocks.0.norm1" and "scale error" in first.note and "baseline" in first.note
    assert all(r.ok for r in compare_taps(golden, golden, baseline=reference))  # a clean port passes
    verdict = format_table(rows, 1e-5).splitlines()[-1]
    assert verdict.startswith("first stage beyond tolerance: blocks.0.norm1 (limits:") and "noise floor" in verdict


def test_the_readmes_stage_selection_compares(tmp_path, checkpoint):
    """`taps --stages 'blocks.0.*'` (the README's example) writes a file compare accepts: inputs and output are always
    in it."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(image)
    model = str(checkpoint("tiny-qwen2.5-vl"))
    golden, some = tmp_path / "golden.safetensors", tmp_path / "some.safetensors"
    subprocess.run(PY + ["taps", str(image), "--model", model, "--out", str(golden)], check=True, capture_output=True)
    subprocess.run(PY + ["taps", str(image), "--model", model, "--stages", "blocks.0.*", "--out", str(some)],
                   check=True, capture_output=True)
    proc = subprocess.run(PY + ["compare", str(some), str(golden)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(PY + ["compare", str(some), str(golden), "--stage", "blocks.0*"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "missing from the second tap file" in proc.stderr  # inner stages: golden has none


@pytest.mark.parametrize("first, second", [("mlp.gate", "mlp.up"), ("attn.q", "attn.k")])
def test_swapped_stages_are_named(golden, first, second):
    a, b = f"blocks.1.{first}", f"blocks.1.{second}"
    port = dict(golden, **{a: golden[b], b: golden[a]})
    row = _first_bad(compare_taps(port, golden))
    assert row.name == a and f"{first} and {second} swapped" in row.note, row.note
    one_way = dict(golden, **{a: golden[b]})  # only one of them wrong: named as an equality
    row = _first_bad(compare_taps(one_way, golden))
    assert row.name == a and f"this file's {first} equals the reference's {second}" in row.note, row.note


def test_a_failing_block_of_a_main_stages_file_suggests_its_inner_stages(golden):
    main = {k: v for k, v in golden.items() if (block_of(k) or (0, None))[1] in (None, "natural")}
    port = dict(main, **{"blocks.2": main["blocks.2"] * np.float32(1.01)})
    text = format_table(compare_taps(port, main), 1e-5)
    assert "first stage beyond tolerance: blocks.2 " in text and "--stages 'blocks.2.*'" in text, text
    inner = dict(golden, **{"blocks.2": golden["blocks.2"] * np.float32(1.01)})  # inner stages there: no advice
    assert "--stages" not in format_table(compare_taps(inner, golden), 1e-5)


def test_the_limits_line_states_the_minimum_floors(checkpoint, golden):
    rows = compare_taps(golden, golden, baseline=golden)
    line = format_table(rows, 1e-5).splitlines()[-1]
    assert "or 1e-06 in rel and 1e-07 in scale" in line, line


def test_a_golden_file_with_floors_catches_eps_outside_the_root_without_a_baseline(tmp_path, checkpoint):
    """`taps --floors` stores each stage's float32 noise floor (qvlearn against transformers) in the golden file; a
    two-file compare then names blocks.0.norm1 for an RMSNorm with eps outside the root, and passes a clean run."""
    from PIL import Image

    from qvlearn.tools.taps import FLOORS_KEY, load_taps, save_taps

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(image)
    model = checkpoint("tiny-qwen2.5-vl")
    golden, clean, port = (tmp_path / f"{n}.safetensors" for n in ("golden", "clean", "port"))
    for out, extra in ((golden, ["--floors"]), (clean, ["--reference"])):
        proc = subprocess.run(PY + ["taps", str(image), "--model", str(model), "--stages", "*", "--out", str(out),
                                    "--quiet", *extra], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    stages, metadata = load_taps(golden)
    assert FLOORS_KEY in metadata
    encoder = qvlearn.load_encoder(model).with_kernels(KERNELS.replace(rms_norm=_rms_outside_the_root))
    pixel_values, grid = qvlearn.preprocess(images=[str(image)])
    save_taps(port, encoder.trace(pixel_values, grid, to_numpy=True, stages="*"), source="a port")
    proc = subprocess.run(PY + ["compare", str(port), str(golden)], capture_output=True, text=True)
    assert proc.returncode == 1 and "first stage beyond tolerance: blocks.0.norm1" in proc.stdout, proc.stdout
    assert "reference file's floor" in proc.stdout
    proc = subprocess.run(PY + ["compare", str(clean), str(golden)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
