"""make conformance: the Qwen-VL vision towers of llama.cpp and mlx-vlm checked stage by stage against transformers,
mistral.rs's end to end, and timed.

    python tools/conformance/conformance.py                    # everything: fetch, build, run, write the report
    python tools/conformance/conformance.py --quick            # the tiny towers, every runtime, no timing, the
                                                               # llama.cpp patches all at once: checks its
                                                               # verdicts against the committed results
    python tools/conformance/conformance.py --runtime mlx-vlm  # one runtime (the others' results are kept)
    python tools/conformance/conformance.py --report-only      # docs/conformance.md from results.json

1. fetch: llama.cpp's source as the llama-cpp-python sdist carries it (pinned, checked by sha256), from the package
   index; no git.
2. build: the CPU targets it needs (ggml, llama, mtmd; cmake Release, shared) and tools/conformance/harness.cpp
   on the public mtmd API. Once as released, once more in a second tree where tools/conformance/patches/*.patch are
   applied one after the other (an incremental rebuild after each), so that each patch is judged alone.
3. snapshots: qvlearn's seeded towers (the tiny ones, and released widths cut in depth) as full VLM snapshots in
   float32 (``visual.*`` keys, a vision_config, a text_config, a preprocessor_config.json), converted by llama.cpp's
   own convert_hf_to_gguf.py --mmproj to f32 and f16 mmproj files. The text model is llama.cpp's vocab-only
   models/ggml-vocab-qwen2.gguf: mtmd needs a vocabulary to tokenise, the tower is what is checked.
4. run: the harness encodes each image (sizes that are and are not multiples of the patch factor, one at a rounding
   tie, a phone photo) with flash attention on and off; its tensors become tap files
   (qvlearn.tools.llamacpp.taps_from_llamacpp); transformers' and qvlearn's taps of the same image are the reference
   and the noise floor (compare --baseline). When the inputs differ, transformers is run again on llama.cpp's own
   pixel_values, so that the arithmetic is judged apart from the preprocessing.
5. mlx-vlm (tools/conformance/mlxvlm.py) and mistral.rs (tools/conformance/mistralrs_e2e.py): the pinned wheels in
   build/conformance/, each runtime in a process of its own; see those files.
6. report: docs/conformance.md and docs/conformance/results.json (the figures the report and notebook 15 read;
   every stage of every run stays in build/conformance/results-full.json); the tiny towers' tap files under
   docs/conformance/taps/ (what notebook 15 reads): llama.cpp's and mlx-vlm's, and transformers' with the noise
   floors in its metadata (qvlearn's own taps regenerate in seconds and are not committed).

Everything it builds and writes besides the report lives in build/conformance/ (ignored). Not part of make test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = ROOT / "build" / "conformance"
DOCS = ROOT / "docs"
TAPS_DIR = DOCS / "conformance" / "taps"

SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CMAKE_FLAGS = ["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_COMMON=OFF",
               "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_MTMD=ON", "-DLLAMA_OPENSSL=OFF",
               "-DLLAMA_SUBPROCESS=OFF", "-DMTMD_VIDEO=OFF"]
THREADS = 2
RTOL = 1e-5


class Failed(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, logfile: Path | None = None, cwd=None, env=None) -> str:
    """Run ``cmd``; its output goes to ``logfile`` (or is returned). A failure raises with the output's tail."""
    env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if logfile:
        with open(logfile, "a") as f:
            f.write(f"$ {' '.join(map(str, cmd))}\n{out}\n")
    if proc.returncode:
        raise Failed(f"{' '.join(map(str, cmd[:3]))} ... exited {proc.returncode}:\n{out[-3000:]}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# 1-2. fetch and build
# ---------------------------------------------------------------------------------------------------------------
def fetch() -> tuple[Path, str]:
    """The pinned llama.cpp source tree and its commit."""
    WORK.mkdir(parents=True, exist_ok=True)
    sdist = WORK / SDIST_FILE
    if not sdist.is_file():
        log(f"fetching {SDIST} (the sdist, 76 MB) from the package index")
        sh([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST,
            "-d", WORK])
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise Failed(f"{sdist} has sha256 {digest}, not the pinned {SDIST_SHA256}: delete it and run again")
    src = WORK / "src"
    commit_file = WORK / "commit.txt"
    if not (src / "CMakeLists.txt").is_file() or not commit_file.is_file():
        log("extracting vendor/llama.cpp")
        shutil.rmtree(src, ignore_errors=True)
        prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
        head = "llama_cpp_python-0.3.36/.git/modules/vendor/llama.cpp/HEAD"
        with tarfile.open(sdist) as tar:
            commit = tar.extractfile(head).read().decode().strip()
            members = []
            for m in tar.getmembers():
                if m.name.startswith(prefix) and not m.name.endswith("/.git"):
                    m.name = m.name[len(prefix):]
                    members.append(m)
            tar.extractall(src, members=members, filter="data")
        commit_file.write_text(commit + "\n")
    return src, commit_file.read_text().strip()


def build(src: Path, build_dir: Path, logfile: Path) -> float:
    """Configure (once) and build the mtmd library and the harness; seconds taken."""
    t0 = time.time()
    if not (build_dir / "build.ninja").is_file():
        sh(["cmake", "-S", src, "-B", build_dir, *CMAKE_FLAGS], logfile)
    sh(["cmake", "--build", build_dir, "--target", "mtmd", "-j", str(os.cpu_count() or 2)], logfile)
    lib = build_dir / "bin"
    sh(["g++", "-O2", "-std=c++17", HERE / "harness.cpp", f"-I{src}/include", f"-I{src}/ggml/include",
        f"-I{src}/tools/mtmd", f"-L{lib}", "-lmtmd", "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{lib}",
        "-o", build_dir / "harness"], logfile)
    return time.time() - t0


PATCHES = sorted((HERE / "patches").glob("*.patch"))


def repro(build_dir: Path, src: Path) -> dict:
    """tools/conformance/repro/ggml_f32_ops.c against this build: ggml alone, each op's max-relative error."""
    lib = build_dir / "bin"
    exe = build_dir / "ggml_f32_ops"
    sh(["gcc", "-O2", HERE / "repro" / "ggml_f32_ops.c", f"-I{src}/ggml/include", f"-L{lib}", "-lggml",
        "-lggml-base", "-lggml-cpu", "-lm", f"-Wl,-rpath,{lib}", "-o", exe])
    return {line.split()[1]: float(line.split()[3]) for line in sh([exe]).splitlines() if line.startswith("op ")}


def patch_lines(src: Path) -> dict:
    """{patch: [[file, line], ...]}: where each patch's first changed line is in the source as released (found by
    its text, so that the patches before it do not shift the line)."""
    out = {}
    for patch in PATCHES:
        spots, path, hunk = [], None, []
        for line in patch.read_text().splitlines() + ["@@"]:
            if line.startswith("+++ "):
                path = line[4:].split("\t")[0].removeprefix("b/")
            elif line.startswith("@@") or line.startswith("--- "):
                if path and hunk:
                    first = next((i for i, h in enumerate(hunk) if h[:1] in "-+"), 0)
                    context = [h[1:] for h in hunk[:first + 1] if h[:1] in " -"]
                    text = (src / path).read_text().splitlines()
                    for n in range(len(text) - len(context) + 1):
                        if text[n:n + len(context)] == context:
                            spots.append([path, n + len(context) if hunk[first][:1] == "-" else n + len(context) + 1])
                            break
                    else:  # the context holds an earlier patch's line: find the first removed line alone
                        removed = next((h[1:] for h in hunk if h[:1] == "-"), None)
                        if removed is not None and text.count(removed) == 1:
                            spots.append([path, text.index(removed) + 1])
                hunk = []
            elif path and line[:1] in " -+":
                hunk.append(line)
        out[patch.name] = spots
    return out


# ---------------------------------------------------------------------------------------------------------------
# 3. towers, snapshots, mmproj files
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tower:
    name: str                 # the report's name
    preset: str               # qvlearn's preset
    overrides: dict = field(default_factory=dict)
    tiny: bool = False        # committed tap files; run after every patch

    @property
    def label(self) -> str:
        cut = ", ".join(f"{k} {v}" for k, v in self.overrides.items())
        return f"{self.preset}" + (f" ({cut})" if cut else "")


TOWERS = (
    Tower("tiny-qwen2-vl", "tiny-qwen2-vl", tiny=True),
    Tower("tiny-qwen2.5-vl", "tiny-qwen2.5-vl", tiny=True),
    Tower("tiny-qwen3-vl", "tiny-qwen3-vl", tiny=True),
    Tower("tiny-qwen3.5", "tiny-qwen3.5", tiny=True),
    Tower("qwen2-vl-7b/4", "qwen2-vl-7b", {"depth": 4}),
    Tower("qwen2.5-vl-7b/4", "qwen2.5-vl-7b", {"depth": 4}),
    Tower("qwen3-vl-8b/4", "qwen3-vl-8b", {"depth": 4, "deepstack_visual_indexes": [1, 2, 3]}),
    Tower("qwen3.5-9b/4", "qwen3.5-9b", {"depth": 4}),
)
TIMING_TOWER = Tower("qwen2.5-vl-7b/8", "qwen2.5-vl-7b", {"depth": 8})  # one full-attention block, as llama.cpp
TIMING_IMAGE = (784, 588)  # 56 x 42 = 2352 patches
GELU_TIMING_TOWER = Tower("qwen3-vl-8b/8", "qwen3-vl-8b", {"depth": 8, "deepstack_visual_indexes": [2, 5, 7]})
GELU_TIMING_IMAGE = (896, 672)  # 16-px patches: 56 x 42 = 2352 patches again
"""The timed towers: Qwen2.5-VL's blocks are SwiGLU (no GELU); Qwen3-VL's blocks use the tanh GELU, whose float16
table patch 02 removes, so its cost shows in the second one."""


def vision_of(tower: Tower):
    from qvlearn.config import preset_config_dict, vision_config_from_dict

    return vision_config_from_dict(preset_config_dict(tower.preset, **tower.overrides))


def write_snapshot(tower: Tower) -> Path:
    """A full VLM snapshot of the tower in float32, as convert_hf_to_gguf.py wants it."""
    from qvlearn.weights import save_random_checkpoint

    out = WORK / "snapshots" / tower.name.replace("/", "-")
    if (out / "preprocessor_config.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    save_random_checkpoint(out, tower.preset, dtype="float32", prefix="visual.", **tower.overrides)
    vision = vision_of(tower)
    config = json.loads((out / "config.json").read_text())
    # the converter reads the text model's width (and, for Qwen2-VL, rms_norm_eps) from here; no text weights
    config["text_config"] = {"hidden_size": vision.out_hidden_size, "num_hidden_layers": 1, "rms_norm_eps": 1e-6,
                             "num_attention_heads": 1, "num_key_value_heads": 1, "vocab_size": 151936}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_preprocessor_config(out, vision)
    return out


def write_preprocessor_config(out: Path, vision) -> None:
    """The family's released preprocessing as a preprocessor_config.json (every runtime reads its pixel limits)."""
    pre = vision.kind.preprocessing
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "patch_size": pre["patch_size"], "merge_size": 2,
        "temporal_patch_size": 2, "min_pixels": pre["min_pixels"], "max_pixels": pre["max_pixels"],
        "image_mean": list(pre["mean"]), "image_std": list(pre["std"])}, indent=2) + "\n")


