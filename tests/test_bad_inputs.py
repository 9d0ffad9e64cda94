"""Bad input as a newcomer gives it: every case is a clear QvlearnError (or a CLI message and a non-zero exit),
never a traceback, never a silent wrong answer, and never a partial file left behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from cli_helpers import assert_clean, run_cli
from PIL import Image
from safetensors.numpy import load_file, save_file

import qvlearn
from qvlearn import atomic
from qvlearn.errors import BackendError, CheckpointError, ConfigError, ImageError, InputError, OutputError
from qvlearn.tools import cache, cli

_run, _clean = run_cli, assert_clean


def _copy_snapshot(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _poison(snapshot: Path, key: str, value=np.nan) -> None:
    tensors = load_file(snapshot / "model.safetensors")
    bad = tensors[key].astype(np.float32)
    bad.flat[7] = value
    tensors[key] = bad.astype(tensors[key].dtype)
    save_file(tensors, str(snapshot / "model.safetensors"), metadata={"format": "pt"})


# -- weights and configs ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_nan_or_inf_weight_is_named_at_load(tmp_path, checkpoint, value):
    snapshot = _copy_snapshot(checkpoint("tiny-qwen2.5-vl"), tmp_path / "snap")
    _poison(snapshot, "visual.blocks.2.attn.qkv.weight", value)
    with pytest.raises(CheckpointError, match=r"visual\.blocks\.2\.attn\.qkv\.weight \(1 of 12288 values"):
        qvlearn.load_encoder(snapshot)


def test_count_nonfinite_on_every_disk_dtype():
    from qvlearn.weights import count_nonfinite

    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        x = np.array([0, 1, -2, 3e4, np.nan, np.inf, -np.inf, 1e-30], dtype=np.float32).astype(dtype)
        assert count_nonfinite(x) == 3, dtype
    assert count_nonfinite(np.array([65504, -65504], np.float16)) == 0  # the largest finite halves


def test_cli_refuses_a_nan_weight_and_writes_nothing(tmp_path, checkpoint, photo):
    snapshot = _copy_snapshot(checkpoint("tiny-qwen2-vl"), tmp_path / "snap")
    _poison(snapshot, "visual.merger.mlp.0.weight")
    out = tmp_path / "e.npz"
    _clean(_run("encode", photo, "--model", snapshot, "--out", out), message="hold NaN or Inf")
    assert not out.exists()


@pytest.mark.parametrize("vision, message", [
    ({"rope_theta": "abc"}, "rope_theta must be a positive number"),
    ({"rope_parameters": [10000.0]}, "rope_parameters must be an object"),
    ({"rope_parameters": {"rope_theta": -1}}, "rope_theta must be a positive number"),
    ({"hidden_size": 0}, "vision_config.hidden_size must be a positive integer"),
    ({"hidden_size": 60, "num_heads": 7}, "(vision_config.hidden_size) 60 is not divisible by num_heads 7"),
    ({"depth": "four"}, "vision_config.depth must be a positive integer"),
])
def test_config_values_of_the_wrong_kind(tmp_path, checkpoint, vision, message):
    snapshot = _copy_snapshot(checkpoint("tiny-qwen2.5-vl"), tmp_path / "snap")
    config = json.loads((snapshot / "config.json").read_text())
    config["vision_config"].update(vision)
    (snapshot / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        qvlearn.load_encoder(snapshot)
    assert message in str(info.value)


def test_qwen2_vl_messages_name_its_own_json_keys():
    with pytest.raises(ConfigError, match=r"vision_config\.embed_dim must be"):
        qvlearn.preset_config("tiny-qwen2-vl", embed_dim=-1)


def test_unknown_checkpoint_fields_are_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"'foo'"):
        qvlearn.save_random_checkpoint(tmp_path / "x", "tiny-qwen2-vl", foo=1)
    with pytest.raises(ConfigError, match=r"did you mean 'depth'"):
        qvlearn.save_random_checkpoint(tmp_path / "x", "tiny-qwen2-vl", dpeth=2)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("path", [None, 3, ["dir"]])
def test_load_encoder_of_something_that_is_no_path(path):
    with pytest.raises(ConfigError, match="takes the path of a snapshot directory"):
        qvlearn.load_encoder(path)


def test_strict_backend_without_array_api_strict(monkeypatch):
    from qvlearn import backend

    monkeypatch.setitem(sys.modules, "array_api_strict", None)  # as if not installed
    monkeypatch.setattr(backend, "_CACHE", {})
    monkeypatch.setenv("QVLEARN_BACKEND", "strict")
    with pytest.raises(BackendError, match="pip install array-api-strict"):
        qvlearn.get_backend()


# -- pixel values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64, bool])
def test_integer_pixel_values_are_refused_like_bool(checkpoint, dtype):
    encoder = qvlearn.load_encoder(checkpoint("tiny-qwen2-vl"))
    pv, grid = qvlearn.preprocess(images=[np.zeros((56, 56, 3), np.uint8)])
    with pytest.raises(InputError, match="must be floating point"):
        encoder(pv.astype(dtype), grid)


def test_other_familys_pixel_values_say_which_family_to_preprocess_for(checkpoint):
    encoder = qvlearn.load_encoder(checkpoint("tiny-qwen3-vl"))
    pv, grid = qvlearn.preprocess(images=[np.zeros((64, 64, 3), np.uint8)], family="qwen2_5_vl")
    with pytest.raises(InputError, match=r"qwen2_vl / qwen2_5_vl / qwen2_5_omni patches.*family=encoder\.family"):
        encoder(pv, grid)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_pixels="big"), "max_pixels must be a positive whole number, got 'big'"),
    (dict(min_pixels=True), "min_pixels must be a positive whole number"),
    (dict(min_pixels=-5), "min_pixels must be a positive whole number"),
    (dict(max_pixels=1.5e6), "max_pixels must be a positive whole number"),
    (dict(mean=(0.5, 0.5)), "mean must be three numbers"),
    (dict(std=(0.5, 0.0, 0.5)), "std must be positive"),
    (dict(family="qwen9"), "unknown family 'qwen9'"),
])
def test_preprocess_arguments_of_the_wrong_kind(kwargs, message):
    with pytest.raises(ImageError) as info:
        qvlearn.preprocess(images=[np.zeros((30, 30, 3), np.uint8)], **kwargs)
    assert message in str(info.value)


def test_a_runaway_min_pixels_is_refused_before_any_work():
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"above qvlearn's limit of 67,108,864"):
        qvlearn.preprocess(images=[np.zeros((1, 1, 3), np.uint8)], min_pixels=200_000_000, max_pixels=400_000_000)
    assert time.perf_counter() - start < 5  # refused, not resized to 14168 x 14168 first


def test_decompression_bombs_are_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels > 2 x the limit: Pillow's hard error
    with pytest.raises(ImageError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
        qvlearn.preprocess(images=[path])


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d, "is a directory, not an image file"),
    (lambda d: "https://example.com/cat.jpg", "https://example.com/cat.jpg is a URL"),
    (lambda d: d / "nope.png", "image file not found"),
    (lambda d: _file(d / "empty.png", b""), "cannot read image file"),
    (lambda d: _file(d / "text.jpg", b"not a jpeg"), "cannot read image file"),
])
def test_paths_that_are_no_image_say_what_they_are(tmp_path, make, message):
    with pytest.raises(ImageError) as info:
        qvlearn.preprocess(images=[make(tmp_path)])
    assert message in str(info.value)


def test_a_truncated_jpeg(tmp_path, photo):
    whole = tmp_path / "whole.jpg"
    Image.open(photo).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:600])
    with pytest.raises(ImageError, match="cannot read image file"):
        qvlearn.preprocess(images=[cut])


# -- writing: whole or nothing -----------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
def test_a_full_disk_leaves_no_file(tmp_path, monkeypatch, suffix):
    """A writer that dies half-way (ENOSPC after some bytes) leaves neither the file nor its temporary."""
    real_open = open

    class Full:
        def __init__(self, path, mode="r", *a, **k):
            self.handle = real_open(path, mode, *a, **k)

        def write(self, data):
            self.handle.write(bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *a, **k):
        return Full(path, mode, *a, **k) if "w" in mode else real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    monkeypatch.setattr("safetensors.numpy.save_file", failing_save_file)
    out = tmp_path / f"emb{suffix}"
    with pytest.raises(OutputError, match="No space left on device; nothing was written"):
        cli.save_output(out, np.ones((4, 8), np.float32), np.array([[1, 4, 4]]))
    assert list(tmp_path.iterdir()) == []


def test_npy_outputs_appear_together_or_not_at_all(tmp_path, monkeypatch):
    """``.npy`` writes NAME.npy and NAME.grid_thw.npy: a failure on the second leaves neither."""
    real_save = np.save
    calls = []

    def save(handle, value):
        calls.append(value.shape)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(handle, value)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(OutputError):
        cli.save_output(tmp_path / "e.npy", np.ones((4, 8), np.float32), np.array([[1, 4, 4]]))
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_a_real_full_disk(tmp_path, checkpoint, photo):
    """The same on a 64 KiB tmpfs, where one is allowed (root on Linux); skipped elsewhere."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = _run("encode", photo, "--model", checkpoint("tiny-qwen3-vl"), "--out", mount / "e.npz",
                    "--min-pixels", 1_000_000, "--max-pixels", 1_100_000, "--quiet")
        _clean(proc, message="No space left on device; nothing was written")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    out = tmp_path / "emb.npz"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(out) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        cli.save_output(tmp_path / "e.npz", np.ones((2, 2), np.float32), np.array([[1, 2, 2]]))
        qvlearn.save_random_checkpoint(tmp_path / "snap", "tiny-qwen2-vl")
    finally:
        os.umask(old)
    assert (tmp_path / "e.npz").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "snap" / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_a_checkpoint_write_that_fails_leaves_no_snapshot(tmp_path, monkeypatch):
    def failing(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.numpy.save_file", failing)
    with pytest.raises(OutputError):
        qvlearn.save_random_checkpoint(tmp_path / "snap", "tiny-qwen2-vl")
    assert not (tmp_path / "snap" / "config.json").exists()  # config.json comes last: no half snapshot
    assert _leftovers(tmp_path / "snap") == []


def test_tap_files_are_written_whole(tmp_path, monkeypatch):
    from qvlearn.tools.taps import save_taps

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("safetensors.numpy.save_file", failing)
    with pytest.raises(OutputError, match="Input/output error"):
        save_taps(tmp_path / "t.safetensors", {"embeddings": np.ones((2, 2), np.float32)}, source="test")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_cache_build_is_cleaned_up_by_the_next(tmp_path, monkeypatch):
    """``kill -9`` during the default model's generation leaves ``.<entry>.<random>.partial`` (seen by hand with the
    7B default); the next build, holding the lock, removes it."""
    monkeypatch.setenv("QVLEARN_CACHE", str(tmp_path))
    name = cache.entry_name("tiny-qwen2.5-vl")
    stale = tmp_path / f".{name}.k1ll3d{atomic.PARTIAL_SUFFIX}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    logs = []
    target = cache.default_model("tiny-qwen2.5-vl", log=logs.append)
    assert (target / "config.json").exists() and not stale.exists()
    assert "MB in bf16" in logs[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{name}.lock", name]
    qvlearn.load_encoder(target)


def test_an_unwritable_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("QVLEARN_CACHE", "/proc/qvlearn-cache")
    with pytest.raises(OutputError, match=r"cannot use the cache folder.*set \$QVLEARN_CACHE"):
        cache.default_model("tiny-qwen2-vl", log=lambda *a: None)


def test_a_cache_without_room_says_how_much_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("QVLEARN_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(OutputError, match=r"needs 1\.35 GB .* 1\.0 MB free"):
        cache.default_model("qwen2.5-vl-7b", log=lambda *a: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# -- the command line --------------------------------------------------------------------------------
def test_the_output_and_inputs_are_checked_before_the_model_is_made(tmp_path, photo):
    """With no --model and an empty cache, bad --out or a missing image fails at once: no 1.35 GB generation."""
    env = {"QVLEARN_CACHE": str(tmp_path / "cache")}
    for args, message in [
        ((photo, "--out", "/proc/e.npy"), "cannot create a file in /proc"),
        ((photo, "--out", tmp_path / "photo.png" / "e.npy"), "is not a directory"),
        ((tmp_path / "missing.jpg", "--out", tmp_path / "e.npy"), "image file not found"),
        ((tmp_path, "--out", tmp_path / "e.npy"), "is a directory, not an image file"),
    ]:
        start = time.perf_counter()
        _clean(_run("encode", *args, env=env), message=message)
        assert time.perf_counter() - start < 30
    assert not (tmp_path / "cache").exists()


def test_video_arguments_take_one_value_each(tmp_path, checkpoint, photo):
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        f.save(tmp_path / "frames" / f"{i}.png")
    model = checkpoint("tiny-qwen2.5-vl")
    proc = _run("encode", "--video", gif, photo, "--model", model, "--out", tmp_path / "a.npz", "--quiet")
    _clean(proc, code=0)
    assert load_npz(tmp_path / "a.npz")["grid_thw"].tolist() == [[1, 8, 10], [2, 4, 6]]  # the image, then the video
    proc = _run("encode", "--video", tmp_path / "frames", "--model", model, "--out", tmp_path / "b.npz", "--quiet")
    _clean(proc, code=0)
    assert load_npz(tmp_path / "b.npz")["grid_thw"].tolist() == [[2, 4, 6]]
    for args, message in [
        (("--video", tmp_path / "frames" / "0.png", tmp_path / "frames" / "1.png"), "is a still image (one frame)"),
        (("--video", str(tmp_path / "nothing" / "*.png")), "the pattern matches no file"),
        ((gif,), "has 3 frames (an animation): pass it as a video"),
    ]:
        proc = _run("encode", *args, "--model", model, "--out", tmp_path / "x.npz", "--quiet")
        _clean(proc, message=message)


def load_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".npy"])
def test_encode_writes_grid_and_deepstack_in_every_format(tmp_path, checkpoint, photo, suffix):
    model = checkpoint("tiny-qwen3-vl")
    out = tmp_path / f"e{suffix}"
    _clean(_run("encode", photo, "--model", model, "--out", out, "--quiet"), code=0)
    encoder = qvlearn.load_encoder(model)
    pv, grid = qvlearn.preprocess(images=[photo], family=encoder.family)
    embeddings, deepstack = encoder(pv, grid, deepstack=True)
    if suffix == ".npy":
        saved = {"embeddings": np.load(out), "grid_thw": np.load(tmp_path / "e.grid_thw.npy")}
        stacked = np.load(tmp_path / "e.deepstack.npy")
        saved.update({f"deepstack.{j}": f for j, f in enumerate(stacked)})
    else:
        saved = load_npz(out) if suffix == ".npz" else load_file(out)
    assert sorted(saved) == ["deepstack.0", "deepstack.1", "embeddings", "grid_thw"]
    np.testing.assert_array_equal(saved["grid_thw"], grid)
    np.testing.assert_allclose(saved["embeddings"], embeddings, rtol=1e-5, atol=1e-6)
    for j, feature in enumerate(deepstack):
        np.testing.assert_allclose(saved[f"deepstack.{j}"], feature, rtol=1e-5, atol=1e-6)


def test_version_help_and_program_name(tmp_path):
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"python -m qvlearn {qvlearn.__version__}"
    assert cli.program_name("/usr/local/bin/qvlearn") == "qvlearn"
    assert cli.program_name("/x/qvlearn/__main__.py") == "python -m qvlearn"
    for command in ("encode", "taps"):
        text = _run(command, "--help").stdout
        for family in ("Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL", "Qwen3.5"):
            assert family in " ".join(text.split()), (command, family)
        for option in ("--video", "--model", "--out", "--min-pixels", "--max-pixels", "--backend", "--threads",
                       "--quiet"):
            assert option in text
    parser = cli.build_parser()  # every option of every command has a help text
    for action in parser._subparsers._group_actions[0].choices.values():
        for option in action._actions:
            assert option.help, (action.prog, option.dest)


def test_threads_option(tmp_path, checkpoint, photo):
    model = checkpoint("tiny-qwen2.5-vl")
    _clean(_run("encode", photo, "--model", model, "--out", tmp_path / "one.npz", "--threads", 1, "--quiet"), code=0)
    _clean(_run("encode", photo, "--model", model, "--out", tmp_path / "all.npz", "--quiet"), code=0)
    one, every = load_npz(tmp_path / "one.npz")["embeddings"], load_npz(tmp_path / "all.npz")["embeddings"]
    assert np.max(np.abs(one - every)) / np.max(np.abs(every)) <= 1e-5  # the BLAS's summation order only
    _clean(_run("encode", photo, "--model", model, "--out", tmp_path / "x.npz", "--threads", 0),
           message="--threads: expected a number >= 1")


def test_taps_reference_without_torch_and_on_a_broken_checkpoint(tmp_path, checkpoint, photo):
    model = checkpoint("tiny-qwen2.5-vl")
    code = ("import sys; sys.modules['torch'] = None; from qvlearn.tools.cli import main; "
            f"sys.exit(main(['taps', {str(photo)!r}, '--model', {str(model)!r}, '--reference', '--out', "
            f"{str(tmp_path / 't.safetensors')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    _clean(proc, message="taps --reference and --floors run transformers' tower and need torch and transformers")
    broken = _copy_snapshot(model, tmp_path / "broken")
    tensors = load_file(broken / "model.safetensors")
    del tensors["visual.blocks.1.attn.proj.bias"]
    save_file(tensors, str(broken / "model.safetensors"))
    for reference in ((), ("--reference",)):
        proc = _run("taps", photo, "--model", broken, *reference, "--out", tmp_path / "t.safetensors")
        _clean(proc, message="missing (1): visual.blocks.1.attn.proj.bias")
    assert not (tmp_path / "t.safetensors").exists()


def test_compare_with_itself_and_into_a_closed_pipe(tmp_path, checkpoint, photo):
    model = checkpoint("tiny-qwen2.5-vl")
    taps = tmp_path / "t.safetensors"
    _clean(_run("taps", photo, "--model", model, "--out", taps, "--stages", "*", "--quiet"), code=0)
    _clean(_run("compare", taps, taps), message="the same file")
    shutil.copy(taps, tmp_path / "copy.safetensors")
    proc = _run("compare", tmp_path / "copy.safetensors", taps)
    assert proc.returncode == 0 and "hold identical tensors" in proc.stdout
    shell = f"{sys.executable} -m qvlearn compare {tmp_path / 'copy.safetensors'} {taps} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    _clean(_run("compare", taps, tmp_path / "copy.safetensors", "--stage", "embedings"),
           message="Did you mean 'embeddings'?")


def test_bench_without_torch_fails_instead_of_passing():
    code = "import sys; sys.modules['torch'] = None; from qvlearn.tools.bench import main; sys.exit(main(['--tiny']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    _clean(proc, message="needs torch and transformers")


def test_interrupting_encode_writes_nothing(tmp_path, checkpoint, photo, monkeypatch, capsys):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qvlearn.VisionEncoder, "__call__", interrupted)
    out = tmp_path / "e.npz"
    assert cli.main(["encode", str(photo), "--model", str(checkpoint("tiny-qwen2-vl")), "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err and list(tmp_path.iterdir()) == [photo]
