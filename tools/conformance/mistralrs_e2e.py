"""make conformance, mistral.rs: end to end, through the first token's log-probabilities.

Called by conformance.py (``--runtime mistral.rs`` runs this part alone; the file is not named mistralrs.py, which
would hide the package from the runner beside it). mistral.rs (the ``mistralrs`` wheel, pinned
by version and sha256 in mistralrs-requirements.txt) only loads a whole VLM, and its vision tower is not reachable
from Python; a patched build needs the Rust crates registry. So each tiny tower becomes a whole VLM: qvlearn's seeded
tower, a seeded one-layer text model as wide as the tower's output (Qwen2 for Qwen2-VL and Qwen2.5-VL, Qwen3 with one
layer per DeepStack feature for Qwen3-VL), a byte-level tokenizer with Qwen's special tokens at their ids, a chat
template and a preprocessor_config.json. Both runtimes then answer one prompt with an image, and the whole
distribution of the first token is compared (max |log p - log p_ref| over the vocabulary):

- transformers on the same VLM is the reference;
- transformers with qvlearn's tower output swapped in is the noise floor (another float32 tower, the same LLM);
- transformers with a tower that carries a suspected departure (qvlearn's bug zoo, ``qvlearn.tools.bugs``) swapped
  in tests a cause: if mistral.rs then agrees to the floor, that departure is the whole difference;
- the same prompt without an image checks the text path alone.

The prompt's token count gives the image's token count (its grid), and so mistral.rs's preprocessing where it can be
observed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conformance import (
    TOWERS,
    WORK,
    Failed,
    image_file,
    log,
    pictures,
    sh,
    transformers_inputs,
    vision_of,
    write_preprocessor_config,
)

HERE = Path(__file__).resolve().parent
SITE = WORK / "mistralrs-site"
REQUIREMENTS = HERE / "mistralrs-requirements.txt"
RUNNER = HERE / "mistralrs_runner.py"
VERSION = "0.9.5"
ARCH = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5VL", "qwen3_vl": "Qwen3VL"}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
           "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
FIRST_SPECIAL = 151643
IMAGE_PAD = 151655
VOCAB = 151936
TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
            "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == "
            "'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
TEXT = "Describe."
IMAGES = ("multiple", "not-multiple", "tie", "small")
SPELLING = {"quick_gelu": "quickgelu"}
"""transformers' activation names that mistral.rs spells otherwise (its serde enum)."""


def install() -> str:
    stamp = SITE / ".installed"
    if not (stamp.is_file() and stamp.read_text() == REQUIREMENTS.read_text()):
        log(f"installing mistralrs {VERSION} (the pinned wheel, sha256-checked) into build/conformance/mistralrs-site")
        sh([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--upgrade",
            "--target", SITE, "-r", REQUIREMENTS])
        stamp.write_text(REQUIREMENTS.read_text())
    return VERSION


def write_tokenizer(out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), FIRST_SPECIAL)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    if tok.token_to_id("<|image_pad|>") != IMAGE_PAD:
        raise Failed("the tokenizer's <|image_pad|> is not at Qwen's id")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "chat_template": TEMPLATE, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False, "model_max_length": 32768},
        indent=1) + "\n")