def convert(snapshot: Path, src: Path, outtype: str, logfile: Path) -> Path:
    out = snapshot / f"mmproj-{outtype}.gguf"
    if not out.is_file():
        sh([sys.executable, src / "convert_hf_to_gguf.py", snapshot, "--mmproj", "--outtype", outtype, "--outfile",
            out], logfile, cwd=src, env={"PYTHONPATH": str(src / "gguf-py")})
        from gguf import GGUFReader  # noqa: PLC0415 (gguf-py from the source tree)

        n = len(GGUFReader(str(out)).tensors)
        if n == 0:  # the converter exits 0 on a snapshot whose vision keys it does not know
            raise Failed(f"{out} holds no tensors: the snapshot's keys are not visual.*")
    return out


# ---------------------------------------------------------------------------------------------------------------
# 4. images and runs
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Picture:
    name: str
    size: tuple | None        # (width, height) resized from images/sample.jpg; None: the file as it is
    what: str
    file: str = "images/sample.jpg"
    realistic: bool = False   # on the released widths only


def pictures(patch: int) -> list[Picture]:
    """The images of each family's runs; ``f``, the resize factor, is 28 (Qwen2/2.5) or 32 (Qwen3-VL, Qwen3.5)."""
    f = 2 * patch
    q3 = patch == 16  # Qwen3's 65536-pixel minimum: no image below 256 x 256 reaches its tower unresized
    multiple = (8 * f, 8 * f) if q3 else (4 * f, 3 * f)
    return [Picture("multiple", multiple, f"{multiple[0]}x{multiple[1]}: multiples of {f}, no resize"),
            Picture("not-multiple", (multiple[0] + 10, multiple[1] - 7),
                    f"{multiple[0] + 10}x{multiple[1] - 7}: resized to {multiple[0]}x{multiple[1]}, which changes the "
                    "aspect ratio"),
            Picture("tie", (8 * f, int(8.5 * f)) if q3 else (4 * f, int(2.5 * f)),
                    f"height {int(8.5 * f) if q3 else int(2.5 * f)} = {8.5 if q3 else 2.5} x {f}: smart_resize "
                    "rounds a tie"),
            Picture("small", (4 * f, 4 * f) if q3 else (2 * f, 2 * f),
                    f"{4 * f if q3 else 2 * f} px square: {16 if q3 else 4} merged tokens, at the released minimum of "
                    f"{64 if q3 else 4}" + (" (so resized up)" if q3 else "")),
            Picture("phone", None, "images/sample_phone.jpg as PNG: stored 600x512 with EXIF orientation 6, shown "
                                   "512x600", file="images/sample_phone.jpg"),
            Picture("vga", (640, 480), "640x480", realistic=True)]


