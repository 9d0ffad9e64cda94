"""docs/conformance.md from docs/conformance/results.json (tools/conformance/conformance.py writes both).

    python tools/conformance/report.py     # the report again from the committed results, without a run
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "https://github.com/ggml-org/llama.cpp/blob/{commit}/{path}"

DEPARTURES = {
    "01-conv2d-f32-im2col": dict(arithmetic=True,
        title="The patch embedding rounds the pixels to float16, even in an f32 mmproj",
        where=[("ggml/src/ggml.c", "ggml_conv_2d"),
               ("tools/mtmd/models/qwen2vl.cpp", "clip_graph_qwen2vl::build_inp_with_temporal_merge")],
        cause="The Conv3d is two `ggml_conv_2d` calls (one per frame of the temporal pair). `ggml_conv_2d` builds its "
              "im2col in float16 for every kernel that is not bf16 (`a->type == GGML_TYPE_BF16 ? GGML_TYPE_F32 : "
              "GGML_TYPE_F16`), so the normalised pixels are rounded to half precision, and the matmul, whose first "
              "operand is then f16, converts the f32 kernel to f16 too: pixels and patch-embedding weights both carry "
              "half-precision rounding (about 3e-4 relative at the first stage), whatever the mmproj's type. "
              "Notebook 15 reproduces the stage to float32 noise by rounding both in qvlearn's own tower (the "
              "pixels alone are not enough).",
        fix="An f32 kernel keeps an f32 im2col (`a->type == GGML_TYPE_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32`).",
        families="all four", stage="the first stage after the patch embedding: `blocks.0.norm1` (Qwen2-VL, "
                                   "Qwen2.5-VL), `patch_embeds` (Qwen3-VL, Qwen3.5)",
        upstream="Not reported for the Qwen-VL towers. The same cause is known elsewhere: ggml-org/llama.cpp PR "
                 "#23660 (im2col types of the conv ops) and PR #26727, where DeepSeek-OCR's SAM convolutions keep an "
                 "f32 im2col in the model's own code because the f16 one measurably degraded OCR.",
        report="`ggml_conv_2d` with an f32 kernel computes in f16: Qwen2-VL/2.5-VL/3-VL patch embeddings depart from "
               "transformers by ~3e-4 relative at the first stage with an f32 mmproj (qvlearn's conformance report, "
               "patch 01: `ggml.c` one line; the whole tower then matches to float32 noise)."),
    "02-gelu-f32-not-fp16-table": dict(arithmetic=True,
        title="GELU and QuickGELU on float32 read a float16 table",
        where=[("ggml/src/ggml-cpu/vec.h", "ggml_vec_gelu_f32, ggml_vec_gelu_quick_f32 (GGML_GELU_FP16, "
                                           "GGML_GELU_QUICK_FP16)")],
        cause="`vec.h` defines `GGML_GELU_FP16` and `GGML_GELU_QUICK_FP16` unconditionally; under them the f32 "
              "kernels round each input to float16 and look the result up in a 65536-entry float16 table, so the "
              "activation carries float16 rounding (about 5e-4 relative) in an f32 model.",
        fix="Leave both undefined: the f32 formulas are computed.",
        families="Qwen2-VL (QuickGELU in the blocks), Qwen3-VL and Qwen3.5 (tanh GELU in the blocks)",
        stage="`blocks.0.mlp.act`",
        upstream="Reported: ggml-org/llama.cpp #29252 (open: \"CPU f32 GELU uses GGML_GELU_FP16, loses precision\"); "
                 "PR #22339 notes that the f32 QuickGELU reads the same table.",
        report=""),
    "03-merger-gelu-erf": dict(arithmetic=True,
        title="The mergers use the tanh GELU where the models use the exact one",
        where=[("tools/mtmd/models/qwen2vl.cpp", "clip_graph_qwen2vl::build (the merger's build_ffn)"),
               ("tools/mtmd/models/qwen3vl.cpp", "clip_graph_qwen3vl::build (the merger's and the DeepStack mergers' "
                                                 "build_ffn)")],
        cause="The merger MLP is built with `FFN_GELU`, ggml's tanh approximation. transformers' `PatchMerger` "
              "(Qwen2-VL, Qwen2.5-VL) and `Qwen3VLVisionPatchMerger` (the merger and every DeepStack merger) use "
              "`nn.GELU()`, the exact erf form; only Qwen3's blocks use the tanh form (`gelu_pytorch_tanh`).",
        fix="`FFN_GELU_ERF` in the three merger calls.",
        families="all four", stage="`embeddings` (and `deepstack.{j}` for Qwen3-VL)",
        upstream="Qwen3-VL: reported, ggml-org/llama.cpp #29251. Qwen2-VL and Qwen2.5-VL: no report found.",
        report="The Qwen2-VL/Qwen2.5-VL merger (`models/qwen2vl.cpp`) uses `FFN_GELU` (tanh) where "
               "transformers' PatchMerger uses `nn.GELU()` (erf): ~2e-4 relative in the output embeddings after the "
               "other fixes; `FFN_GELU_ERF` makes the output match to float32 noise."),
    "04-flash-attn-f32-kv": dict(arithmetic=True,
        title="Flash attention casts k and v to float16",
        where=[("tools/mtmd/clip.cpp", "clip_graph::build_attn")],
        cause="With flash attention on, `build_attn` casts k and v to F16 before `ggml_flash_attn_ext`; the CPU "
              "kernel then also converts q to F16 for the dot products, so every score and value carries float16 "
              "rounding (its size at the attention's output depends on the family: below). mtmd's default is "
              "flash attention AUTO (`mtmd_context_params_default`), which `clip.cpp`'s warmup turns on wherever "
              "the backend supports it, the CPU included: the FA-on columns are what a user gets by default.",
        fix="Keep k and v in f32 (the CPU kernel takes them; the accumulation is f32 already).",
        families="all four (flash attention on)", stage="`blocks.0.attn`",
        upstream="No report found.",
        report="With flash attention on (mtmd's default, AUTO, on the CPU), `clip_graph::build_attn` casts k/v to "
               "f16, which puts 1e-4 to 1e-3 relative error (by family) into every vision block's attention on CPU "
               "even with an f32 mmproj; dropping the two casts makes "
               "the tower match transformers to float32 noise (qvlearn's conformance report, patch 04). The cost "
               "in time is in the report's speed table."),
    "06-qwen-resize-no-letterbox": dict(
        title="Images whose aspect ratio changes in the resize are letterboxed, not stretched",
        where=[("tools/mtmd/clip.cpp", "clip_model_loader::load_hparams (the Qwen-VL case)"),
               ("tools/mtmd/mtmd-image.cpp", "img_tool::resize")],
        cause="The Qwen-VL projectors keep `image_resize_pad` at its default `PAD_CEIL`, so `img_tool::resize` "
              "scales the image by min(sx, sy) and pads the rest of the smart_resize target with black. "
              "transformers resizes to the target's height and width (a slight stretch), as the model was trained.",
        fix="`image_resize_pad = PAD_NONE` for the Qwen-VL projectors.",
        families="all four", stage="`pixel_values` (the inputs differ: compare exits 3)",
        upstream="No report found; ggml-org/llama.cpp #16842 and PR #16878 discussed padding for the bounding boxes "
                 "and left it out of the smart-resize change.",
        report="For Qwen-VL, mtmd letterboxes (PAD_CEIL) where transformers stretches to the smart_resize target: "
               "a 122x77 image gets black rows and a shrunk picture instead of a 112x84 resize; pixel_values differ "
               "from the processor's. `image_resize_pad = PAD_NONE` in the Qwen case makes them identical to "
               "PIL's bicubic within 1e-5 (qvlearn's conformance report, patch 06)."),
    "07-smart-resize-ties-to-even": dict(
        title="smart_resize rounds a tie away from zero",
        where=[("tools/mtmd/mtmd-image.cpp", "img_tool::calc_size_preserved_ratio (round_by_factor)")],
        cause="`round_by_factor` uses `std::round` (half away from zero); transformers' smart_resize uses Python's "
              "`round`, half to even. A side of 2.5 x 28 = 70 px becomes 84 in llama.cpp and 56 in transformers "
              "(8.5 x 32 = 272 px: 288 against 256): another grid, other tokens.",
        fix="`std::nearbyint` (ties to even in the default rounding mode).",
        families="all four", stage="`pixel_values` and `grid_thw` (the inputs differ)",
        upstream="No report found.",
        report="`calc_size_preserved_ratio` rounds half away from zero; transformers' smart_resize rounds half to "
               "even, so a 112x70 image gets a 4x3-token grid in llama.cpp and 4x2 in transformers."),
    "08-exif-orientation": dict(
        title="Phone photos are read sideways",
        where=[("tools/mtmd/mtmd-helper.cpp", "mtmd_helper_bitmap_init_from_buf")],
        cause="stb_image decodes the stored pixels and ignores the EXIF orientation tag; a phone photo stored "
              "sideways (orientation 6) reaches the tower sideways, with the height and width of the grid swapped. "
              "transformers (PIL's exif_transpose in its image loading) sees it upright.",
        fix="Read the orientation from the JPEG's APP1 or the PNG's eXIf block and turn the decoded pixels as "
            "PIL's exif_transpose does (about 80 lines).",
        families="all four (any image file with an orientation tag)", stage="`pixel_values`, `grid_thw`",
        upstream="Reported: ggml-org/llama.cpp #20870 (open); PR #24196 fixed it in the web UI only, not in mtmd.",
        report=""),
    "05-bilinear-align-corners-coordinates": dict(
        title="The position table's sample points are a few ulp off",
        where=[("ggml/src/ggml-cpu/ops.cpp", "ggml_compute_forward_upscale_f32 (bilinear, corners aligned)"),
               ("tools/mtmd/models/qwen3vl.cpp", "clip_graph_qwen3vl::build (resize_position_embeddings)")],
        cause="With the corners aligned, ggml computes output i's source coordinate as i / sf with sf = (n_out - 1) "
              "/ (n_in - 1) rounded to float32; transformers (`get_vision_interpolation_indices_and_weights`) "
              "computes i * (n_in - 1) / (n_out - 1). Dividing by the rounded ratio moves every sample point by the "
              "same relative amount: the table is off by a few ulp (max-relative about 8e-7) with a systematic scale "
              "of about 1.5e-7, some 80x the scale error of an implementation that rounds as transformers does. "
              "Below any effect on the output (the embeddings stay within float32 noise), but it is the one stage "
              "that compare's scale rule still flags once the other fixes are in.",
        fix="Compute the coordinate as transformers does (two lines).",
        families="Qwen3-VL, Qwen3.5", stage="`pos_embeds`",
        upstream="No report found (and none needed for accuracy; it matters to a port that wants bit-level "
                 "agreement of the table).",
        report="", arithmetic=True),
    "10-resize-pass-order-as-pillow-13": dict(
        title="The two resize passes run in the other order than Pillow 13's",
        where=[("tools/mtmd/mtmd-image.cpp", "img_tool::resize_pillow")],
        cause="mtmd reimplements Pillow's bicubic resize (fixed-point weights, two separable passes that round to "
              "uint8 in between) and always runs the horizontal pass first, as Pillow did up to 12.x. Pillow 13.0 "
              "(its PR #9549) runs the vertical pass first when the height shrinks by more than twice as many pixels "
              "as the width, so for such targets the intermediate rounding differs: 640x480 -> 644x476 (a VGA "
              "photo's smart_resize target) differs by up to 10 levels of 255 in 15% of the values. The pinned "
              "reference (transformers with Pillow 13.0.0) is that order; with Pillow 12 transformers itself gives "
              "mtmd's pixels.",
        fix="Choose the order as Pillow 13 does (the same test on the two size differences).",
        families="all four", stage="`pixel_values` (the inputs differ)",
        upstream="No report found: Pillow 13 is recent, and the answer depends on the Pillow a user has.",
        report="`img_tool::resize_pillow` matches Pillow <= 12 (horizontal pass first); Pillow 13.0 (python-pillow "
               "PR #9549) runs the vertical pass first when `(in_h - out_h) > 0 && (in_h - out_h) > 2 * (in_w - "
               "out_w)`, so a 640x480 image resized to 644x476 differs from transformers' processor by up to 10/255 "
               "in 15% of the pixel values; choosing the order by the same test restores bit-identical pixels."),
    "09-qwen-token-limits-as-released": dict(
        title="Other pixel limits than the released preprocessor_config.json",
        where=[("tools/mtmd/clip.cpp", "clip_model_loader::load_hparams (set_limit_image_tokens(8, 4096))")],
        cause="mtmd limits a Qwen-VL image to 8 .. 4096 merged tokens. The released processors allow 4 .. 16384 "
              "(Qwen2-VL, Qwen2.5-VL: 3136 .. 12845056 pixels) and 64 .. 16384 (Qwen3-VL, Qwen3.5: 65536 .. "
              "16777216 pixels). Small images (below 256x256 for Qwen3) and large ones (above about 3.2 MP for "
              "Qwen2.5-VL, 4.2 MP for Qwen3) get another grid.",
        fix="The released limits. Without a rebuild: `--image-min-tokens` / `--image-max-tokens` (mtmd_context_params "
            "image_min_tokens / image_max_tokens): 4 / 16384, or 64 / 16384 for Qwen3.",
        families="all four", stage="`pixel_values` and `grid_thw` (the inputs differ)",
        upstream="A deliberate choice for memory (ggml-org/llama.cpp PR #13434 capped the resolution; PR #16878 "
                 "added min/max pixels; #16842 recommends at least 1024 tokens for grounding); a user matches "
                 "transformers with the two flags.",
        report=""),
}


SCOPE = {
    "01-conv2d-f32-im2col": ("`ggml_conv_2d` in ggml's core: every caller with an f32 kernel (16 of mtmd's model files "
                             "and clip.cpp, and any ggml program), on every backend",
                             "Build the Qwen patch embedding's im2col in f32 in `models/qwen2vl.cpp` "
                             "(`ggml_im2col(..., GGML_TYPE_F32)` and `ggml_mul_mat`), as upstream did for "
                             "DeepSeek-OCR's SAM convolutions (PR #26727)"),
    "02-gelu-f32-not-fp16-table": ("`vec.h` of ggml's CPU backend: every f32 GELU and QuickGELU on the CPU, text "
                                   "models included",
                                   "None that keeps the table's speed: a model could build GELU from ggml_tanh "
                                   "and friends; the cost of the global fix is in the speed table (Qwen3-VL's "
                                   "blocks are GELU)"),
    "03-merger-gelu-erf": ("`models/qwen2vl.cpp` and `models/qwen3vl.cpp`: the Qwen-VL mergers only", "Already local"),
    "04-flash-attn-f32-kv": ("`clip_graph::build_attn` in clip.cpp: every vision tower with flash attention on",
                             "Keep the casts where the backend's flash attention needs f16 k/v (GPU kernels); the CPU "
                             "kernel takes f32, so a CPU-only condition is enough"),
    "05-bilinear-align-corners-coordinates": ("`ggml_compute_forward_upscale_f32` of the CPU backend: every bilinear "
                                              "upscale with the corners aligned", "Not needed for accuracy"),
    "06-qwen-resize-no-letterbox": ("the Qwen case of `clip_model_loader::load_hparams`, which LING3VL shares with "
                                    "QWEN2VL, QWEN25VL and QWEN3VL",
                                    "Set `PAD_NONE` for the three Qwen projector types only, if LING3VL's processor "
                                    "letterboxes"),
    "07-smart-resize-ties-to-even": ("`img_tool::calc_size_preserved_ratio` in mtmd-image.cpp: the dyn_size, "
                                     "longest_edge, lfm2 and idefics3 preprocessors (most of mtmd's models)",
                                     "An option of the resize (`round ties to even`) set by the processors ported "
                                     "from Python, Qwen's among them"),
    "08-exif-orientation": ("`mtmd_helper_bitmap_init_from_buf`: every image a program loads through mtmd's helper",
                            "None: the orientation belongs to the file, not the model"),
    "09-qwen-token-limits-as-released": ("the same Qwen case of `load_hparams` (LING3VL included)",
                                         "Condition the limits on the three Qwen projector types; without a "
                                         "rebuild, `--image-min-tokens` / `--image-max-tokens`"),
    "10-resize-pass-order-as-pillow-13": ("`img_tool::resize_pillow`: every model that resizes with mtmd's "
                                          "Pillow-accurate bicubic",
                                          "None: it follows the Pillow a reference runs with (13 and later)"),
}
"""Each llama.cpp patch: the code it touches (who else runs it) and the minimal model-local alternative."""

UPSTREAM_READ = ("The upstream statuses: ggml-org/llama.cpp #29252 and #20870 were read again on 2026-12-03 in an "
                 "index of GitHub's threads (which can lag GitHub by weeks) and were open; the others are as found "
                 "when this report was first written (2026-11), and an open thread may have moved since.")
"""When the upstream statuses were read, said once above the departures."""


def link(commit: str, path: str) -> str:
    return f"[`{path}`]({SOURCE.format(commit=commit, path=path)})"


def line_link(commit: str, path: str, line: int) -> str:
    return f"[`{path}:{line}`]({SOURCE.format(commit=commit, path=path)}#L{line})"


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if x != x:
        return "nan"
    return f"{x:.{digits}e}"


def verdict(j: dict) -> str:
    if j["first"] is None:
        return f"all {j['stages']} within noise"
    if j["exit"] == 3:
        return f"inputs differ at `{j['first']}`"
    floor = j.get("first_floor")
    times = f", {j['first_rel'] / floor:.0f}x floor" if floor and floor == floor and floor > 0 else ""
    return f"`{j['first']}` {fmt(j['first_rel'])}{times}"


def out_cell(j: dict) -> str:
    cos = j.get("embeddings_min_cos")
    return f"{fmt(j['embeddings_rel'])} / {cos:.6f}" if cos is not None else f"{fmt(j['embeddings_rel'])} / -"


def cases(results, **match):
    return [c for c in results["cases"] if all(c.get(k) == v for k, v in match.items())]


def one(results, **match):
    found = cases(results, **match)
    return found[0] if found else None


SETTINGS = (("f32", False), ("f32", True), ("f16", False), ("f16", True))


def arithmetic_table(results, variant: str, towers) -> list[str]:
    head = "| tower | " + " | ".join(f"{m} mmproj, FA {'on' if fa else 'off'}" for m, fa in SETTINGS) + " |"
    lines = [head, "|---|" + "---|" * len(SETTINGS)]
    for tower in towers:
        cells = []
        for m, fa in SETTINGS:
            c = one(results, variant=variant, tower=tower, image="multiple", mmproj=m, flash=fa)
            cells.append("-" if c is None else f"{verdict(c['end_to_end'])}; out {out_cell(c['end_to_end'])}")
        lines.append(f"| {tower} | " + " | ".join(cells) + " |")
    return lines


def preprocessing_table(results, variant: str, towers, images) -> list[str]:
    lines = ["| tower | image | grid llama.cpp | grid transformers | verdict | on llama.cpp's own inputs |",
             "|---|---|---|---|---|---|"]
    for tower in towers:
        for image in images:
            c = one(results, variant=variant, tower=tower, image=image, mmproj="f32", flash=False)
            if c is None:
                continue
            same = c.get("same_inputs")
            lines.append(f"| {tower} | {image} | {c['grid_llama']} | {c['grid_ref']} | {verdict(c['end_to_end'])} "
                         f"| {verdict(same) if same else '(same inputs)'} |")
    return lines


def write_report(results: dict, path: Path) -> None:
    commit = results["llama_cpp"]["commit"]
    towers = list(dict.fromkeys(c["tower"] for c in results["cases"]))
    tiny = [t for t in towers if t.startswith("tiny-")]
    wide = [t for t in towers if not t.startswith("tiny-")]
    steps = results["steps"]
    pre_images = ("not-multiple", "tie", "small", "phone")
    L: list[str] = []
    add = L.append
    mlx = results.get("mlx_vlm")
    add("# Conformance: the Qwen-VL vision towers of llama.cpp and mlx-vlm stage by stage, mistral.rs end to end")
    add("")
    add("<!-- written by tools/conformance/conformance.py (make conformance) from docs/conformance/results.json; "
        "edit the generator, not this file -->")
    add("")
    add(f"llama.cpp **{commit[:9]}** (as vendored by `{results['llama_cpp']['sdist']}`, the sdist on the package "
        f"index), CPU backend, {results['threads']} threads, on {results['machine']}; the reference is transformers "
        "5.23.0 in float32, and qvlearn's taps of the same inputs are the noise floor (`compare --baseline`). "
        f"Tolerance: rel <= {results['rtol']:g} and at most 10x the floor of each stage.")
    add("")
    add("Every tower is one of qvlearn's seeded towers in the Hugging Face layout, converted by llama.cpp's own "
        "`convert_hf_to_gguf.py --mmproj`; every image is encoded by the public mtmd API "
        "(`tools/conformance/harness.cpp`), whose eval callback writes the tower's named tensors; "
        "`qvlearn.tools.llamacpp` turns them into a tap file. Nothing in llama.cpp is modified for a run: the "
        "patches below are applied to a second copy of the source to show what each departure is.")
    add("")
    if mlx:
        v = mlx["versions"]
        add(f"mlx-vlm **{v['mlx-vlm']}** on mlx {v['mlx']} (`mlx[cpu]`, the Linux wheel), pinned with their sha256 "
            "in `tools/conformance/mlxvlm-requirements.txt`, runs the same snapshots through its own `VisionModel` "
            "and its own numpy image processor; section 8.")
        add("")
    add("## Summary: one table")
    add("")
    L += summary_table(results)
    add("")
    add("## Summary: llama.cpp")
    add("")
    n_dep = len(steps)
    n_arith = sum(1 for s in steps if DEPARTURES[s["patch"].removesuffix(".patch")].get("arithmetic"))
    add(f"- **{n_dep} departures**, each located in llama.cpp's source and shown fixed by a patch in "
        f"`tools/conformance/patches/`: {n_arith} in the arithmetic (even with an f32 mmproj) and "
        f"{n_dep - n_arith} in the preprocessing (the grid or the pixels differ from the released processor's).")
    final = [c for c in results["cases"] if c["variant"] == "patched" and c["mmproj"] == "f32"]
    ok = [c for c in final if c["end_to_end"]["first"] is None]
    add(f"- With all {n_dep} patches, {len(ok)} of {len(final)} f32 runs (every tower, image and flash-attention "
        "setting) match transformers to float32 noise at every stage they report, pixel_values and grid included.")
    up = [c for c in results["cases"] if c["variant"] == "upstream" and c["mmproj"] == "f32" and c["image"] ==
          "multiple"]
    if up:
        worst = max(c["end_to_end"]["embeddings_rel"] for c in up)
        add(f"- As released, on an image that needs no resize, the output embeddings depart by up to {fmt(worst)} "
            "relative (f32 mmproj): small, but 100x the float32 noise, and the first stage beyond it is the patch "
            "embedding.")
    add("- The f16 mmproj departs by its own rounding (weights and, in ggml's f16 matmul, the activations): that is "
        "the precision asked for, not a departure; its sizes are in the tables.")
    add("")
    add("## Regenerate")
    add("")
    add("```")
    add("make conformance            # everything, timed (not part of make test)")
    add("make conformance-quick      # the tiny towers on every runtime, no timing, llama.cpp's patches at once;")
    add("                            # checks the verdicts against these")
    add("python tools/conformance/conformance.py --runtime mlx-vlm    # one runtime; the others' results are kept")
    add("```")
    add("")
    whole = results.get("whole_run", {}).get("runtimes", ["llama.cpp", "mlx-vlm"])
    alone = [f"{name} {results[key]['duration_s'] / 60:.0f} min" for key, name in
             (("mlx_vlm", "mlx-vlm"), ("mistral_rs", "mistral.rs"))
             if results.get(key, {}).get("duration_s") and name not in whole]
    add(f"This fetches llama.cpp's pinned source (sha256-checked), builds the CPU targets it needs (ggml, llama, "
        f"mtmd: {results['build_s']:.0f} s in this run"
        + (", which found an earlier build in `build/conformance/`" if results["build_s"] < 60 else "")
        + "; about 3 minutes on 2 cores from nothing, the targets alone, not the 19 minutes of a whole build), "
        "builds the "
        "harness, writes and converts the snapshots, runs every case once as released and once after each patch, "
        "installs the pinned mlx, mlx-vlm and mistralrs wheels (sha256-checked) into `build/conformance/`, runs "
        "them, times every runtime, and writes this file: "
        f"{results['total_s'] / 60:.0f} minutes on this machine for the last whole run ({', '.join(whole)})"
        + (f", and, run again on its own with `--runtime`: {'; '.join(alone)}" if alone else "") + ". "
        "`make conformance-quick` checks each verdict of a fresh run of the tiny towers against the committed "
        "ones; a verdict that a stage within a factor of 3 of its limit decides is at the noise edge, where float32 "
        "noise on another machine can move it, and is not compared. Everything but this report, "
        "`docs/conformance/results.json` and the tiny towers' tap files (`docs/conformance/taps/`, read by notebook "
        "15: llama.cpp's, mlx-vlm's, and transformers' with the noise floors in their metadata) stays in "
        "`build/conformance/`.")
    add("")
    add("## 1. The arithmetic, as released")
    add("")
    add("Images that need no resize (multiples of the patch factor), so the inputs are the same and every "
        "difference is arithmetic. Each cell: the first stage beyond float32 noise with its max-relative error "
        "(and how many times the noise floor of that stage), then the output embeddings' max-relative error / the "
        "lowest per-token cosine. Flash attention: mtmd's default is AUTO, which turns it on wherever the backend "
        "supports it, the CPU included, so the FA-on columns are what a user gets by default.")
    add("")
    L += arithmetic_table(results, "upstream", towers)
    add("")
    add("Tiny towers: 64 wide, 3-4 blocks. Released widths: the released preset cut to 4 blocks (`/4`), with "
        "Qwen3-VL-8B's DeepStack mergers at blocks 1, 2 and 3.")
    add("")
    add("## 2. The preprocessing, as released")
    add("")
    add("f32 mmproj, flash attention off. When the inputs differ (compare's exit 3), transformers is run again on "
        "llama.cpp's own pixel_values and grid: the last column judges the arithmetic apart from the preprocessing.")
    add("")
    L += preprocessing_table(results, "upstream", towers, pre_images)
    add("")
    add("## 3. The departures")
    add("")
    add(UPSTREAM_READ)
    add("")
    for k, step in enumerate(steps, 1):
        stem = step["patch"].removesuffix(".patch")
        d = DEPARTURES[stem]
        add(f"### {k}. {d['title']}")
        add("")
        add("- **Where**: " + "; ".join(f"{link(commit, p)}, `{fn}`" if " " not in fn or "(" in fn else
                                       f"{link(commit, p)}, {fn}" for p, fn in d["where"]) + ".")
        spots = results["llama_cpp"].get("patch_lines", {}).get(step["patch"])
        if spots:
            add("- **The line** (where the patch changes the released source): "
                + ", ".join(line_link(commit, p, n) for p, n in spots) + ".")
        add(f"- **Cause**: {d['cause']}")
        add(f"- **Families**: {d['families']}; **first stage**: {d['stage']}.")
        if d.get("arithmetic"):
            sizes = departure_sizes(results, k, tiny)
            if sizes:
                add(f"- **Size, per family** (tiny towers, f32 mmproj, flash attention {'on' if k == 4 else 'off'}, "
                    "with the patches before this one applied: the max-relative error at the stage it first "
                    "reaches; float32 noise is about 1e-6): " + "; ".join(sizes) + ".")
        add(f"- **Fix** (`tools/conformance/patches/{step['patch']}`): {d['fix']}")
        scope = SCOPE.get(stem)
        if scope:
            add(f"- **Scope of the patch**: {scope[0]}. **Model-local alternative**: {scope[1]}.")
        add(f"- **Upstream**: {d['upstream']}")
        if d.get("report"):
            add(f"- **Report for the maintainers** (none exists): {d['report']}")
        add("")
    add("## 4. Patch by patch")
    add("")
    add("The patches are applied one after the other to a second copy of the source, with an incremental rebuild "
        "after each (seconds in the first column). Tiny towers, f32 mmproj; each cell is the first stage beyond "
        "float32 noise, for flash attention off / on, on the image named in the column.")
    add("")
    cols = [(t, img) for t in tiny for img in ("multiple", "not-multiple", "tie", "small", "phone")]
    variants = ["upstream"] + [s["variant"] for s in steps]
    labels = ["as released"] + [f"+ {s['patch'][:2]} ({s['rebuild_s']:.0f} s)" for s in steps]
    for t in tiny:
        add(f"**{t}**")
        add("")
        add("| | " + " | ".join(img for tt, img in cols if tt == t) + " |")
        add("|---|" + "---|" * len([1 for tt, _ in cols if tt == t]))
        for variant, label in zip(variants, labels):
            cells = []
            for tt, img in cols:
                if tt != t:
                    continue
                pair = [one(results, variant=variant, tower=t, image=img, mmproj="f32", flash=fa) for fa in
                        (False, True)]
                cells.append(" / ".join("-" if c is None else short(c["end_to_end"]) for c in pair))
            add(f"| {label} | " + " | ".join(cells) + " |")
        add("")
    add("## 5. With every patch")
    add("")
    L += arithmetic_table(results, "patched", towers)
    add("")
    L += preprocessing_table(results, "patched", towers, pre_images)
    add("")
    add("## 6. The end-to-end effect at realistic sizes")
    add("")
    add("Released widths (4 blocks): a 640x480 photograph (resized from `images/sample.jpg`) and the phone photo "
        "(512x600 shown, stored sideways): the output embeddings (max-relative error / lowest per-token cosine) as "
        "released and with every patch. Larger images are left to the token counts below (a 1024x768 image takes "
        "minutes per run through transformers' eager attention on 2 cores).")
    add("")
    add("| tower | image | grid llama.cpp / transformers | as released, FA off | of it, the arithmetic alone "
        "(on llama.cpp's own inputs) | as released, FA on | patched, FA off | patched, FA on |")
    add("|---|---|---|---|---|---|---|---|")
    for t in wide:
        for img in ("vga", "phone"):
            row = []
            grids = ""
            for variant in ("upstream", "patched"):
                for fa in (False, True):
                    c = one(results, variant=variant, tower=t, image=img, mmproj="f32", flash=fa)
                    if c is None:
                        row.append("-")
                        continue
                    if variant == "upstream" and not fa:
                        grids = f"{c['grid_llama']} / {c['grid_ref']}"
                    e = c["end_to_end"]
                    row.append(("inputs differ; " if e["exit"] == 3 else "") + out_cell(e))
                    if variant == "upstream" and not fa:
                        same = c.get("same_inputs")
                        row.append(out_cell(same) if same else "(same inputs)")
            add(f"| {t} | {img} | {grids} | " + " | ".join(row) + " |")
    add("")
    add("Read across a row: the output as released, then what is left of its departure when transformers is given "
        "llama.cpp's own pixels and grid (the arithmetic departures alone, patches 01-05); the rest of the "
        "difference is the preprocessing (patches 06-10). With every patch both are gone.")
    add("")
    add("Merged tokens each runtime gives a photograph of these sizes (llama.cpp's count from mtmd's tokenizer, "
        "transformers' from its smart_resize with the released limits):")
    add("")
    add("| tower | size | llama.cpp as released | llama.cpp patched | transformers |")
    add("|---|---|---|---|---|")
    for t in wide:
        for g in [g for g in results.get("grids", []) if g["tower"] == t and g["variant"] == "upstream"]:
            p = next((x for x in results["grids"] if x["tower"] == t and x["size"] == g["size"] and
                      x["variant"] == "patched"), None)
            add(f"| {t} | {g['size'][0]}x{g['size'][1]} | {g['tokens_llama']} | "
                f"{p['tokens_llama'] if p else '-'} | {g['tokens_ref']} |")
    add("")
    L += f16_and_maintainers(results, commit)
    timings = results.get("timings") or ([results["timing"]] if results.get("timing") else [])
    if timings:
        add("## 7. Speed")
        add("")
        add(f"The median of {timings[0]['repeat']} encodes after a warm one, {timings[0]['threads']} threads, one "
            "session (seconds). qvlearn: NumPy; transformers: sdpa attention, float32. Rounds run while other jobs "
            "loaded the cores vary up to 3x: compare within a table only. The first tower's blocks are SwiGLU; the "
            "second's use the tanh GELU, so the cost of patch 02 (computing GELU instead of reading the float16 "
            "table) shows there, in the patched rows.")
        add("")
    for n, timing in enumerate(timings):
        add(f"**{timing['tower']}**: {timing['patches']} patches ({timing['image'][0]}x{timing['image'][1]})")
        add("")
        add("| runtime | weights | flash attention | median s | fastest s |")
        add("|---|---|---|---|---|")
        for r in timing["rows"]:
            fa = "-" if r["flash"] is None else ("on" if r["flash"] else "off")
            add(f"| {r['runtime']} | {r['mmproj']} | {fa} | {r['median_s']:.2f} | {r['min_s']:.2f} |")
        for r in (results.get("mlx_vlm") or {}).get("timing", []) if n == 0 else []:
            name = f"mlx-vlm {results['mlx_vlm']['versions']['mlx-vlm']}"
            if "error" in r:
                add(f"| {name} | float32 weights; {r['blas']} | - | {r['error']} | - |")
            else:
                add(f"| {name} | float32 weights; {r['blas']} | - | {r['median_s']:.2f} | {r['min_s']:.2f} |")
        mrs_timing = (results.get("mistral_rs") or {}).get("timing") if n == 0 else None
        if mrs_timing:
            what = "the whole request with the image, less the same request without it"
            if "error" in mrs_timing:
                add(f"| {mrs_timing['runtime']} | float32 weights; {what} | - | {mrs_timing['error']} | - |")
            else:
                add(f"| {mrs_timing['runtime']} | float32 weights; {what} | - | {mrs_timing['median_s']:.2f} | "
                    f"{mrs_timing['min_s']:.2f} |")
        add("")
    if mlx:
        L += mlx_sections(results)
    if results.get("mistral_rs"):
        L += mistral_sections(results)
    add("## 10. The name adapters")
    add("")
    add("`qvlearn.tools.llamacpp.LLAMACPP_STAGES`: llama.cpp's tensor names (as `clip.cpp` names them with "
        "`cb(tensor, name, il)`) and the tap stage each becomes; `taps_from_llamacpp` does the mapping and is "
        "tested on its own (`tests/test_llamacpp.py`).")
    add("")
    sys.path.insert(0, str(ROOT))
    from qvlearn.tools.llamacpp import LLAMACPP_STAGES

    add("| llama.cpp | tap stage | families | what it is |")
    add("|---|---|---|---|")
    for name, stage, fams, what in LLAMACPP_STAGES:
        add(f"| `{name}` | `{stage}` | {fams} | {what} |")
    add("")
    from qvlearn.tools.mlxvlm import MLXVLM_STAGES

    add("`qvlearn.tools.mlxvlm.MLXVLM_STAGES`: mlx-vlm's module paths (the submodules the runner wraps, as forward "
        "hooks would) and the tap stage each becomes; `taps_from_mlxvlm` does the mapping (`tests/test_mlxvlm.py`).")
    add("")
    add("| mlx-vlm | tap stage | families | what it is |")
    add("|---|---|---|---|")
    for name, stage, fams, what in MLXVLM_STAGES:
        add(f"| `{name}` | `{stage}` | {fams} | {what} |")
    add("")
    add("## 11. Not checked here")
    add("")
    add("- Other backends (CUDA, Metal, Vulkan): their kernels differ from the CPU's; the harness and the patches "
        "are for the CPU. Quantised mmproj files (q8_0 and below). Videos (mtmd merges two frames as one temporal "
        "pair; not exercised), the Omni models (their audio towers), Qwen3.5-MoE's and Qwen4-Exp's towers (the "
        "same graph as Qwen3.5 in llama.cpp).")
    add("- mistral.rs stage by stage: its vision embeddings are not reachable from its Python API, and a build with "
        "a tap callback needs the Rust crates registry, which this machine cannot reach (section 9 checks it end to "
        "end). Its Qwen3.5 (the Gated DeltaNet text model is not built here).")
    add("- mlx-vlm's preprocessing of videos, and its language side (its `Model` around the `VisionModel`).")
    add("- Real checkpoints: the towers are seeded random weights in the released layouts; what is checked is "
        "the arithmetic and the preprocessing, which do not depend on the weights' values.")
    add("- llama.cpp's text model: mtmd only needs a vocabulary here (`models/ggml-vocab-qwen2.gguf`, vocab-only), so "
        "the LLM side (M-RoPE positions of the image tokens, DeepStack injection) is not covered.")
    add("")
    path.write_text("\n".join(linked(L, path)) + "\n")


FILE_NAME = re.compile(r"(?<![\[\w])`([\w./-]+\.(?:md|py|ipynb|json|png|jpg|txt|toml|cfg))`(?!\]|\()")
NOTEBOOK_NAME = re.compile(r"(?<![\[\w/])\b([Nn]otebook) (\d{1,2})\b(?![\]\d–-])")


def linked(lines: list[str], page: Path) -> list[str]:
    """The report's prose with every repository file named in backticks, and every notebook named by number, as a
    link (the course site's rule), outside code fences and headings."""
    import os

    notebooks = {int(p.name[:2]): p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}

    def rel(target: Path) -> str:
        return os.path.relpath(target, page.resolve().parent).replace(os.sep, "/")

    def file_link(m):
        name = m.group(1)
        return f"[`{name}`]({rel(ROOT / name)})" if (ROOT / name).is_file() else m.group(0)

    def notebook_link(m):
        nb = notebooks.get(int(m.group(2)))
        return f"[{m.group(1)} {m.group(2)}]({rel(nb)})" if nb else m.group(0)

    out, fence = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        if fence or line.lstrip().startswith(("#", "```")):
            out.append(line)
            continue
        parts = re.split(r"(\[[^\]]*\]\([^)]*\))", line)  # existing links stay as they are
        for i in range(0, len(parts), 2):
            parts[i] = FILE_NAME.sub(file_link, parts[i])
            pieces = re.split(r"(\[[^\]]*\]\([^)]*\))", parts[i])
            for j in range(0, len(pieces), 2):
                code = pieces[j].split("`")
                code[::2] = [NOTEBOOK_NAME.sub(notebook_link, c) for c in code[::2]]
                pieces[j] = "`".join(code)
            parts[i] = "".join(pieces)
        out.append("".join(parts))
    return out


SIZE_STAGE = {"01-conv2d-f32-im2col": ("patch_embeds", "blocks.0.norm1"),
              "02-gelu-f32-not-fp16-table": ("blocks.0.mlp.act",), "03-merger-gelu-erf": ("embeddings",),
              "04-flash-attn-f32-kv": ("blocks.0.attn",), "05-bilinear-align-corners-coordinates": ("pos_embeds",)}
"""The stage where each arithmetic departure is sized (the first it reaches; Qwen2/2.5 tap no patch_embeds)."""


def f16_and_maintainers(results, commit: str) -> list[str]:
    """The f16 mmproj in one paragraph, the reproductions with ggml alone, and each patch's scope."""
    L: list[str] = []
    add = L.append
    add("## For llama.cpp's maintainers")
    add("")
    split = results.get("f16_split")
    if split:
        phone = [(one(results, variant=v, tower=t["tower"], image="phone", mmproj="f16", flash=False) or {})
                 .get("end_to_end", {}).get("embeddings_min_cos") for v in ("upstream", "patched") for t in split]
        before = [c for c in phone[:len(split)] if c is not None]
        after = [c for c in phone[len(split):] if c is not None]
        cos = (f" (the phone photo's lowest per-token cosine, f16 mmproj: {min(before):.2f} to {max(before):.2f} as "
               f"released, at least {min(after):.4f} with every patch)") if before and after else ""
        add("**The f16 mmproj, in one paragraph.** Most of what an f16 mmproj loses is its own rounding, which "
            "no patch can give back, and the arithmetic departures above are mostly lost in it; the preprocessing "
            f"departures are the real bugs for its users, since they change the image the model sees{cos}. "
            "With every patch, the "
            "f16 mmproj's output departs from transformers by the amounts in the last column below, which "
            "splits into the rounding of the weights (qvlearn in float32 on the weights rounded to f16 as the "
            "converter rounds them) and ggml's rounding of the activations in its f16 matmuls (llama.cpp against "
            "that run):")
        add("")
        add("| tower | the weights' rounding | ggml's activations | llama.cpp f16, patched, against transformers |")
        add("|---|---|---|---|")
        for r in split:
            add(f"| {r['tower']} | {fmt(r['weights'])} | {fmt(r['activations'])} | {fmt(r['total'])} |")
        add("")
    repro = results["llama_cpp"].get("repro")
    if repro:
        add("**Reproductions with ggml alone.** `tools/conformance/repro/ggml_f32_ops.c` (80 lines, no model, no "
            "mtmd, no qvlearn) builds an f32 `ggml_conv_2d` shaped like the Qwen patch embedding and the f32 "
            "`ggml_gelu` / `ggml_gelu_quick` on the CPU backend and compares each with the same arithmetic in "
            "double precision (max-relative error):")
        add("")
        add("```")
        add("cc -O2 tools/conformance/repro/ggml_f32_ops.c -I<llama.cpp>/ggml/include -L<build>/bin \\")
        add("   -lggml -lggml-base -lggml-cpu -lm -o ggml_f32_ops && ./ggml_f32_ops")
        add("```")
        add("")
        add("| op | as released | with the patches |")
        add("|---|---|---|")
        for op in repro["upstream"]:
            add(f"| `{op}` | {fmt(repro['upstream'][op])} | {fmt(repro['patched'].get(op))} |")
        add("")
    add("**What each patch touches.** A maintainer's first question: which models' code a patch changes, and "
        "whether a change local to the Qwen models would do.")
    add("")
    add("| patch | code it changes, and who else runs it | model-local alternative |")
    add("|---|---|---|")
    for step in results["steps"]:
        scope = SCOPE.get(step["patch"].removesuffix(".patch"))
        if scope:
            add(f"| {step['patch'][:2]} | {scope[0]} | {scope[1]} |")
    add("")
    return L


def departure_sizes(results, k: int, towers) -> list[str]:
    """Departure k's size in each tiny tower: the max-relative error at its stage, with patches 01..k-1 applied
    (flash attention on for 04, whose departure it is)."""
    steps = results["steps"]
    stem = steps[k - 1]["patch"].removesuffix(".patch")
    before = "upstream" if k == 1 else steps[k - 2]["variant"]
    out = []
    for t in towers:
        c = one(results, variant=before, tower=t, image="multiple", mmproj="f32", flash=k == 4)
        at = (c or {}).get("end_to_end", {}).get("at", {})
        stage = next((st for st in SIZE_STAGE.get(stem, ()) if st in at), None)
        if stage:
            out.append(f"{t.removeprefix('tiny-')} {fmt(at[stage])} at `{stage}`")
    return out


def mlx_cases(results, **match):
    return [c for c in results.get("mlx_vlm", {}).get("cases", []) if all(c.get(k) == v for k, v in match.items())]


def mlx_verdict(j: dict) -> str:
    """compare's verdict, with a verdict decided within the noise edge said as such."""
    if j["first"] is None:
        return f"all {j['stages']} within noise"
    note = j.get("first_note", "")
    value = re.search(r"\(([0-9.e+-]+) against", note) or re.search(r"scale error of ([0-9.e+-]+)", note)
    what = f"a scale error of {value.group(1)}" if "scale error" in note and value else f"rel {fmt(j['first_rel'])}"
    if j.get("edge"):
        return f"noise edge: `{j['first']}`, {what}"
    return f"`{j['first']}`, {what}"


def summary_table(results) -> list[str]:
    """A row per runtime and tower: the arithmetic on the same inputs, the preprocessing, and with every patch."""
    lines = ["| runtime | tower | arithmetic as released (same inputs, f32) | preprocessing as released (4 resized, "
             "tied, small or rotated images) | with every patch |", "|---|---|---|---|---|"]
    towers = list(dict.fromkeys(c["tower"] for c in results["cases"]))
    ver = f"llama.cpp {results['llama_cpp']['commit'][:9]}"
    for t in towers:
        up = one(results, variant="upstream", tower=t, image="multiple", mmproj="f32", flash=False)
        pre = [c for c in cases(results, variant="upstream", tower=t, mmproj="f32", flash=False)
               if c["image"] in ("not-multiple", "tie", "small", "phone")]
        differ = [c["image"] for c in pre if c["end_to_end"]["exit"] == 3]
        fixed = cases(results, variant="patched", tower=t, mmproj="f32")
        ok = [c for c in fixed if c["end_to_end"]["first"] is None]
        lines.append(f"| {ver} | {t} | {verdict(up['end_to_end']) if up else '-'} | inputs differ on "
                     f"{len(differ)} of {len(pre)} ({', '.join(differ) or 'none'}) | {len(ok)} of {len(fixed)} f32 "
                     "runs within noise |")
    mlx = results.get("mlx_vlm")
    if mlx:
        ver = f"mlx-vlm {mlx['versions']['mlx-vlm']}"
        for t in dict.fromkeys(c["tower"] for c in mlx["cases"]):
            up = mlx_cases(results, variant="upstream", tower=t, image="multiple")
            pre = mlx_cases(results, variant="upstream", tower=t)
            same = [c for c in pre if c["preprocessing"]["same_grid"]]
            worst = max((c["preprocessing"].get("pixels_max_abs", 0) for c in same), default=0)
            fixed = mlx_cases(results, variant="patched", tower=t)
            ok = [c for c in fixed if c["arithmetic"]["first"] is None or c["arithmetic"].get("edge")]
            config = up[0]["config"]["as_written"] if up else "-"
            cell = mlx_verdict(up[0]["arithmetic"]) if up else "-"
            if config != "loads":
                cell = f"the snapshot's config.json does not load (departure M1); spelled out: {cell}"
            lines.append(f"| {ver} | {t} | {cell} | same grid on {len(same)} of {len(pre)} images, pixels within "
                         f"{fmt(worst)} | {len(ok)} of {len(fixed)} runs within noise or at its edge |")
    mrs = results.get("mistral_rs")
    if mrs:
        ver = f"mistral.rs {mrs['version']}"
        for t in mrs["towers"]:
            if t.get("error"):
                lines.append(f"| {ver} | {t['tower']} | does not run: {t['error']} | - | - |")
                continue
            by = {c["image"]: c for c in t["cases"]}
            m = by.get("multiple", {})
            cell = "-"
            if "logprob_gap" in m:
                times = m["logprob_gap"] / max(m["floor"], t["text_only"]["logprob_gap"])
                cell = (f"end to end: first-token log-probabilities {fmt(m['logprob_gap'])} apart, {times:.0f}x the "
                        f"floor; {'all of it' if m['verdict'].get('explained') else 'part of it'} the mergers' "
                        "tanh GELU (R1)")
            grids = [f"{c['image']} ({c['tokens_mistralrs']} tokens, not {c['tokens_ref']})" for c in t["cases"]
                     if c.get("tokens_mistralrs") is not None and c["tokens_mistralrs"] != c["tokens_ref"]]
            far = [c["image"] for c in t["cases"] if c["image"] != "multiple" and "logprob_gap" in c
                   and c["logprob_gap"] > 3 * max(m.get("logprob_gap", 0), c["floor"])]
            pre = "; ".join(x for x in [f"another grid on {', '.join(grids)}" if grids else "",
                                        f"resized images depart far more ({', '.join(far)})" if far else ""] if x)
            lines.append(f"| {ver} | {t['tower']} | {cell} | {pre or 'as transformers'} | no patched build "
                         "(section 9) |")
        for name, why in mrs.get("not_run", {}).items():
            lines.append(f"| {ver} | {name} | not run: {why} | - | - |")
    return lines


MLX_DEPARTURES = {
    "01-qwen3-vision-patch-size-default": dict(
        title="A Qwen3 vision config without `patch_size` gets 14, not 16",
        where=[("mlx_vlm/models/qwen3_vl/config.py", 39, "VisionConfig.patch_size")],
        cause="mlx-vlm's `VisionConfig` (used by Qwen3-VL and, through `qwen3_5/vision.py`, Qwen3.5) defaults "
              "`patch_size` to 14, the second generation's; transformers' `Qwen3VLVisionConfig` and "
              "`Qwen3_5VisionConfig` default it to 16. A config.json that leaves the key out (qvlearn's presets "
              "leave out every key at transformers' default; transformers' own `save_pretrained` writes it) builds "
              "a 14-pixel patch embedding, and the strict load stops: `Expected shape (64, 2, 14, 14, 3) but "
              "received shape (64, 2, 16, 16, 3) for parameter patch_embed.proj.weight`. A config that spells every "
              "key out loads and runs.",
        fix="The default of 16.",
        families="Qwen3-VL, Qwen3.5", stage="the load (no stage runs)"),
    "02-position-table-sample-points": dict(
        title="The position table's sample points come from `mx.linspace`",
        where=[("mlx_vlm/models/qwen3_vl/vision.py", 305, "VisionModel.fast_pos_embed_interpolate")],
        cause="The bilinear sample points of the learned table are `mx.linspace(0, side - 1, n)`; transformers (and "
              "qvlearn's spec) compute `i * (side - 1) / (n - 1)` in float32. The two differ by one float32 ulp at "
              "about a third of the points once the table is wider than the tiny towers' (48 rows for Qwen3-VL-8B: "
              "5 of 16 points for a 16-patch side, 13 of 42 for 42), so the interpolated table carries a systematic "
              "scale error of about 1e-6, 10x float32 noise. The output embeddings stay within noise.",
        fix="The sample points as transformers computes them (two lines).",
        families="Qwen3-VL, Qwen3.5 (released widths; the tiny towers' 8-row table is exact)",
        stage="`pos_embeds`"),
}


def mlx_sections(results) -> list[str]:
    mlx = results["mlx_vlm"]
    version = mlx["versions"]["mlx-vlm"]
    towers = list(dict.fromkeys(c["tower"] for c in mlx["cases"]))
    images = list(dict.fromkeys(c["image"] for c in mlx["cases"]))
    L = ["## 8. mlx-vlm, stage by stage", ""]
    add = L.append
    add(f"mlx-vlm {version} (mlx {mlx['versions']['mlx']}, CPU). `tools/conformance/mlxvlm_runner.py` builds "
        "mlx-vlm's own `VisionModel` (`mlx_vlm/models/<family>/vision.py`) from the snapshot's vision config, loads "
        "the `visual.*` weights through the model's own `sanitize`, strictly, and wraps the submodules of section "
        "10 in a callable that keeps their output (MLX has no forward hooks; nothing in mlx-vlm is changed). Each "
        "tower encodes transformers' pixel_values and grid, so that the arithmetic is judged alone; mlx-vlm's own "
        "preprocessing (`mlx_vlm.utils.load_image` and its numpy `Qwen3VLImageProcessor`, which every Qwen-VL "
        "family's processor uses, with the kwargs it reads from preprocessor_config.json) is judged apart. "
        "The tiny towers run on the BLAS the mlx wheel ships (a reference BLAS); the released widths on Debian's "
        "OpenBLAS, preloaded, since the reference BLAS takes many minutes per encode there (section 7).")
    add("")
    add("A verdict at the **noise edge** is one that a stage within a factor of 3 of its limit decides: on another "
        "machine float32 noise can move it across, so `make conformance-quick` does not compare it.")
    add("")
    def grid(cell, variant="upstream"):
        """A tower x image table of the mlx-vlm runs, ``cell(case)`` in each cell."""
        rows = ["| tower | " + " | ".join(images) + " |", "|---|" + "---|" * len(images)]
        for t in towers:
            cells = [mlx_cases(results, variant=variant, tower=t, image=img) for img in images]
            rows.append(f"| {t} | " + " | ".join(cell(c[0]) if c else "-" for c in cells) + " |")
        return rows + [""]

    for variant, label in (("upstream", "as released"), ("patched", "with every patch")):
        add(f"**The arithmetic, {label}** (the first stage beyond float32 noise, then the output's max-relative "
            "error / lowest per-token cosine):")
        add("")
        L.extend(grid(lambda c: f"{mlx_verdict(c['arithmetic'])}; out {out_cell(c['arithmetic'])}", variant))
    add("**The config as written** (the snapshot's own vision_config, which leaves to the defaults what qvlearn's "
        "presets leave to transformers'):")
    add("")
    add("| tower | as released | with every patch |")
    add("|---|---|---|")
    for t in towers:
        cells = []
        for variant in ("upstream", "patched"):
            c = mlx_cases(results, variant=variant, tower=t, image=images[0])
            cells.append("-" if not c else c[0]["config"]["as_written"].replace("|", "/"))
        add(f"| {t} | " + " | ".join(cells) + " |")
    add("")
    add("**The preprocessing** (mlx-vlm's processor on the image file against transformers' "
        "`Qwen2VLImageProcessorPil`: the grids, and where they agree the largest pixel difference):")
    add("")

    def preprocessing_cell(case):
        p = case["preprocessing"]
        return (f"grid {p['grid_mlx']}, pixels within {fmt(p['pixels_max_abs'])}" if p["same_grid"] else
                f"grid {p['grid_mlx']} against {p['grid_ref']}")

    L.extend(grid(preprocessing_cell))
    worst = max(c["preprocessing"].get("pixels_max_abs", 0) for c in mlx["cases"])
    add(f"The grids agree on every image (smart_resize with Python's `round`, the EXIF orientation applied by "
        f"`load_image`), and the pixels within {fmt(worst)}: the same formula, rounded in another place. mlx-vlm "
        "multiplies by 1/255 in float32; transformers' `rescale` does it in float64 and rounds once; both then "
        "normalise in float32. Notebook 15 rebuilds both runtimes' pixel_values bit for bit from the image in "
        "NumPy.")
    add("")
    add("### The departures")
    add("")
    for k, name in enumerate(mlx["patches"], 1):
        d = MLX_DEPARTURES[name.removesuffix(".patch")]
        add(f"#### M{k}. {d['title']}")
        add("")
        add("- **Where** (in the pinned wheel): " + "; ".join(f"`{p}:{line}`, `{fn}`" for p, line, fn in d["where"])
            + ".")
        add(f"- **Cause**: {d['cause']}")
        add(f"- **Families**: {d['families']}; **first stage**: {d['stage']}.")
        add(f"- **Fix** (`tools/conformance/patches-mlxvlm/{name}`): {d['fix']}")
        add("")
    add("Left as they are: on the released widths, a few runs (Qwen2.5-VL's norms and MLP, Qwen3-VL's DeepStack "
        "mergers) carry a systematic scale of 1-2e-7 — one float32 ulp — against the scale rule's 1e-7 limit: "
        "verdicts at the noise edge, not departures.")
    add("")
    return L


def mistral_sections(results) -> list[str]:
    mrs = results["mistral_rs"]
    L = ["## 9. mistral.rs, end to end", ""]
    add = L.append
    add(f"mistral.rs {mrs['version']} (the `mistralrs` wheel, pinned with its sha256 in "
        "`tools/conformance/mistralrs-requirements.txt`) loads only a whole VLM, and its vision tower cannot be run "
        "alone from Python. `tools/conformance/mistralrs_e2e.py` makes each tiny tower a whole VLM (qvlearn's seeded "
        "tower; a seeded text model as wide as its output, one layer per DeepStack feature; a byte-level tokenizer "
        "with Qwen's special tokens at their ids; a chat template) and asks both runtimes for the first token of one "
        "prompt with the image, in float32 with an f32 KV cache (`MISTRALRS_CPU_KV_F32=1`), with the log-"
        "probabilities of the whole vocabulary. Each figure is the largest |log p - log p_ref| over the vocabulary. "
        "The floors: transformers with qvlearn's tower output swapped in (another float32 tower, the same LLM), and "
        "the same prompt without an image (the two LLMs alone). The suspect: transformers with a tower that has the "
        "departure the source points at (qvlearn's bug zoo) swapped in.")
    add("")
    add("| tower | text only | image | image tokens mistral.rs / transformers | mistral.rs against transformers | "
        "floor (qvlearn's tower) | against transformers with the suspect |")
    add("|---|---|---|---|---|---|---|")
    for t in mrs["towers"]:
        if t.get("error"):
            add(f"| {t['tower']} | {t['error']} | - | - | - | - | - |")
            continue
        for c in t["cases"]:
            tokens = f"{c.get('tokens_mistralrs', '-')} / {c.get('tokens_ref', '-')}"
            if "logprob_gap" in c:
                add(f"| {t['tower']} | {fmt(t['text_only']['logprob_gap'])} | {c['image']} | {tokens} | "
                    f"{fmt(c['logprob_gap'])} | {fmt(c['floor'])} | {fmt(c['gap_to_suspect'])} ({c['suspect']}) |")
            else:
                add(f"| {t['tower']} | {fmt(t['text_only']['logprob_gap'])} | {c['image']} | {tokens} | "
                    f"{c.get('error', 'another grid: not comparable')} | - | - |")
    add("")
    add("**What the folder must say.** The snapshot as qvlearn writes it (the vision config left to transformers' "
        "defaults), then as transformers spells it out:")
    add("")
    add("| tower | as written | spelled out by transformers |")
    add("|---|---|---|")
    for t in mrs["towers"]:
        add(f"| {t['tower']} | {t.get('as_written', '-')} | {t.get('spelled_by_transformers', '-')} |")
    add("")
    add("### The departures")
    add("")
    add("Located in mistral.rs's public source: EricLBuehler/mistral.rs at commit 9e922623f (version 0.9.2 in its "
        "Cargo.toml, the newest this machine could read; the wheel is 0.9.5, built from a later tree, so the "
        "lines may have moved). A "
        "patched build cannot be made here (the Rust crates registry is unreachable), so a cause is shown by "
        "experiment instead: transformers with a tower that has it.")
    add("")
    add("- **R1. The mergers' GELU is the tanh form.** Every Qwen-VL merger calls candle's `Tensor::gelu()`, the "
        "tanh approximation (`mistralrs-core/src/vision_models/qwen2vl/vision.rs:278`, `qwen2_5_vl/vision.rs:306`, "
        "`qwen3_vl/vision.rs:325`); transformers' mergers use `nn.GELU()`, the exact form (candle's `gelu_erf()`). "
        "With that departure in the tower transformers runs, Qwen3-VL's first-token distribution agrees with "
        "mistral.rs's to the floor: it is the whole arithmetic difference there. For Qwen2-VL and Qwen2.5-VL it "
        "is part of it; the rest is not located from outside (the tower's taps would be needed).")
    add("- **R2. smart_resize rounds a tie away from zero** (Rust's `f64::round`, "
        "`qwen2vl/inputs_processor.rs:1392`, `qwen2_5_vl/inputs_processor.rs:893`, "
        "`qwen3_vl/inputs_processor.rs:1539`): the tie image gets "
        "more tokens than transformers gives it (the table above), as in llama.cpp (departure 7).")
    ratios = []
    for t in mrs["towers"]:
        by = {c["image"]: c for c in t.get("cases", []) if "logprob_gap" in c}
        for img in ("not-multiple", "small"):
            if "multiple" in by and img in by and by[img]["logprob_gap"] > 3 * by["multiple"]["logprob_gap"]:
                ratios.append(by[img]["logprob_gap"] / by["multiple"]["logprob_gap"])
    span = f" {min(ratios):.0f} to {max(ratios):.0f} times more" if ratios else " more"
    add("- **R3. The resize is the image crate's Catmull-Rom** (`resize_exact(..., FilterType::CatmullRom)`, "
        "`qwen2vl/inputs_processor.rs:1439`), not Pillow's bicubic, which transformers' processor runs: the images "
        "that are resized (not-multiple in every family; small in Qwen3-VL, which scales it up to its minimum) "
        f"depart{span} than the one that is not. That the resize is the whole of it cannot be shown from outside "
        "(mistral.rs's pixel values are not reachable either).")
    add("- **R4. transformers' own spelling of QuickGELU is refused.** A Qwen2-VL vision config that says "
        "`\"hidden_act\": \"quick_gelu\"` (what transformers writes) fails to load: mistral.rs's serde enum spells it "
        "`quickgelu`. A Qwen2-VL vision config must also spell out `patch_size` (mistral.rs has no default for "
        "it), and a Qwen3-VL config.json needs `tie_word_embeddings` at its top.")
    add("")
    return L


def short(j: dict) -> str:
    if j["first"] is None:
        return "ok"
    return ("inputs: " if j["exit"] == 3 else "") + f"`{j['first']}`"


if __name__ == "__main__":
    results = json.loads((ROOT / "docs" / "conformance" / "results.json").read_text())
    write_report(results, ROOT / "docs" / "conformance.md")
    print("wrote docs/conformance.md")
    sys.exit(0)