def write_vlm(tower, seed: int = 0, tied: bool = False) -> Path:
    """The tower as a whole VLM in the released layout, its vision_config spelled out by transformers; ``tied``:
    the output projection is the embedding (half the size of a wide tower's text weights, for the timing)."""
    from safetensors.numpy import load_file, save_file
    from transformers import AutoConfig

    from qvlearn.weights import save_random_checkpoint

    out = WORK / "vlm" / (tower.name.replace("/", "-") + ("-tied" if tied else ""))
    if (out / "tokenizer.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    vision = vision_of(tower)
    family = vision.family
    qwen3 = family == "qwen3_vl"
    save_random_checkpoint(out, tower.preset, dtype="float32", prefix="model.visual." if qwen3 else "visual.",
                           **tower.overrides)
    width, heads, kv, inter = vision.out_hidden_size, 2, 1, 128
    head_dim = width // heads
    layers = max(1, len(vision.deepstack_visual_indexes))
    rng = np.random.default_rng(seed)

    def r(*shape, s=0.05):
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= np.float32(s)
        return x

    w = load_file(out / "model.safetensors")
    lm = "model.language_model." if qwen3 else "model."
    w[lm + "embed_tokens.weight"] = r(VOCAB, width, s=0.5)
    for i in range(layers):
        p = f"{lm}layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + r(width, s=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + r(width, s=0.1)
        for name, rows in (("q", heads * head_dim), ("k", kv * head_dim), ("v", kv * head_dim)):
            w[p + f"self_attn.{name}_proj.weight"] = r(rows, width, s=width ** -0.5)
            if not qwen3:
                w[p + f"self_attn.{name}_proj.bias"] = r(rows)
        if qwen3:
            w[p + "self_attn.q_norm.weight"] = 1 + r(head_dim, s=0.1)
            w[p + "self_attn.k_norm.weight"] = 1 + r(head_dim, s=0.1)
        w[p + "self_attn.o_proj.weight"] = r(width, heads * head_dim, s=width ** -0.5)
        w[p + "mlp.gate_proj.weight"] = r(inter, width, s=width ** -0.5)
        w[p + "mlp.up_proj.weight"] = r(inter, width, s=width ** -0.5)
        w[p + "mlp.down_proj.weight"] = r(width, inter, s=inter ** -0.5)
    w[lm + "norm.weight"] = 1 + r(width, s=0.1)
    if not tied:
        w["lm_head.weight"] = r(VOCAB, width, s=3 * width ** -0.5)
    save_file(w, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    section = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]
    section[0] += head_dim // 2 - sum(section)
    text = {"hidden_size": width, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "vocab_size": VOCAB, "max_position_embeddings": 32768, "hidden_act": "silu",
            "tie_word_embeddings": tied, "bos_token_id": FIRST_SPECIAL, "eos_token_id": FIRST_SPECIAL + 2,
            "attention_bias": False, "attention_dropout": 0.0, "sliding_window": None, "use_sliding_window": False,
            "rope_scaling": {"rope_type": "default", "type": "mrope", "mrope_section": section,
                             **({"mrope_interleaved": True} if qwen3 else {})}}
    if qwen3:
        config["text_config"] = {**text, "model_type": "qwen3_vl_text"}
        config["tie_word_embeddings"] = tied  # mistral.rs reads it at the top for Qwen3-VL
    else:  # Qwen2-VL and Qwen2.5-VL: the text fields at the top of config.json, as released
        config.update(text)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    spelled = AutoConfig.from_pretrained(out).vision_config.to_dict()
    keep = {k: v for k, v in spelled.items() if k not in ("transformers_version", "architectures", "dtype",
                                                          "torch_dtype", "output_attentions", "output_hidden_states",
                                                          "return_dict", "id2label", "label2id", "_name_or_path",
                                                          "chunk_size_feed_forward", "is_encoder_decoder",
                                                          "problem_type", "tie_word_embeddings")}
    config["qvlearn_vision_config_as_written"] = config["vision_config"]
    config["vision_config"] = {**keep, "model_type": config["vision_config"]["model_type"]}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    write_preprocessor_config(out, vision)
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": FIRST_SPECIAL, "do_sample": False,
                                                            "eos_token_id": [FIRST_SPECIAL + 2]}) + "\n")
    write_tokenizer(out)
    return out


def variant_dir(vlm: Path, name: str, edit) -> Path:
    """A copy of the VLM's folder (weights linked) with its config.json edited."""
    out = vlm.parent / f"{vlm.name}-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in vlm.iterdir():
        (out / f.name).symlink_to(f.resolve()) if f.name != "config.json" else None
    config = json.loads((vlm / "config.json").read_text())
    edit(config)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def run_mistralrs(snapshot: Path, family: str, cases: list[dict], name: str) -> list[dict]:
    job = {"snapshot": str(snapshot), "arch": ARCH[family], "vocab_size": VOCAB, "cases": cases}
    path = WORK / "mistralrs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=1))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]),
           "MISTRALRS_CPU_KV_F32": "1", "RUST_LOG": "error"}
    proc = subprocess.run([sys.executable, RUNNER, path], capture_output=True, text=True, env=env)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        return [{"error": next((ln for ln in reversed(tail) if "Error" in ln), tail[-1] if tail else "failed")}
                for _ in cases]
    return [json.loads(Path(c["out"]).read_text()) for c in cases]


def prompt_ids(vlm: Path, n_image: int | None) -> list[int]:
    """The templated prompt as both runtimes see it: the placeholder expanded to the image's tokens (none: no
    image, no placeholder)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vlm / "tokenizer.json"))
    body = (PLACEHOLDER.replace("<|image_pad|>", "<|image_pad|>" * n_image) if n_image is not None else "") + TEXT
    return tok.encode(f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).ids


_MODELS: dict = {}


def reference_logprobs(vlm: Path, ids: list[int], pv=None, grid=None, swap=None) -> np.ndarray:
    """transformers' log-probabilities of the first token; ``swap``: (embeddings, [deepstack...]) put in place of
    the tower's output."""
    import torch
    from transformers import AutoModelForImageTextToText

    if vlm not in _MODELS:
        _MODELS.clear()
        _MODELS[vlm] = AutoModelForImageTextToText.from_pretrained(vlm, dtype=torch.float32).eval()
    model = _MODELS[vlm]
    handle = None
    if swap is not None:
        def hook(module, args, output):
            output.pooler_output = torch.as_tensor(swap[0])
            if swap[1]:
                output.deepstack_features = [torch.as_tensor(d) for d in swap[1]]
            return output

        handle = model.model.visual.register_forward_hook(hook)
    kwargs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if pv is not None:
        kwargs.update(pixel_values=torch.as_tensor(pv), image_grid_thw=torch.as_tensor(np.asarray(grid).reshape(1, 3)),
                      mm_token_type_ids=torch.tensor([[1 if i == IMAGE_PAD else 0 for i in ids]]))
    try:
        with torch.inference_mode():
            logits = model(**kwargs).logits[0, -1].double()
    finally:
        if handle is not None:
            handle.remove()
    return torch.log_softmax(logits, -1).numpy()


