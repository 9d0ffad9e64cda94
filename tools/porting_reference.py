"""Write docs/porting.md, the porter's reference page, from qvlearn's own code (and docs/taps.md's tap table).

    python tools/porting_reference.py            rewrite docs/porting.md and docs/taps.md's tap table
    python tools/porting_reference.py --check    exit 1 if either differs from what the code says

The tables (presets with defaults applied, class defaults, weights) are generated from qvlearn.config and
qvlearn.weights, so the page cannot drift from the engine; tests/test_docs.py runs --check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qvlearn import PRESETS, preset_config  # noqa: E402
from qvlearn.config import ALIASES, HF_VISION_DEFAULTS, PRESET_NOTES  # noqa: E402
from qvlearn.families import FAMILIES  # noqa: E402
from qvlearn.families import model_types as all_model_types  # noqa: E402
from qvlearn.preprocessing import MAX_ASPECT_RATIO, MAX_PIXELS, MIN_PIXELS, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402
from qvlearn.tools.bugs import BRIDGE_BUGS, BUGS  # noqa: E402
from qvlearn.tools.taps import EXIT_BEYOND, EXIT_INPUTS, TAP_TABLE  # noqa: E402
from qvlearn.weights import PREFIXES, checkpoint_prefix, expected_shapes, weight_role  # noqa: E402

TARGET = ROOT / "docs" / "porting.md"
TAPS_PAGE = ROOT / "docs" / "taps.md"
TAP_MARKERS = ("<!-- tap-table -->", "<!-- /tap-table -->")


def tap_table() -> str:
    lines = ["| name | shape | dtype | families | what it holds |", "|---|---|---|---|---|"]
    for name, shape, dtype, families, what in TAP_TABLE:
        lines.append(f"| `{name}` | `{shape}` | {dtype} | {families} | {what} |")
    return "\n".join(lines)


def families_table() -> str:
    lines = ["| family | model types | keys | norm, MLP | q, k, v | merger names | windows | positions | DeepStack "
             "| LLM positions |", "|" + "---|" * 10]
    for f in FAMILIES.values():
        lines.append(f"| {f.title} (`{f.name}`) | {', '.join(f'`{t}`' for t in f.model_types)} | `{f.weight_prefix}*`"
                     f"{' (`' + f.container + '.vision_config`)' if f.container else ''} | {f.norm}, {f.mlp} | "
                     f"{'fused `qkv`' if f.qkv_names == ('qkv',) else ', '.join(f'`{n}`' for n in f.qkv_names)} | "
                     f"{', '.join(f'`{n}`' for n in f.merger_names)} | {'yes' if f.windows else '-'} | "
                     f"{'learned table' if f.position_table else '-'} | "
                     f"{'`' + f.deepstack_name + '.{j}`' if f.deepstack else '-'} | `{f.rope_index}` |")
    return "\n".join(lines)


def with_tap_table(text: str) -> str:
    start, end = text.index(TAP_MARKERS[0]) + len(TAP_MARKERS[0]), text.index(TAP_MARKERS[1])
    return text[:start] + "\n" + tap_table() + "\n" + text[end:]


def presets_table() -> str:
    lines = ["| preset | family | patch | depth | width | heads x head_dim | MLP | act | out | windows (merged) "
             "| full blocks | positions | DeepStack | tokens/s | rope theta | eps |", "|" + "---|" * 16]
    for name in PRESETS:
        c = preset_config(name)
        windows = f"{c.window_merged}x{c.window_merged} ({c.window_size} px)" if c.uses_windows else "none"
        full = ", ".join(map(str, c.fullatt_block_indexes)) if c.uses_windows else "all"
        side = c.position_grid_side
        positions = f"{side}x{side} learned" if side else "-"
        deepstack = ", ".join(map(str, c.deepstack_visual_indexes)) or "-"
        lines.append(f"| `{name}` | {c.family} | {c.patch_size} | {c.depth} | {c.width} | {c.num_heads} x {c.head_dim} "
                     f"| {c.mlp_width} | {c.hidden_act} | {c.out_hidden_size} | {windows} | {full} | {positions} | "
                     f"{deepstack} | {c.tokens_per_second if c.uses_windows else '-'} | {c.rope_theta:g} | {c.eps:g} |")
    lines += ["", "Where the third-generation values come from:", ""]
    lines += [f"* `{name}`: {note}" for name, note in PRESET_NOTES.items()]
    return "\n".join(lines)


def defaults_table() -> str:
    lines = ["| family | class defaults (transformers 5.23, identical in 4.x) |", "|---|---|"]
    for family, values in HF_VISION_DEFAULTS.items():
        lines.append(f"| {family} | " + ", ".join(f"`{k}={v}`" for k, v in values.items()) + " |")
    return "\n".join(lines)


def weights_table(preset: str) -> str:
    cfg = preset_config(preset)
    shapes = expected_shapes(cfg)
    lines = [f"| name (prefix `{checkpoint_prefix(cfg)}`; `{{i}}` = 0..{cfg.depth - 1}) | shape | role |", "|---|---|---|"]
    for name, shape in shapes.items():
        if name.startswith("blocks.") and not name.startswith("blocks.0."):
            continue
        if name.startswith(cfg.kind.deepstack_name + ".") and not name.startswith(cfg.kind.deepstack_name + ".0."):
            continue
        shown = name.replace("blocks.0.", "blocks.{i}.").replace("_list.0.", "_list.{j}.")
        lines.append(f"| `{shown}` | {tuple(shape)} | {weight_role(cfg, shown)} |")
    total = sum(int(__import__('math').prod(s)) for s in shapes.values())
    lines.append(f"\n{len(shapes)} tensors, {total:,} parameters.")
    return "\n".join(lines)


NOTEBOOK_MENTION = re.compile(r"\b([Nn]otebook) (\d{1,2})\b")


def link_notebooks(text: str) -> str:
    """'notebook 3' in a bug's note becomes a link to notebooks/03_*.ipynb (the page is read on GitHub and the site)."""
    found = {int(p.name[:2]): p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    return NOTEBOOK_MENTION.sub(lambda m: f"[{m[1]} {m[2]}](../notebooks/{found[int(m[2])]})"
                                if int(m[2]) in found else m[0], text)


def bugs_table() -> str:
    lines = ["| bug | first stage compare names | reported |", "|---|---|---|"]
    for bug in BUGS.values():
        lines.append(f"| `{bug.name}`: {bug.title} | `{bug.stage}` | {link_notebooks(bug.reported)} |")
    lines += ["", f"{len(BRIDGE_BUGS)} more live after the encoder, in the bridge to the LLM, where no tap sees "
              "them; `qvlearn.bridge` implements the right rules and notebooks 10 and 13 show them:", "",
              "| bug | where qvlearn covers it | reported |", "|---|---|---|"]
    for name, (title, reported, where) in BRIDGE_BUGS.items():
        lines.append(f"| `{name}`: {title} | {link_notebooks(where)} | {link_notebooks(reported)} |")
    return "\n".join(lines)


def page() -> str:
    model_types = ", ".join(f"`{k}`" for k in all_model_types())
    aliases = ", ".join(f"`{k}` -> `{v}`" for k, v in ALIASES.items())
    mean = ", ".join(map(str, OPENAI_CLIP_MEAN))
    std = ", ".join(map(str, OPENAI_CLIP_STD))
    return f"""# Porter's reference

Everything a port of the Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 / Qwen4-Exp / Omni vision towers must reproduce, as
qvlearn implements and tests it against transformers 5.23. Generated from the code by `python tools/porting_reference.py` (a test fails when this
page and the code disagree). The whole forward to port from is [`qvlearn/spec.py`](../qvlearn/spec.py) (plain NumPy,
every family); what differs between the families is one entry each in
[`qvlearn/families.py`](../qvlearn/families.py). The stage-by-stage walk-through is the course (`notebooks/`); the
tap format and `compare` are in section 7 and [docs/taps.md](taps.md).

The families, as [`qvlearn/families.py`](../qvlearn/families.py) describes them:

{families_table()}

## 1. Effective vision config of every preset (defaults applied)

Each preset is written with the `vision_config` its released checkpoint ships; the values below are what
transformers (and qvlearn) make of it once class defaults fill the gaps. `width` is the ViT width, `out` the
merger output (the LLM width).

{presets_table()}

## 2. Which `config.json` keys are read

* `model_type` (top level, or inside `vision_config`): one of {model_types}. A full VLM config
  (with `vision_config`) or a vision-only one are both accepted; other Qwen3/Omni types are refused by name.
* Qwen2-VL: `depth`, `embed_dim` (the ViT width), `mlp_ratio`, `num_heads`, `hidden_size` (**the merger output**,
  i.e. the LLM width), `hidden_act`, `patch_size`, `temporal_patch_size`, `spatial_merge_size`, `in_channels`.
* Qwen2.5-VL: `depth`, `hidden_size` (**the ViT width**), `intermediate_size`, `num_heads`, `out_hidden_size`,
  `hidden_act`, `window_size` (pixels), `fullatt_block_indexes`, `tokens_per_second`, and the same patch keys.
* Qwen3-VL / Qwen3.5 (and their MoE models, same tower): `depth`, `hidden_size` (the ViT width),
  `intermediate_size`, `num_heads`, `out_hidden_size`, `hidden_act` (`gelu_pytorch_tanh`), `patch_size` (16),
  `num_position_embeddings` (a square: 2304 = 48 x 48), and for Qwen3-VL `deepstack_visual_indexes`. Qwen3.5's
  released `vision_config` says `"model_type": "qwen3_5"` and carries `deepstack_visual_indexes: []`, which its
  class drops. Qwen3.6 and Qwen3.8 ship the same `qwen3_5` / `qwen3_5_moe` configs. `qwen4_exp` (Qwen3.8-Flash-Next,
  vision config `qwen4_exp_vision`) is Qwen3.5-MoE's tower under another name: the same keys.
* The Omni models (`qwen2_5_omni`, `qwen3_omni_moe`): the tower's config is `thinker_config.vision_config`
  (`vision_config` at the top for a thinker saved alone, `model_type` `*_thinker`), with the keys of Qwen2.5-VL
  (Qwen2.5-Omni: `hidden_size` is the ViT width, `window_size`, `fullatt_block_indexes`) and of Qwen3-VL
  (Qwen3-Omni: `num_position_embeddings`, `deepstack_visual_indexes`, default 8, 16, 24). Their token ids sit in
  `thinker_config` (`image_token_index` / `image_token_id`, ...), and `position_id_per_seconds` (25) drives the
  temporal positions of videos in the LLM.
* Aliases (transformers' `attribute_map`): {aliases}.
* Rotary: `rope_parameters.rope_theta` (5.x) or `rope_theta`, default 10000; `rope_type` must be `axial`
  (or `default`).
* Ignored, as transformers ignores them: `in_chans`, `spatial_patch_size` (released configs carry both).
* A missing key takes the class default, exactly as transformers applies it. The defaults are load-bearing:
  Qwen2-VL checkpoints ship a minimal `vision_config`, and a Qwen2.5-VL config built from defaults alone is a
  3584-wide ViT with `tokens_per_second=4`, which no released model is.

{defaults_table()}

## 3. Every constant

| what | value | where |
|---|---|---|
| LayerNorm eps (Qwen2-VL norm1, norm2, ln_q) | 1e-6, biased variance, affine with bias | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| RMSNorm eps (Qwen2.5-VL norm1, norm2, ln_q) | 1e-6; `x / sqrt(mean(x^2) + eps)` in float32, cast back, **then** times the gain; no bias | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| vision rotary theta | 10000; 20 frequencies `theta^(-2i/40)` for head_dim 80 (computed over head_dim/2) | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| rotary layout | cos/sin = cos/sin of the angles `[row*f, col*f, row*f, col*f]` (20 each); `rotate_half` pairs channel j with j + head_dim/2 (NeoX halves). The same rotation as a complex multiply `(x[j] + i x[j + d/2]) * exp(i angle[j])` with each pair stored side by side is fine if q and k share that channel order (the scores are unchanged; qvlearn's block does it, its taps keep the halves) | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| attention scale | `head_dim ** -0.5` (1/sqrt(80)) | [`qvlearn/engine/attention.py`](../qvlearn/engine/attention.py) |
| QuickGELU (Qwen2-VL MLP) | `x * sigmoid(1.702 x)` | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| SiLU (Qwen2.5-VL MLP) | `x * sigmoid(x)` on the gate branch | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| merger GELU | exact erf GELU (`nn.GELU()`), not the tanh approximation | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| LLM M-RoPE theta | 1e6, head_dim 128, `mrope_section` [16, 24, 24] | [`qvlearn/bridge.py`](../qvlearn/bridge.py) |
| Qwen3 LayerNorm eps (norm1, norm2, merger, DeepStack) | 1e-6, with bias | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| Qwen3 MLP activation | `gelu_pytorch_tanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| Qwen3 position table | `side x side` (48 x 48), bilinear with **corners aligned**, float32 coordinates `r (side-1)/(h-1)`, merge-block order, repeated per frame pair, added after the Conv3d (which has a bias) | [`qvlearn/spec.py`](../qvlearn/spec.py) |
| Qwen3 DeepStack merger | 2x2 concat **then** LayerNorm over 4D, Linear(4D, 4D), exact GELU, Linear(4D, out) | [`qvlearn/spec.py`](../qvlearn/spec.py) (`merger`) |
| Qwen3-VL LLM M-RoPE | interleaved (`mrope_interleaved`), `mrope_section` [24, 20, 20]: frequency i follows h if i % 3 == 1, w if i % 3 == 2 (below 3 x section), else t | [`qvlearn/bridge.py`](../qvlearn/bridge.py) |

## 4. Preprocessing

* **smart_resize** (factor = patch 14 x merge 2 = 28): an aspect ratio above {MAX_ASPECT_RATIO} is an error; each
  side is rounded to a multiple of 28 with Python's `round` (**ties to even**: 70 px -> 56, where C's `round`
  gives 84); if the area exceeds `max_pixels`, scale by `beta = sqrt(h*w / max_pixels)` and **floor** each side,
  **clamped to at least 28**; if it is below `min_pixels`, scale by `beta = sqrt(min_pixels / (h*w))` and
  **ceil** each side (no clamp needed). Released limits: min {MIN_PIXELS} (4 tokens), max {MAX_PIXELS} (16384
  tokens); the processor class defaults are min 3136 and max 1003520 (1280 tokens) -- know which one you use.
  qwen-vl-utils' own smart_resize clamps the *initial* rounding to >= 28 and has no clamp when shrinking.
* **Loading a file** (transformers' `load_image`, for a path): `ImageOps.exif_transpose` first, so the EXIF
  Orientation a phone writes (6: stored sideways) is applied and the grid is the upright picture's; then PIL's
  `convert("RGB")`, which drops an alpha channel (transparent pixels keep their stored colour). An image handed
  over in memory (a PIL image, an array) is **not** rotated: `Image.open` does not apply EXIF.
* **RGB conversion** (every image, after loading): any alpha channel, or palette transparency, is composited onto
  **white** (`alpha_composite` on an opaque white RGBA image, then RGB); every other mode (L, P, CMYK, I;16, ...)
  goes through PIL's `convert("RGB")`. After a file's `convert("RGB")` only a palette's transparent colour is left
  for this step. An animated image is not one image: qvlearn refuses it (pass it as a video).
* **Resize**: PIL bicubic (a = -0.5, antialiased when shrinking) on uint8, skipped when the size already fits.
  transformers 5.x's *default* image processor uses torchvision's antialiased bicubic instead: a few grey levels
  apart. qvlearn matches `Qwen2VLImageProcessorPil` bit for bit.
* **Rescale and normalise**: `x * (1/255)` in float64, cast to float32, then `(x - mean) / std` in float32 with
  mean ({mean}) and std ({std}).
* **Patchify**: frames `(T, 3, H, W)` with T a multiple of 2 (an image is its own frame twice; a video repeats
  its last frame) -> `(T/2, 2, 3, H/28, 2, 14, W/28, 2, 14)` -> transpose `(0, 3, 6, 4, 7, 2, 1, 5, 8)` ->
  rows of 1176 = (channel, temporal, row-in-patch, col-in-patch), 2x2 merge blocks in raster order, the 4
  patches of a block in order (0,0), (0,1), (1,0), (1,1).

* **Qwen3-VL / Qwen3.5 images**: the same processor class with patch 16 (factor 32), mean = std = 0.5 and
  65536 .. 16777216 pixels (`qvlearn.preprocess(..., family="qwen3_vl")`); rows of 3 x 2 x 16 x 16 = 1536.
  Their **videos** follow `Qwen3VLVideoProcessor`: one pixel budget over frames x H x W (class defaults
  131072 .. 786432; the rounding of `qvlearn.preprocessing.qwen3_video_size`), frames sampled by
  `int(total / video_fps * 2)` clamped to [4, min(768, total)] at `linspace(0, total - 1, n)` rounded, and a
  `<t.t seconds>` timestamp per frame pair (the mean of its two frames' times). Qwen4-Exp: the same processors.
* **Qwen2.5-Omni**: Qwen2.5-VL's preprocessing (Qwen2VLImageProcessor and Qwen2VLVideoProcessor, 14-px patches).
* **Qwen3-Omni**: `Qwen2VLImageProcessor` with `patch_size` 16 (factor 32) and Qwen2's limits 3136 .. 12845056;
  its `preprocessor_config.json` sets no `image_mean` / `image_std`, so the class defaults hold: **CLIP's**, not
  Qwen3-VL's 0.5. Its videos go through `Qwen2VLVideoProcessor` (frame by frame, each frame's own smart_resize),
  with `video_second_per_grid = 2 / fps`.

## 5. Weights: names, shapes, roles

Checkpoint names carry the prefix `visual.` (Qwen2/2.5-VL releases, an Omni thinker saved alone), `model.visual.`
(Qwen3-VL / Qwen3.5 / Qwen4-Exp releases) or `thinker.visual.` (the Omni models); the loader reads any of
{", ".join(f"`{p}`" for p in PREFIXES)} (one per snapshot), and shards listed in `model.safetensors.index.json`.
A `Linear` stores its weight as `[out, in]`: `y = x @ W.T + b`.

### Qwen2-VL (`qwen2-vl-2b`)

{weights_table("qwen2-vl-2b")}

### Qwen2.5-VL (`qwen2.5-vl-7b`)

{weights_table("qwen2.5-vl-7b")}

### Qwen3-VL (`qwen3-vl-8b`)

{weights_table("qwen3-vl-8b")}

Qwen3.5 (`qwen3.5-27b`) and Qwen4-Exp (`qwen3.8-flash-next`) have the same tensors without
`deepstack_merger_list`.

### Qwen2.5-Omni (`qwen2.5-omni-7b`): Qwen2.5-VL's tower with q, k, v apart

{weights_table("qwen2.5-omni-7b")}

`qvlearn.weights.fused_qkv` concatenates `attn.q`, `attn.k`, `attn.v` by output rows into Qwen2.5-VL's `attn.qkv`
(the same layer: `x @ concat(Wq, Wk, Wv).T`); the spec reads them apart.

### Qwen3-Omni (`qwen3-omni-30b-a3b`): Qwen3-VL's tower with Qwen2's merger names

{weights_table("qwen3-omni-30b-a3b")}

**Reading BF16 without torch.** Released snapshots store bfloat16. safetensors' NumPy reader returns
`ml_dtypes.bfloat16` arrays when `ml-dtypes` is installed (qvlearn depends on it); `.astype(np.float32)` widens them
exactly. Any other reader can widen the raw bytes itself: a bf16 value is the top 16 bits of a float32, so
`(np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)` is exact (`qvlearn.backend.widen_bf16`).

## 6. Bugs that break ports, and where compare pins them

`qvlearn.tools.bugs` builds each of these as a kernel table of qvlearn's engine (or preprocessing steps); [`tests/test_bugs.py`](../tests/test_bugs.py) proves that `compare` names the
stage below ([notebook 12](../notebooks/12_debugging_a_port.ipynb) shows their signatures).

{bugs_table()}

## 7. Tap stages: what `compare` expects

A tap file (safetensors, metadata `qvlearn_taps_format = "1"`) holds any subset of these, float stages as float32
(cast a half-precision port's tensors before writing; judged against a float32 reference, a bf16 run needs about
`--rtol 1e-2 --scale-tol 1e-2` and an fp16 run `--rtol 1e-3 --scale-tol 1e-3` for its rounding alone: rounding to
a format of unit roundoff u moves each value by at most u of itself, which bounds both errors by u; compare says so,
naming the coarsest format that explains the file, bf16 before fp16, when a file holds only such values). `--stages '*'` writes every stage; `compare --stage GLOB` compares a selection. `compare A B` exits 0 when every stage is within tolerance,
{EXIT_BEYOND} when a stage of the encoder is beyond it, 2 for bad input, {EXIT_INPUTS} when the inputs
(`pixel_values`, `grid_thw`) differ.

{tap_table()}
## 8. The index bookkeeping, as [`qvlearn/spec.py`](../qvlearn/spec.py) computes it

The integer work where ports most often go wrong (the merge-block order, the window padding and its empty windows,
the position table's aligned corners, clamped neighbour and tap order), quoted from the spec: plain NumPy, held
bit for bit to transformers' `vision_utils` over many grids by the tests ([`tests/test_spec.py`](../tests/test_spec.py)).

```python
{spec_source("position_ids", "cu_seqlens", "window_index", "table_taps")}
```
"""


def spec_source(*names) -> str:
    """The source of these functions of qvlearn/spec.py, as they are."""
    import inspect

    from qvlearn import spec

    return "\n\n".join(inspect.getsource(getattr(spec, name)).rstrip() for name in names)



def main(argv) -> int:
    outputs = {TARGET: page(), TAPS_PAGE: with_tap_table(TAPS_PAGE.read_text(encoding="utf-8"))}
    if argv == ["--check"]:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run `python tools/porting_reference.py`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