def image_file(pic: Picture) -> Path:
    """The picture as a PNG (decoded exactly by any decoder, so that decoding is not what is compared)."""
    from PIL import Image

    out = WORK / "images" / (f"{pic.name}.png" if pic.size is None else f"{pic.name}-{pic.size[0]}x{pic.size[1]}.png")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(ROOT / pic.file)
        if pic.size is None:  # the stored pixels and the EXIF block that says how to show them
            image.convert("RGB").save(out, exif=image.getexif())
        else:
            image.convert("RGB").resize(pic.size, Image.Resampling.LANCZOS).save(out)
    return out


def run_harness(build_dir: Path, src: Path, mmproj: Path, image: Path, flash: bool, out_width: int,
                dump: Path | None = None, repeat: int = 0) -> tuple[np.ndarray | None, str]:
    """llama.cpp's output embeddings for ``image`` (decoded by mtmd's own loader), and the harness's stdout."""
    cmd = [build_dir / "harness", "--text", src / "models" / "ggml-vocab-qwen2.gguf", "--mmproj", mmproj,
           "--image", image, "--flash", "on" if flash else "off", "--threads", str(THREADS)]
    out = WORK / "last-embd.npy"
    if dump is not None:
        shutil.rmtree(dump, ignore_errors=True)
        dump.mkdir(parents=True)
        cmd += ["--dump", dump]
    if repeat:
        cmd += ["--repeat", str(repeat)]
    else:
        cmd += ["--out", out, "--n-embd", str(out_width)]
    stdout = sh(cmd)
    return (None if repeat else np.load(out)), stdout


