"""docs/conformance.md from docs/conformance/results.json (tools/conformance/conformance.py writes both).

    python tools/conformance/report.py     # the report again from the committed results, without a run
"""

from __future__ import annotations

import json
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
              "rounding (about 1e-3 relative at the attention's output).",
        fix="Keep k and v in f32 (the CPU kernel takes them; the accumulation is f32 already).",
        families="all four (flash attention on)", stage="`blocks.0.attn`",
        upstream="No report found.",
        report="With `--flash-attn on`, `clip_graph::build_attn` casts k/v to f16, which puts ~1e-3 relative error "
               "into every vision block's attention on CPU even with an f32 mmproj; dropping the two casts makes "
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


def link(commit: str, path: str) -> str:
    return f"[`{path}`]({SOURCE.format(commit=commit, path=path)})"


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
    add("# Conformance: llama.cpp's Qwen-VL vision towers, stage by stage")
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
    add("## Summary")
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
    add("make conformance")
    add("```")
    add("")
    add(f"This fetches the pinned source (sha256-checked), builds the CPU targets it needs (ggml, llama, mtmd: "
        f"{results['build_s']:.0f} s here; about 2 minutes on 2 cores from nothing, the targets alone, not the "
        "19 minutes of a whole build), builds the harness, writes and converts the snapshots, runs every case once "
        f"as released and once after each patch, times the encoders, and writes this file: "
        f"{results['total_s'] / 60:.0f} minutes in all on this machine. It is not part of `make test`. "
        "Everything but this report, `docs/conformance/results.json` and the tiny towers' tap files "
        "(`docs/conformance/taps/`, read by notebook 15) stays in `build/conformance/`.")
    add("")
    add("## 1. The arithmetic, as released")
    add("")
    add("Images that need no resize (multiples of the patch factor), so the inputs are the same and every "
        "difference is arithmetic. Each cell: the first stage beyond float32 noise with its max-relative error "
        "(and how many times the noise floor of that stage), then the output embeddings' max-relative error / the "
        "lowest per-token cosine.")
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
    for k, step in enumerate(steps, 1):
        stem = step["patch"].removesuffix(".patch")
        d = DEPARTURES[stem]
        add(f"### {k}. {d['title']}")
        add("")
        add("- **Where**: " + "; ".join(f"{link(commit, p)}, `{fn}`" if " " not in fn or "(" in fn else
                                       f"{link(commit, p)}, {fn}" for p, fn in d["where"]) + ".")
        add(f"- **Cause**: {d['cause']}")
        add(f"- **Families**: {d['families']}; **first stage**: {d['stage']}.")
        add(f"- **Fix** (`tools/conformance/patches/{step['patch']}`): {d['fix']}")
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
    add("| tower | image | grid llama.cpp / transformers | as released, FA off | as released, FA on | "
        "patched, FA off | patched, FA on |")
    add("|---|---|---|---|---|---|---|")
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
            add(f"| {t} | {img} | {grids} | " + " | ".join(row) + " |")
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
    timing = results.get("timing")
    if timing:
        add("## 7. Speed")
        add("")
        add(f"{timing['tower']}: {timing['patches']} patches ({timing['image'][0]}x{timing['image'][1]}), "
            f"{timing['threads']} threads, the median of {timing['repeat']} encodes after a warm one, one session "
            "(seconds). qvlearn: NumPy; transformers: sdpa attention, float32. Rounds run while other jobs loaded "
            "the cores vary up to 3x: compare within this table only.")
        add("")
        add("| runtime | weights | flash attention | median s | fastest s |")
        add("|---|---|---|---|---|")
        for r in timing["rows"]:
            fa = "-" if r["flash"] is None else ("on" if r["flash"] else "off")
            add(f"| {r['runtime']} | {r['mmproj']} | {fa} | {r['median_s']:.2f} | {r['min_s']:.2f} |")
        add("")
    add("## 8. The name adapter")
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
    add("## 9. Not checked here")
    add("")
    add("- Other backends (CUDA, Metal, Vulkan): their kernels differ from the CPU's; the harness and the patches "
        "are for the CPU. Quantised mmproj files (q8_0 and below). Videos (mtmd merges two frames as one temporal "
        "pair; not exercised), the Omni models (their audio towers), Qwen3.5-MoE's and Qwen4-Exp's towers (the "
        "same graph as Qwen3.5 in llama.cpp).")
    add("- Real checkpoints: the towers are seeded random weights in the released layouts; what is checked is "
        "the arithmetic and the preprocessing, which do not depend on the weights' values.")
    add("- The text model: mtmd only needs a vocabulary here (`models/ggml-vocab-qwen2.gguf`, vocab-only), so "
        "the LLM side (M-RoPE positions of the image tokens, DeepStack injection) is not covered.")
    add("")
    path.write_text("\n".join(L) + "\n")


def short(j: dict) -> str:
    if j["first"] is None:
        return "ok"
    return ("inputs: " if j["exit"] == 3 else "") + f"`{j['first']}`"


if __name__ == "__main__":
    results = json.loads((ROOT / "docs" / "conformance" / "results.json").read_text())
    write_report(results, ROOT / "docs" / "conformance.md")
    print("wrote docs/conformance.md")
    sys.exit(0)