def tower_output(vlm: Path, pv, grid, bug: str | None = None):
    """qvlearn's tower output (embeddings, DeepStack features), optionally with a bug of the zoo in it."""
    import qvlearn
    from qvlearn.tools import bugs

    encoder = qvlearn.load_encoder(vlm, **({"kernels": bugs.kernels(bug)} if bug else {}))
    stages = ["embeddings"] + (["deepstack.*"] if encoder.config.deepstack_visual_indexes else [])
    trace = encoder.trace(pv, grid, to_numpy=True, stages=stages)
    return trace["embeddings"], [trace[k] for k in sorted(k for k in trace if k.startswith("deepstack."))]


def distance(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


SUSPECT = {"qwen2_vl": "merger-gelu-tanh", "qwen2_5_vl": "merger-gelu-tanh", "qwen3_vl": "merger-gelu-tanh-qwen3"}
"""The departure the source points at (every merger of mistral.rs's Qwen-VL towers calls candle's ``gelu()``, the
tanh form), tested by swapping a tower that has it into transformers."""


def run_tower(tower) -> dict:
    vision = vision_of(tower)
    family = vision.family
    vlm = write_vlm(tower)
    name = tower.name.replace("/", "-")
    out = {"runtime": "mistral.rs", "tower": tower.name, "family": family, "cases": []}
    # 1. the folder as qvlearn writes it (vision_config left to the defaults), then as transformers spells it
    as_written = variant_dir(vlm, "as-written", lambda c: c.update(vision_config=c["qvlearn_vision_config_as_written"]))
    probe = [{"image": None, "text": TEXT, "out": str(WORK / "mistralrs" / f"{name}-probe.json")}]
    out["as_written"] = run_mistralrs(as_written, family, probe, f"{name}-as-written")[0].get("error", "loads")
    out["spelled_by_transformers"] = run_mistralrs(vlm, family, probe, f"{name}-spelled")[0].get("error", "loads")

    runnable = variant_dir(vlm, "mistralrs", _respell) if out["spelled_by_transformers"] != "loads" else vlm
    out["respelled"] = sorted({v for v in json.loads((vlm / "config.json").read_text())["vision_config"].values()
                               if isinstance(v, str) and v in SPELLING})
    patch = vision.kind.preprocessing["patch_size"]
    pics = [p for p in pictures(patch) if p.name in IMAGES]
    cases = [{"image": None, "text": TEXT, "out": str(WORK / "mistralrs" / f"{name}-text.json")}]
    cases += [{"image": str(image_file(p)), "text": PLACEHOLDER + TEXT,
               "out": str(WORK / "mistralrs" / f"{name}-{p.name}.json")} for p in pics]
    answers = run_mistralrs(runnable, family, cases, f"{name}-run")
    base = len(prompt_ids(vlm, 0))  # the prompt's tokens but the image's pads
    text = answers[0]
    if "error" in text:
        out["error"] = text["error"]
        return out
    ref = reference_logprobs(vlm, prompt_ids(vlm, None))
    got = np.full(VOCAB, np.nan)
    for i, lp in text["logprobs"]:
        got[i] = lp
    out["text_only"] = {"logprob_gap": distance(got, ref), "vocab": int(np.sum(~np.isnan(got)))}
    log(f"  mistral.rs {tower.name}: text only, max |d log p| {out['text_only']['logprob_gap']:.1e}")
    for pic, answer in zip(pics, answers[1:]):
        case = {"runtime": "mistral.rs", "tower": tower.name, "image": pic.name}
        if "error" in answer:
            case["error"] = answer["error"]
            out["cases"].append(case)
            continue
        pv, grid = transformers_inputs(Path(cases[1 + pics.index(pic)]["image"]), family)
        n_ref = int(np.prod(grid)) // 4
        case.update(tokens_mistralrs=answer["prompt_tokens"] - base, tokens_ref=n_ref)
        if case["tokens_mistralrs"] == n_ref:
            ids = prompt_ids(vlm, n_ref)
            ref = reference_logprobs(vlm, ids, pv, grid)
            got = np.full(VOCAB, np.nan)
            for i, lp in answer["logprobs"]:
                got[i] = lp
            floor = reference_logprobs(vlm, ids, pv, grid, swap=tower_output(vlm, pv, grid))
            suspect = reference_logprobs(vlm, ids, pv, grid, swap=tower_output(vlm, pv, grid, SUSPECT[family]))
            case.update(logprob_gap=distance(got, ref), floor=distance(floor, ref),
                        suspect=SUSPECT[family], gap_to_suspect=distance(got, suspect),
                        suspect_gap=distance(suspect, ref), suspect_floor=distance(floor, ref))
            limit = 10 * max(case["floor"], out["text_only"]["logprob_gap"])
            margin = case["logprob_gap"] / limit
            case["verdict"] = {"exit": int(margin > 1), "first": "logprobs" if margin > 1 else None,
                               "edge": f"logprobs at {margin:.2f} of its limit" if 1 / 3 <= margin <= 3 else None,
                               "limit": limit, "explained": case["gap_to_suspect"] <= limit}
            log(f"  mistral.rs {tower.name} {pic.name}: max |d log p| {case['logprob_gap']:.1e} (floor "
                f"{case['floor']:.1e}); against transformers with {SUSPECT[family]}: {case['gap_to_suspect']:.1e}")
        else:
            case["verdict"] = {"exit": 3, "first": "grid_thw", "edge": None}
            log(f"  mistral.rs {tower.name} {pic.name}: {case['tokens_mistralrs']} image tokens, transformers {n_ref}")
        out["cases"].append(case)
    return out


def timing(tower, size, repeat: int = 3) -> dict:
    """mistral.rs on the timing tower and image: the request with the image, less the same request without it (the
    text model's share), median of ``repeat`` after a warm one."""
    from conformance import Picture

    vlm = write_vlm(tower, tied=True)
    family = vision_of(tower).family
    runnable = vlm
    if run_mistralrs(vlm, family, [{"image": None, "text": TEXT, "out": str(WORK / "mistralrs" / "t-probe.json")}],
                     "timing-probe")[0].get("error"):
        runnable = variant_dir(vlm, "mistralrs", _respell)
    from PIL import Image

    image = image_file(Picture("timing", size, "timing"))
    images = []
    for k in range(repeat + 1):  # one pixel changed in each: mistral.rs caches an image it has encoded
        pixels = np.asarray(Image.open(image).convert("RGB")).copy()
        pixels[0, 0] = (k * 37 % 256, 0, 0)
        images.append(str(WORK / "mistralrs" / f"timing-{k}.png"))
        Image.fromarray(pixels).save(images[-1])
    cases = [{"image": images[0], "images": images, "text": PLACEHOLDER + TEXT,
              "out": str(WORK / "mistralrs" / "t-image.json"), "repeat": repeat},
             {"image": None, "text": TEXT, "out": str(WORK / "mistralrs" / "t-text.json"), "repeat": repeat}]
    with_image, text = run_mistralrs(runnable, family, cases, "timing")
    if "error" in with_image or "error" in text:
        return {"runtime": f"mistral.rs {VERSION}", "error": with_image.get("error") or text.get("error")}
    med = float(np.median(with_image["seconds"]) - np.median(text["seconds"]))
    low = float(min(with_image["seconds"]) - min(text["seconds"]))
    log(f"  mistral.rs {VERSION}: {med:.2f} s (the request with the image, less the text alone)")
    return {"runtime": f"mistral.rs {VERSION}", "median_s": med, "min_s": low, "image_tokens":
            with_image["prompt_tokens"] - len(prompt_ids(vlm, 0))}


def _respell(config):
    vc = config["vision_config"]
    for k, v in list(vc.items()):
        if isinstance(v, str) and v in SPELLING:
            vc[k] = SPELLING[v]


def run(quick: bool) -> dict:
    version = install()
    towers = [t for t in TOWERS if t.tiny and vision_of(t).family in ARCH]
    log(f"mistral.rs {version}: " + ", ".join(t.name for t in towers))
    rows = [run_tower(t) for t in towers]
    hashes = [ln.split("--hash=")[1] for ln in REQUIREMENTS.read_text().splitlines() if "--hash=" in ln]
    out = {"version": version, "hashes": hashes, "towers": rows,
           "not_run": {t.name: "its text model (Gated DeltaNet layers) is not built here" for t in TOWERS
                       if t.tiny and vision_of(t).family not in ARCH}}
    if not quick:
        from conformance import TIMING_IMAGE, TIMING_TOWER  # noqa: PLC0415

        out["timing"] = timing(TIMING_TOWER, TIMING_IMAGE)
    return out