_REF_CACHE: dict = {}


def reference_taps(snapshot: Path, family: str, pixel_values, grid_thw) -> tuple[dict, dict]:
    """transformers' taps (the reference) and qvlearn's (the noise floor) on the same inputs."""
    import qvlearn
    from qvlearn.tools.reference import reference_tower, reference_trace
    from qvlearn.tools.taps import add_natural_order

    key = (str(snapshot), hashlib.sha1(np.ascontiguousarray(pixel_values).tobytes()).hexdigest(),
           tuple(np.asarray(grid_thw).ravel()))
    if key not in _REF_CACHE:
        if ("tower", snapshot) not in _REF_CACHE:
            _REF_CACHE.clear()
            _REF_CACHE[("tower", snapshot)] = (reference_tower(snapshot), qvlearn.load_encoder(snapshot))
        tower, encoder = _REF_CACHE[("tower", snapshot)]
        for old in [k for k in _REF_CACHE if k[0] != "tower"][:-1]:  # keep one input's traces (GBs at 1024x768)
            del _REF_CACHE[old]
        ref = add_natural_order(reference_trace(tower, pixel_values, grid_thw, stages=["*"]))
        ours = encoder.trace(pixel_values, grid_thw, to_numpy=True, stages=["*"])
        _REF_CACHE[key] = (ref, ours)
    return _REF_CACHE[key]


def transformers_inputs(image: Path, family: str):
    from qvlearn.families import family as family_entry
    from qvlearn.preprocessing import load_image
    from qvlearn.tools.reference import reference_preprocess

    pre = family_entry(family).preprocessing
    return reference_preprocess([load_image(image)], pre["min_pixels"], pre["max_pixels"],
                                patch_size=pre["patch_size"], image_mean=list(pre["mean"]),
                                image_std=list(pre["std"]))


def token_cosines(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.min(num / np.maximum(den, 1e-30)))


EDGE = (1 / 3, 3.0)
"""A verdict is at the noise edge when a stage up to its first failure sits within a factor of 3 of the limit that
decides it (margin 1 = at the limit): float32 noise on another machine (its BLAS, its CPU, its threads) can move such
a stage across. The verdict check of --quick compares only verdicts off the edge."""


def margin(row) -> float:
    """How far a stage is from failing: its rel and scale error over the limits compare applies (> 1 fails)."""
    from qvlearn.tools.taps import BASELINE_FACTOR, BASELINE_MIN_REL, DEFAULT_SCALE_TOL, SCALE_NOISE

    if row.rel != row.rel or row.name in ("pixel_values", "grid_thw", "window_index", "position_ids"):
        return 0.0 if row.ok else float("inf")
    parts = [row.rel / RTOL]
    if row.scale == row.scale:
        parts.append(row.scale / DEFAULT_SCALE_TOL)
    if row.floor == row.floor:
        parts.append(row.rel / max(BASELINE_FACTOR * row.floor, BASELINE_MIN_REL))
    if row.scale == row.scale and row.scale_floor == row.scale_floor:
        parts.append(row.scale / max(BASELINE_FACTOR * row.scale_floor, SCALE_NOISE))
    return max(parts)


KEY_STAGES = ("patch_embeds", "pos_embeds", "blocks.0.norm1", "blocks.0.attn", "blocks.0.mlp.act", "embeddings")
"""The stages whose max-relative error every case keeps in results.json (where each arithmetic departure first
shows), so that the report can size each departure per family."""


def judge(llama: dict, ref: dict, ours: dict) -> dict:
    """compare --baseline's verdict as data; ``rows`` (every stage) goes to build/conformance only."""
    from qvlearn.tools.taps import compare_taps, exit_code

    rows = compare_taps(llama, ref, rtol=RTOL, baseline=ours)
    bad = [r for r in rows if not r.ok]
    result = {"exit": exit_code(rows), "stages": len(rows), "first": bad[0].name if bad else None,
              "first_rel": float(bad[0].rel) if bad else None, "first_floor": float(bad[0].floor) if bad else None,
              "first_note": bad[0].note if bad else ""}
    upto = rows[:rows.index(bad[0]) + 1] if bad else rows
    margins = [(margin(r), r.name) for r in upto]
    near = [(m, n) for m, n in margins if EDGE[0] <= m <= EDGE[1]]
    result["edge"] = f"{near[0][1]} at {near[0][0]:.2f} of its limit" if near else None
    result["at"] = {r.name: float(r.rel) for r in rows if r.name in KEY_STAGES and r.rel == r.rel}
    emb = next(r for r in rows if r.name == "embeddings")
    result["embeddings_rel"] = float(emb.rel)
    same_shape = np.shape(llama["embeddings"]) == np.shape(ref["embeddings"])
    result["embeddings_min_cos"] = token_cosines(llama["embeddings"], ref["embeddings"]) if same_shape else None
    result["rows"] = [[r.name, float(r.rel), float(r.floor), float(r.cosine), r.ok, margin(r)] for r in rows]
    return result


