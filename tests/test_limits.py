"""The cases a careful user's tour of unusual input found: configs checked before anything is built, the cost known
before the work, Ctrl-C that stops, the reference reading what the engine reads, no silent destruction of an image,
and a true one-line message for each of the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import warnings

import numpy as np
import pytest
from cli_helpers import PY, assert_clean, run_cli
from PIL import Image

import qvlearn
from qvlearn.config import preset_config_dict, vision_config_from_dict
from qvlearn.cost import block_flops, estimate, forward_flops
from qvlearn.errors import CheckpointError, ConfigError, ImageError, OutputError
from qvlearn.tools import cache

_run, _clean = run_cli, assert_clean


# -- configs are validated before anything is built -------------------------------------------------------------
BAD_FIELDS = [
    ("fullatt_block_indexes", "13", "must be a list of block numbers"),  # not read character by character
    ("fullatt_block_indexes", [1.0, 3], "must be a list of block numbers"),
    ("deepstack_visual_indexes", [True], "must be a list of block numbers"),
    ("depth", 1_000_000_000, "beyond any Qwen-VL tower"),  # refused at once, not after 50 MB/s of shapes
    ("depth", "4", "must be a positive integer"),
    ("depth", 0, "must be a positive integer"),
    ("num_heads", 4.0, "must be a positive integer"),
    ("hidden_size", 10**6, "beyond any Qwen-VL tower"),
    ("patch_size", -14, "must be a positive integer"),
    ("window_size", "112", "must be a positive integer"),
    ("tokens_per_second", "2", "must be a positive number"),
    ("hidden_act", 3, "must be a string"),
]


@pytest.mark.parametrize("key,value,message", BAD_FIELDS, ids=[f"{k}={v!r}" for k, v, _ in BAD_FIELDS])
def test_every_field_is_checked_with_its_key_and_value(key, value, message):
    config = preset_config_dict("tiny-qwen2.5-vl")
    config["vision_config"][key] = value
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message) as info:
        vision_config_from_dict(config)
    assert time.monotonic() - start < 1.0
    assert key in str(info.value) and repr(value) in str(info.value) or str(value) in str(info.value)


def test_qwen2_vl_string_sizes_are_not_multiplied():
    """embed_dim "64" times mlp_ratio 4 is the string "64646464" in Python: refused as a string first."""
    config = preset_config_dict("tiny-qwen2-vl")
    config["vision_config"]["embed_dim"] = "64"
    with pytest.raises(ConfigError, match=r"embed_dim must be a positive integer, got '64'"):
        vision_config_from_dict(config)
    config["vision_config"].update(embed_dim=64, mlp_ratio=1.01)
    with pytest.raises(ConfigError, match="not a whole MLP width"):
        vision_config_from_dict(config)


def test_the_cli_refuses_a_bad_config_in_one_line(tmp_path, photo, checkpoint):
    model = tmp_path / "model"
    qvlearn.save_random_checkpoint(model, "tiny-qwen2.5-vl")
    config = json.loads((model / "config.json").read_text())
    config["vision_config"]["fullatt_block_indexes"] = "13"
    (model / "config.json").write_text(json.dumps(config))
    for extra in ([], ["--reference"]):
        proc = _run("taps", photo, "--model", model, "--out", tmp_path / "t.safetensors", *extra)
        _clean(proc, message="fullatt_block_indexes must be a list of block numbers")
    assert not (tmp_path / "t.safetensors").exists()


# -- the index stays inside the snapshot and agrees with model.safetensors ------------------------------------------
def _sharded(tmp_path, name="sharded"):
    return qvlearn.save_random_checkpoint(tmp_path / name, "tiny-qwen2.5-vl", max_shard_bytes=200_000)


@pytest.mark.parametrize("target", ["../../outside.safetensors", "/etc/outside.safetensors"])
def test_an_index_naming_files_outside_the_snapshot_is_refused(tmp_path, target):
    path = _sharded(tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = target
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the snapshot folder"):
        qvlearn.load_weights(path, qvlearn.read_config(path))


def test_an_index_and_a_single_file_that_disagree_are_refused_by_both_paths(tmp_path, photo):
    path = _sharded(tmp_path)
    other = qvlearn.save_random_checkpoint(tmp_path / "other", "tiny-qwen2.5-vl", seed=5)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="both model.safetensors and model.safetensors.index.json"):
        qvlearn.load_weights(path, qvlearn.read_config(path))
    for extra in ([], ["--reference"]):
        _clean(_run("taps", photo, "--model", path, "--out", tmp_path / "t.safetensors", *extra),
               message="Keep one")


def test_the_reference_reads_the_files_the_engine_reads(tmp_path, mixed_batch):
    """A stray *.safetensors beside an index is not loaded by either side (transformers used to load every file)."""
    from qvlearn.tools.reference import reference_tower, reference_trace

    path = _sharded(tmp_path)
    other = qvlearn.save_random_checkpoint(tmp_path / "other", "tiny-qwen2.5-vl", seed=5)
    (path / "stray-copy.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    ours = qvlearn.load_encoder(path)(*mixed_batch)
    theirs = reference_trace(reference_tower(path), *mixed_batch)["embeddings"]
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-5


def test_a_transformers_failure_is_one_line(tmp_path, photo, checkpoint):
    """A snapshot qvlearn accepts but transformers cannot build: one line naming transformers, exit 2."""
    model = tmp_path / "model"
    qvlearn.save_random_checkpoint(model, "tiny-qwen2.5-vl")
    config = json.loads((model / "config.json").read_text())
    config["vision_config"]["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "axial", "bogus": [[]]}
    config["vision_config"]["initializer_range"] = "wide"  # transformers' strict dataclass refuses this type
    (model / "config.json").write_text(json.dumps(config))
    proc = _run("taps", photo, "--model", model, "--out", tmp_path / "t.safetensors", "--reference")
    _clean(proc, message="transformers could not run the qwen2_5_vl tower")
    assert len(proc.stderr.strip().splitlines()) <= 2  # the estimate line and the error


# -- cost is known before the work -----------------------------------------------------------------------------------
def test_the_estimate_counts_what_the_tower_does():
    cfg = qvlearn.preset_config("qwen2.5-vl-7b")
    omni = qvlearn.preset_config("qwen2.5-omni-7b")
    grid = [(1, 42, 56)]
    assert forward_flops(omni, grid) == forward_flops(cfg, grid)  # the same tower: the same count (gated MLP)
    per_block = block_flops(cfg, grid)
    assert per_block[7] > per_block[0] and per_block[7] == per_block[31]  # full attention costs more
    cost = estimate(cfg, grid)
    assert cost.patches == 42 * 56 and cost.tokens == 42 * 56 // 4 and cost.flops > sum(per_block)
    assert 4.0e9 < cost.peak_bytes < 5.5e9  # float32 weights 2.7 GB, the bf16 file 1.35 GB, activations


def test_a_runaway_resize_is_refused_with_the_estimate(tmp_path, checkpoint):
    tiny = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tiny)
    model = checkpoint("tiny-qwen2-vl")
    proc = _run("encode", tiny, "--model", model, "--out", tmp_path / "e.npz", "--min-pixels", 60_000_000,
                "--max-pixels", 70_000_000)
    _clean(proc, message="beyond --max-patches 65,536")
    assert "TFLOP" in proc.stderr and "GB of memory" in proc.stderr and "--max-patches 306916" in proc.stderr
    proc = _run("encode", tiny, "--model", model, "--out", tmp_path / "e.npz", "--max-memory", "0.01")
    _clean(proc, message="more than --max-memory 0.01 GB")
    assert not (tmp_path / "e.npz").exists()


def test_the_estimate_is_printed_before_the_work(tmp_path, photo, checkpoint):
    proc = _run("encode", photo, "--model", checkpoint("tiny-qwen2-vl"), "--out", tmp_path / "e.npz")
    assert proc.returncode == 0, proc.stderr
    assert "estimate: 70 patches (tokens" not in proc.stderr and "patches" in proc.stderr and "roughly" in proc.stderr
    proc = _run("encode", photo, "--model", checkpoint("tiny-qwen2-vl"), "--out", tmp_path / "f.npz", "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""


# -- Ctrl-C stops within a second ----------------------------------------------------------------------------------
def test_ctrl_c_inside_a_full_attention_block_stops_at_once(tmp_path):
    """One full-attention block over 65536 patches (seconds of attention on the CPU threads): SIGINT, and a second
    one 50 ms later, end the process within a second with its message, exit 130, no traceback, no file."""
    model = qvlearn.save_random_checkpoint(tmp_path / "model", "tiny-qwen2-vl", depth=1, dtype="float32")
    image = tmp_path / "big.bmp"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (3584, 3584, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "e.npz"
    proc = subprocess.Popen(PY + ["encode", str(image), "--model", str(model), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # the estimate: printed after preprocessing, before the model is loaded
        assert line.startswith("estimate: 65,536 patches"), line
        time.sleep(2.0)  # loading the tiny tower takes milliseconds; its one block's attention takes seconds
        assert proc.poll() is None, "the forward ended before the interrupt: nothing was tested"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and took < 1.0, (proc.returncode, took, stderr)
    assert stderr.strip() == "interrupted; no output was written", stderr
    assert stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["big.bmp", "model"]


# -- no silent destruction of an image -----------------------------------------------------------------------------
def _warnings_of(path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pixels, grid = qvlearn.preprocess(images=[path])
    return [str(w.message) for w in seen if issubclass(w.category, UserWarning)], pixels


LOSSY = [
    ("i16.png", lambda: Image.fromarray((np.arange(4096).reshape(64, 64) * 10).astype(np.uint16)), "clips every value"),
    ("i32.tif", lambda: Image.fromarray((np.arange(4096).reshape(64, 64) * 100).astype(np.int32)), "clips every value"),
    ("f.tif", lambda: Image.fromarray((np.arange(4096).reshape(64, 64) / 4096).astype(np.float32)), "cuts each value"),
    ("lab.tif", lambda: Image.new("LAB", (64, 64), (50, 120, 130)), "CIE L*a*b*"),
]


@pytest.mark.parametrize("name,make,message", LOSSY, ids=[n for n, _, _ in LOSSY])
def test_a_mode_that_loses_the_picture_is_converted_as_transformers_does_with_a_warning(tmp_path, name, make, message):
    from transformers.image_utils import load_image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = tmp_path / name
    make().save(path)
    said, pixels = _warnings_of(path)
    assert len(said) == 1 and message in said[0] and str(path) in said[0], said
    theirs = Qwen2VLImageProcessorPil()(images=[load_image(str(path))], return_tensors="np")["pixel_values"]
    assert np.array_equal(pixels, theirs)  # converted exactly as transformers does


def test_a_wide_mode_whose_values_fit_is_not_flagged(tmp_path):
    path = tmp_path / "fits.tif"
    Image.fromarray((np.arange(4096).reshape(64, 64) % 256).astype(np.int32)).save(path)
    assert _warnings_of(path)[0] == []


def test_quiet_silences_warnings_and_the_cli_prints_them_in_one_line(tmp_path, checkpoint):
    path = tmp_path / "i16.png"
    LOSSY[0][1]().save(path)
    model = checkpoint("tiny-qwen2-vl")
    proc = _run("encode", path, "--model", model, "--out", tmp_path / "a.npz")
    assert proc.returncode == 0 and "warning: " in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr
    proc = _run("encode", path, "--model", model, "--out", tmp_path / "b.npz", "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""


# -- every other case: a true one-line message -------------------------------------------------------------------
def test_a_symlink_loop_is_not_called_missing(tmp_path, checkpoint):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(ImageError, match="symbolic link that leads to no file .a loop of links."):
        qvlearn.preprocess(images=[tmp_path / "a.png"])
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageError, match="target .*nowhere.png is missing"):
        qvlearn.preprocess(images=[tmp_path / "gone.png"])


def test_out_empty_and_thread_counts(tmp_path, photo, checkpoint):
    model = checkpoint("tiny-qwen2-vl")
    _clean(_run("encode", photo, "--model", model, "--out", ""), message="--out is empty")
    _clean(_run("encode", photo, "--model", model, "--out", tmp_path / "e.npz", "--threads", 100000),
           message="more threads than that only slow the work down")


def test_one_video_path_is_one_video(tmp_path):
    frames = [Image.fromarray(np.full((56, 84, 3), 40 * i, np.uint8)) for i in range(4)]
    path = tmp_path / "clip.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    single = qvlearn.preprocess(videos=str(path))
    listed = qvlearn.preprocess(videos=[str(path)])
    assert np.array_equal(single[0], listed[0]) and single[1].tolist() == listed[1].tolist() == [[2, 4, 6]]


@pytest.mark.parametrize("flag,value,message", [
    ("--rtol", "-1", "a finite number above 0"), ("--rtol", "nan", "a finite number above 0"),
    ("--scale-tol", "inf", "a finite number above 0"), ("--factor", "-5", "a finite number above 0"),
    ("--factor", "0.5", "a factor of at least 1"), ("--rtol", "tight", "expected a number"),
])
def test_compare_refuses_tolerances_that_mean_nothing(tmp_path, flag, value, message):
    proc = _run("compare", tmp_path / "a.safetensors", tmp_path / "b.safetensors", flag, value)
    assert proc.returncode == 2 and message in proc.stderr and "inputs differ" not in proc.stdout, proc.stderr


def test_a_baseline_that_is_the_reference_is_refused(tmp_path, photo, checkpoint):
    model = checkpoint("tiny-qwen2-vl")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out in (a, b):
        assert _run("taps", photo, "--model", model, "--out", out, "--quiet").returncode == 0
    _clean(_run("compare", a, b, "--baseline", b), message="B and --baseline are the same file")
    proc = _run("compare", a, b, "--stages", "embeddings")  # --stages is --stage
    assert proc.returncode == 0 and "all 1 stages within tolerance" in proc.stdout, proc.stdout + proc.stderr


def test_the_pickle_refusal_names_each_file_once(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError) as info:
        qvlearn.load_weights(tmp_path, qvlearn.preset_config("tiny-qwen2-vl"))
    assert str(info.value).count("pytorch_model.bin") == 1


def test_a_snapshot_is_never_overwritten_by_random_weights(tmp_path):
    path = qvlearn.save_random_checkpoint(tmp_path / "m", "tiny-qwen2-vl", seed=1)
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a snapshot"):
        qvlearn.save_random_checkpoint(path, "tiny-qwen2-vl", seed=2)
    assert (path / "model.safetensors").read_bytes() == before
    qvlearn.save_random_checkpoint(path, "tiny-qwen2-vl", seed=2, overwrite=True)
    assert (path / "model.safetensors").read_bytes() != before


def test_a_relative_cache_folder_is_refused(monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, "rel/cache")
    with pytest.raises(OutputError, match="is a relative path"):
        cache.cache_dir()


def test_a_process_waiting_for_the_cache_lock_says_so(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    lock = tmp_path / ".held.lock"
    lock.touch()
    said = []
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        import threading

        def release():
            time.sleep(0.3)
            fcntl.flock(handle, fcntl.LOCK_UN)

        threading.Thread(target=release).start()
        with cache._locked(lock, said.append, "an entry"):
            pass
    assert said and said[0].startswith("waiting for another qvlearn process, which is building an entry")


def test_the_help_names_every_family():
    from qvlearn.families import FAMILIES

    text = subprocess.run(PY + ["--help"], capture_output=True, text=True).stdout.replace("\n", " ")
    text = " ".join(text.split())
    assert all(f.title in text for f in FAMILIES.values()), text