def lean(results: dict) -> dict:
    """results without the per-stage rows (kept in build/conformance/results-full.json): what the report and
    notebook 15 read."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "rows" or not isinstance(v, list) or not v
                    or not isinstance(v[0], list)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(results)


def verdict_key(case: dict) -> tuple:
    """What identifies a run in results.json: runtime, tower, image and settings."""
    return (case.get("runtime", "llama.cpp"), case["tower"], case["image"], case.get("variant"), case.get("mmproj"),
            case.get("flash"))


def verdicts(case: dict):
    """A run's verdicts (each judged part: exit and first stage), None for one at the noise edge."""
    parts = {k: v for k, v in case.items() if isinstance(v, dict) and "exit" in v}
    return {k: (None if v.get("edge") else (v["exit"], v["first"])) for k, v in parts.items()}


def check_verdicts(fresh: dict, committed: dict) -> tuple[int, int, list[str]]:
    """Compare the verdicts of a fresh (quick) run with the committed ones: (agreeing, at the edge, departures)."""
    old = {verdict_key(c): c for c in all_cases(committed)}
    agree, edge, differ = 0, 0, []
    for case in all_cases(fresh):
        prev = old.get(verdict_key(case))
        if prev is None:
            differ.append(f"{verdict_key(case)}: not in the committed results")
            continue
        new_v, old_v = verdicts(case), verdicts(prev)
        for part in new_v:
            if new_v[part] is None or old_v.get(part) is None:
                edge += 1
            elif new_v[part] == old_v.get(part):
                agree += 1
            else:
                differ.append(f"{verdict_key(case)} {part}: {new_v[part]} here, {old_v.get(part)} committed")
    return agree, edge, differ


def all_cases(results: dict) -> list[dict]:
    """Every judged run of every runtime."""
    mistral = [c for t in results.get("mistral_rs", {}).get("towers", []) for c in t.get("cases", [])]
    return list(results.get("cases", [])) + list(results.get("mlx_vlm", {}).get("cases", [])) + mistral


COMMIT_STAGES = ("pixel_values", "grid_thw", "position_ids", "window_index", "patch_embeds", "pos_embeds",
                 "blocks.0.norm1", "blocks.0.attn", "blocks.0.mlp.act", "blocks.[0-9]", "merger.ln_q", "merger.norm",
                 "embeddings", "deepstack.*")
COMMIT_LIMIT = 256 * 1024
"""The committed tap files keep these stages (block 0's insides, where each arithmetic departure first shows, and
every block's output); a stage above COMMIT_LIMIT bytes (the Qwen3 towers' pixel_values:
256 patches x 1536 values, for their 65536-pixel minimum) is left out, and grid_thw still says the inputs agree."""


def save_committed(path: Path, stages: dict, source: str, config: dict, floor_of: dict | None = None) -> None:
    """Write the COMMIT_STAGES of ``stages``; with ``floor_of`` (qvlearn's taps of the same input), each stage's
    float32 noise floor goes into the file's metadata (``taps --floors``), so that qvlearn's own taps, which
    regenerate in seconds, need not be committed and the verdicts read from the files stay the committed ones."""
    import fnmatch

    from qvlearn.tools.taps import noise_floors, save_taps

    keep = {k: v for k, v in stages.items() if any(fnmatch.fnmatchcase(k, p) for p in COMMIT_STAGES)
            and np.asarray(v).nbytes <= COMMIT_LIMIT}
    path.parent.mkdir(parents=True, exist_ok=True)
    floors = noise_floors(keep, floor_of) if floor_of is not None else None
    save_taps(path, keep, source=source, config=config, floors=floors)


def run_case(variant: str, build_dir: Path, src: Path, tower: Tower, snapshot: Path, pic: Picture, outtype: str,
             flash: bool, save_as: str | None = None) -> dict:
    from qvlearn.tools.llamacpp import read_dump, taps_from_llamacpp

    vision = vision_of(tower)
    family = vision.family
    nds = len(vision.deepstack_visual_indexes)
    image = image_file(pic)
    dump = WORK / "dump"
    embd, _ = run_harness(build_dir, src, WORK / "snapshots" / snapshot.name / f"mmproj-{outtype}.gguf", image,
                          flash, vision.out_hidden_size * (1 + nds), dump=dump)
    llama = taps_from_llamacpp(read_dump(dump), family, embeddings=embd, out_width=vision.out_hidden_size,
                               n_deepstack=nds)
    pv, grid = transformers_inputs(image, family)
    ref, ours = reference_taps(snapshot, family, pv, grid)
    case = {"variant": variant, "tower": tower.name, "family": family, "image": pic.name, "mmproj": outtype,
            "flash": flash, "grid_llama": llama["grid_thw"].ravel().tolist(), "grid_ref": np.asarray(grid).ravel()
            .tolist(), "end_to_end": judge(llama, ref, ours)}
    if case["end_to_end"]["exit"] == 3:  # the inputs differ: judge the arithmetic on llama.cpp's own inputs
        ref2, ours2 = reference_taps(snapshot, family, llama["pixel_values"], llama["grid_thw"])
        case["same_inputs"] = judge(llama, ref2, ours2)
    if save_as:
        config = json.loads((snapshot / "config.json").read_text())
        save_committed(TAPS_DIR / f"{save_as}-llamacpp.safetensors", llama, f"llama.cpp {variant}", config)
        ref_name = TAPS_DIR / f"{tower.name}-{pic.name}-transformers.safetensors"
        if not ref_name.is_file() or variant == "upstream":
            save_committed(ref_name, ref, "transformers", config, floor_of=ours)
    return case


REALISTIC = ((640, 480), (1024, 768), (1920, 1080), (4032, 3024))


def grid_case(build_dir: Path, src: Path, tower: Tower, snapshot: Path, size: tuple) -> dict:
    """The grids a realistic image size gets (preprocessing only, no encode): llama.cpp's and transformers'."""
    import importlib

    from PIL import Image

    vision = vision_of(tower)
    pre = vision.kind.preprocessing
    image = WORK / "images" / f"flat-{size[0]}x{size[1]}.png"
    if not image.is_file():
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (128, 128, 128)).save(image)
    stdout = sh([build_dir / "harness", "--text", src / "models" / "ggml-vocab-qwen2.gguf", "--mmproj",
                 snapshot / "mmproj-f32.gguf", "--image", image, "--tokens-only"])
    tokens = int(stdout.split("tokens ")[1].split()[0])
    # the Pil processor's module: the other one imports torchvision, whose wheels here fail next to the CPU torch
    module = importlib.import_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    f = 2 * pre["patch_size"]
    h, w = module.smart_resize(size[1], size[0], factor=f, min_pixels=pre["min_pixels"],
                               max_pixels=pre["max_pixels"])
    return {"tower": tower.name, "size": list(size), "tokens_llama": tokens, "tokens_ref": h * w // f ** 2,
            "grid_ref": [1, h // pre["patch_size"], w // pre["patch_size"]]}


# ---------------------------------------------------------------------------------------------------------------
# timing: llama.cpp, qvlearn and transformers on the same tower, image and threads
# ---------------------------------------------------------------------------------------------------------------
def time_reference(snapshot: Path, image: Path, repeat: int) -> dict:
    """Run in a subprocess with the thread variables set: qvlearn's and transformers' forward times (s)."""
    import torch

    import qvlearn
    from qvlearn.tools.reference import reference_tower

    torch.set_num_threads(THREADS)
    encoder = qvlearn.load_encoder(snapshot)
    pv, grid = transformers_inputs(image, encoder.config.family)
    tower = reference_tower(snapshot, attn_implementation="sdpa")
    out = {"patches": int(np.prod(grid))}
    for name, fn in (("qvlearn", lambda: encoder(pv, grid)),
                     ("transformers", lambda: tower(torch.as_tensor(pv), grid_thw=torch.as_tensor(grid)))):
        with torch.inference_mode():
            fn()  # warm
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "min_s": min(times)}
    return out


def timing(builds: dict, src: Path, tower: Tower = TIMING_TOWER, size: tuple = TIMING_IMAGE, repeat: int = 3) -> dict:
    snapshot = write_snapshot(tower)
    for outtype in ("f32", "f16"):
        convert(snapshot, src, outtype, WORK / "logs" / "convert.log")
    image = image_file(Picture("timing", size, "timing"))
    rows = []
    for variant, build_dir in builds.items():
        for outtype in ("f32", "f16"):
            for flash in (True, False):
                _, stdout = run_harness(build_dir, src, snapshot / f"mmproj-{outtype}.gguf", image, flash, 0,
                                        repeat=repeat)
                median_ms, min_ms = (float(v) for v in stdout.split("encode_ms ")[1].split()[:2])
                rows.append({"runtime": f"llama.cpp {variant}", "mmproj": outtype, "flash": flash,
                             "median_s": median_ms / 1e3, "min_s": min_ms / 1e3})
                log(f"  {tower.name} llama.cpp {variant} {outtype} flash {'on' if flash else 'off'}: "
                    f"{median_ms / 1e3:.2f} s")
    env = {v: str(THREADS) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    ref = json.loads(sh([sys.executable, __file__, "--time-reference", snapshot, image, str(repeat)], env=env)
                     .strip().splitlines()[-1])
    for name in ("qvlearn", "transformers"):
        rows.append({"runtime": name, "mmproj": "float32 weights", "flash": None, **ref[name]})
        log(f"  {tower.name} {name}: {ref[name]['median_s']:.2f} s")
    return {"tower": tower.label, "name": tower.name, "image": list(size), "patches": ref["patches"],
            "threads": THREADS, "repeat": repeat, "rows": rows}


def f16_split(build_dir: Path, src: Path, towers) -> list[dict]:
    """For the f16 mmproj: how much of its departure is the rounding of the weights, and how much ggml's rounding of
    the activations. qvlearn runs in float32 on the weights rounded as the converter rounds them (every tensor of
    two or more dimensions but Qwen3's position table), and llama.cpp with every patch runs the f16 mmproj."""
    from safetensors.numpy import load_file, save_file

    import qvlearn

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    rows = []
    for tower in towers:
        snapshot = write_snapshot(tower)
        vision = vision_of(tower)
        pic = next(p for p in pictures(vision.kind.preprocessing["patch_size"]) if p.name == "multiple")
        image = image_file(pic)
        embd, _ = run_harness(build_dir, src, snapshot / "mmproj-f16.gguf", image, False,
                              vision.out_hidden_size * (1 + len(vision.deepstack_visual_indexes)))
        pv, grid = transformers_inputs(image, vision.family)
        ref, _ = reference_taps(snapshot, vision.family, pv, grid)
        rounded = WORK / "f16-weights" / snapshot.name
        rounded.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "preprocessor_config.json"):
            shutil.copy(snapshot / f, rounded / f)
        weights = load_file(snapshot / "model.safetensors")
        n = 0
        for k, v in weights.items():
            if v.ndim >= 2 and not k.endswith("pos_embed.weight"):
                weights[k] = v.astype(np.float16).astype(np.float32)
                n += v.size
        from gguf import GGUFReader  # noqa: PLC0415 (gguf-py from the source tree)

        # the converter splits some tensors (q/k/v, the Conv3d's two frames): count values, not tensors
        n_f16 = sum(int(t.n_elements) for t in GGUFReader(str(snapshot / "mmproj-f16.gguf")).tensors
                    if t.tensor_type.name == "F16")
        if n != n_f16:
            raise Failed(f"{tower.name}: {n} values rounded, but the f16 mmproj holds {n_f16} in f16")
        save_file(weights, str(rounded / "model.safetensors"), metadata={"format": "pt"})
        ours = qvlearn.load_encoder(rounded)(pv, grid)
        width = vision.out_hidden_size
        rows.append({"tower": tower.name, "weights": rel(ours, ref["embeddings"]),
                     "activations": rel(embd[:, :width], ours), "total": rel(embd[:, :width], ref["embeddings"])})
        log(f"  f16 {tower.name}: weights {rows[-1]['weights']:.1e}, activations {rows[-1]['activations']:.1e}, "
            f"total {rows[-1]['total']:.1e}")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------------------------
COMMITTED = {("multiple", "upstream", False), ("multiple", "upstream", True), ("multiple", "patched", False),
             ("not-multiple", "upstream", False), ("not-multiple", "patched", False)}
"""(picture, variant, flash) of the tiny towers' committed tap files (f32 mmproj); not-multiple for Qwen2.5-VL only."""


def run_matrix(variant: str, build_dir: Path, src: Path, towers, outtypes, save: bool) -> list[dict]:
    cases = []
    for tower in towers:
        snapshot = write_snapshot(tower)
        patch = vision_of(tower).kind.preprocessing["patch_size"]
        for pic in pictures(patch):
            if pic.realistic and tower.tiny:
                continue
            for outtype in outtypes if not pic.realistic else ("f32",):  # the big images: f32 only
                for flash in (False, True):
                    save_as = None
                    if (save and tower.tiny and outtype == "f32" and (pic.name, variant, flash) in COMMITTED
                            and (pic.name == "multiple" or tower.name == "tiny-qwen2.5-vl")):
                        save_as = f"{tower.name}-{pic.name}-{variant}-{'fa' if flash else 'nofa'}"
                    case = run_case(variant, build_dir, src, tower, snapshot, pic, outtype, flash, save_as)
                    cases.append(case)
                    e2e = case["end_to_end"]
                    log(f"  {variant:12s} {tower.name:16s} {pic.name:12s} {outtype} fa={int(flash)}: "
                        f"first {e2e['first']} (rel {e2e['first_rel'] or 0:.1e}); "
                        f"embeddings {e2e['embeddings_rel']:.1e}")
    return cases


RESULTS = DOCS / "conformance" / "results.json"
RUNTIMES = ("llama.cpp", "mlx-vlm", "mistral.rs")


def run_llamacpp(args, results: dict, towers, checkpoint) -> None:
    src, commit = fetch()
    sys.path.insert(0, str(src / "gguf-py"))
    log(f"llama.cpp {commit[:9]}: building the CPU targets (mtmd, llama, ggml) and the harness")
    build_s = build(src, WORK / "llama-build", WORK / "logs" / "build-upstream.log")
    log(f"  built in {build_s:.0f} s")
    for tower in towers:
        snapshot = write_snapshot(tower)
        for outtype in ("f32", "f16"):
            convert(snapshot, src, outtype, WORK / "logs" / "convert.log")
    if TAPS_DIR.is_dir() and not args.quick:
        for old in TAPS_DIR.glob("*.safetensors"):
            if args.runtime == "all" or old.name.endswith("-llamacpp.safetensors"):
                old.unlink()
    results.update({"llama_cpp": {"sdist": SDIST, "sha256": SDIST_SHA256, "commit": commit}, "build_s": build_s,
                    "cases": [], "steps": []})
    log("llama.cpp as released")
    results["cases"] += run_matrix("upstream", WORK / "llama-build", src, towers, ("f32", "f16"), not args.quick)
    checkpoint("upstream")
    steps_src, steps_build = WORK / "src-steps", WORK / "llama-build-steps"
    shutil.rmtree(steps_src, ignore_errors=True)
    shutil.copytree(src, steps_src, symlinks=True)
    for k, patch in enumerate(PATCHES, 1):
        sh(["patch", "-p1", "--quiet", "-i", patch], WORK / "logs" / "patch.log", cwd=steps_src)
        last = k == len(PATCHES)
        if args.quick and not last:  # --quick: every patch at once, one rebuild, one run (as released / patched)
            continue
        seconds = build(steps_src, steps_build, WORK / "logs" / "build-steps.log")
        variant = "patched" if last else f"+{patch.stem[:2]}"
        log(f"with patches 01..{patch.stem[:2]} ({patch.name}; rebuilt in {seconds:.0f} s)")
        step_towers = towers if last else [t for t in towers if t.tiny]
        cases = run_matrix(variant, steps_build, steps_src, step_towers, ("f32", "f16") if last else ("f32",),
                           last and not args.quick)
        results["steps"].append({"patch": patch.name, "rebuild_s": seconds, "variant": variant})
        results["cases"] += cases
        checkpoint(variant)
    results["grids"] = [{**grid_case(build_dir, s, tower, write_snapshot(tower), size), "variant": variant}
                        for variant, build_dir, s in (("upstream", WORK / "llama-build", src),
                                                      ("patched", steps_build, steps_src))
                        for tower in towers if not tower.tiny for size in REALISTIC]
    checkpoint("grids")
    results["llama_cpp"]["patch_lines"] = patch_lines(src)
    results["llama_cpp"]["repro"] = {"upstream": repro(WORK / "llama-build", src),
                                     "patched": repro(steps_build, steps_src)}
    log(f"  ggml alone: {results['llama_cpp']['repro']}")
    if not args.quick:
        log("f16 mmproj: the weights' rounding and the activations'")
        results["f16_split"] = f16_split(steps_build, steps_src, [t for t in towers if not t.tiny])
        checkpoint("f16")
        log("timing")
        builds = {"upstream": WORK / "llama-build", "patched": steps_build}
        results["timings"] = [timing(builds, src), timing(builds, src, GELU_TIMING_TOWER, GELU_TIMING_IMAGE)]
        results.pop("timing", None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny towers only, no timing, llama.cpp's patches "
                        "applied all at once: checks its verdicts against the committed results (exit 1 on a "
                        "disagreement) and writes no report")
    parser.add_argument("--runtime", choices=("all", *RUNTIMES), default="all",
                        help="run one runtime; the other's committed results are kept (default: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite docs/conformance.md from the committed results.json, running nothing")
    parser.add_argument("--time-reference", nargs=3, metavar=("SNAPSHOT", "IMAGE", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_reference:
        snapshot, image, repeat = args.time_reference
        print(json.dumps(time_reference(Path(snapshot), Path(image), int(repeat))))
        return 0
    from report import write_report  # noqa: PLC0415 (tools/conformance/report.py)

    if args.report_only:
        write_report(json.loads(RESULTS.read_text()), DOCS / "conformance.md")
        log(f"wrote {DOCS / 'conformance.md'}")
        return 0
    t_start = time.time()
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    committed = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    runtimes = RUNTIMES if args.runtime == "all" else (args.runtime,)
    results = {} if args.quick else dict(committed)
    results.update({"threads": THREADS, "rtol": RTOL, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "date": time.strftime("%Y-%m-%d")})
    partial = WORK / "results-partial.json"

    def checkpoint(phase: str) -> None:  # a failure later keeps what was measured (and says where it stopped)
        partial.write_text(json.dumps({**results, "phase": phase}, indent=1) + "\n")

    towers = [t for t in TOWERS if t.tiny or not args.quick]
    if "llama.cpp" in runtimes:
        run_llamacpp(args, results, towers, checkpoint)
    if "mlx-vlm" in runtimes:
        import mlxvlm  # noqa: PLC0415 (tools/conformance/mlxvlm.py)

        t0 = time.time()
        results["mlx_vlm"] = mlxvlm.run(args.quick)
        results["mlx_vlm"]["duration_s"] = time.time() - t0
        checkpoint("mlx-vlm")
    if "mistral.rs" in runtimes:
        import mistralrs_e2e  # noqa: PLC0415 (tools/conformance/mistralrs_e2e.py)

        t0 = time.time()
        results["mistral_rs"] = mistralrs_e2e.run(args.quick)
        results["mistral_rs"]["duration_s"] = time.time() - t0
        checkpoint("mistral.rs")
    if args.runtime == "all" or args.quick:
        results["total_s"] = time.time() - t_start
        results["whole_run"] = {"runtimes": list(runtimes), "minutes": results["total_s"] / 60}
    full = WORK / ("results-quick.json" if args.quick else "results-full.json")
    full.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {full} (every stage of every run)")
    if args.quick:
        if not committed:
            raise Failed(f"{RESULTS} is missing: nothing to check the quick run's verdicts against")
        agree, edge, differ = check_verdicts(results, committed)
        log(f"verdicts: {agree} agree with the committed results, {edge} at the noise edge (not compared), "
            f"{len(differ)} disagree")
        for line in differ:
            log(f"  disagrees: {line}")
        log(f"quick run: {results['total_s'] / 60:.1f} min")
        return 1 if differ else 0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(lean(results), indent=1) + "\n")
    log(f"wrote {RESULTS}")
    write_report(lean(results), DOCS / "conformance.md")
    log(f"wrote {DOCS / 'conformance.md'} in {(time.time() - t_start) / 60:.0f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as exc:
        print(f"make conformance: {exc}", file=sys.stderr)
        sys.exit(1)
