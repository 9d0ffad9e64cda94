"""The reference: transformers' own vision towers and image processor, for tests and notebooks.

Everything that touches torch or transformers lives here; the NumPy path never imports this module.
Pinned reference: transformers 5.23.0, torch CPU, float32, ``attn_implementation="eager"``.

* :func:`reference_tower` builds the transformers tower from a snapshot's ``config.json`` and loads
  the same ``visual.*`` safetensors into it (bf16 upcast by torch).
* :func:`reference_trace` runs it once and captures the stages qvlearn names in
  :data:`qvlearn.encoder.STAGES`, through forward hooks.
* :func:`reference_preprocess` runs ``Qwen2VLImageProcessorPil`` (the PIL backend; torchvision has no
  CPU build on the machines this project is tested on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from ..config import vision_config_from_dict  # noqa: E402
from ..families import FAMILIES  # noqa: E402
from .check import assert_close, rel_error  # noqa: E402,F401  (re-exported for tests and notebooks)

VISION_START = FAMILIES["qwen2_vl"].token_ids["vision_start_token_id"]


def _hf_classes(family: str):
    """(vision config class, vision model class) of transformers for a family: its table entry's ``reference``."""
    import importlib

    kind = FAMILIES[family]
    if len(kind.reference) != 3:
        from ..errors import ConfigError

        raise ConfigError(f"transformers has no vision tower for {kind.title} (its family entry names no reference "
                          "class), so there is nothing to compare against: drop --reference, or add the class to "
                          f"the {family} entry of qvlearn/families.py")
    module, config_class, model_class = kind.reference
    configuration = importlib.import_module(f"transformers.models.{module}.configuration_{module}")
    modeling = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    return getattr(configuration, config_class), getattr(modeling, model_class)


def hf_vision_config(config: dict, family: str):
    """A transformers vision config object from a parsed config.json (full VLM config, an Omni model's config with
    its ``thinker_config``, or vision-only).

    The MoE variants (``qwen3_vl_moe``, ``qwen3_5_moe``) have their dense sibling's vision tower; the dense
    classes build it. A released vision_config may carry a field its family's class does not have (Qwen3.5's
    ``deepstack_visual_indexes: []``): it is dropped."""
    cls, _ = _hf_classes(family)
    kind = FAMILIES[family]
    if kind.container and kind.container in config:
        config = config[kind.container]
    vision = dict(config.get("vision_config", config))
    vision.pop("model_type", None)
    if not kind.deepstack:
        vision.pop("deepstack_visual_indexes", None)
    return cls(**vision)


def reference_tower(path, attn_implementation: str = "eager", dtype=torch.float32):
    """The transformers vision tower of the snapshot at ``path``, weights loaded, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    family = vision_config_from_dict(config).family
    vc = hf_vision_config(config, family)
    _, cls = _hf_classes(family)
    from ..weights import PREFIXES
    model = cls._from_config(vc, attn_implementation=attn_implementation, dtype=dtype)
    from ..weights import weight_files

    state = {}
    for file in weight_files(path):  # the files qvlearn's load_weights reads, no others
        for key, value in load_file(file).items():
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    state[key[len(prefix):]] = value
                    break
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        from ..errors import CheckpointError

        raise CheckpointError(f"{path}: transformers' {family} tower cannot take these weights: missing "
                              f"{sorted(missing)}, unexpected {sorted(unexpected)} (names without the visual. prefix)")
    return model.eval()


def _np(t) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


@torch.no_grad()
def reference_trace(model, pixel_values, grid_thw, stages=None) -> dict[str, np.ndarray]:
    """One fp32 forward of the transformers tower; stages named as in :data:`qvlearn.encoder.STAGES`.

    ``stages``: glob patterns as for :meth:`qvlearn.VisionEncoder.trace`; the stages inside a block
    (``blocks.{i}.norm1`` ... ``blocks.{i}.mlp``) come from forward hooks on transformers' own modules
    (``norm1``, ``attn``, ``norm2``, ``mlp`` and its linears) and, for q and k after RoPE, from a
    recording wrapper around the modeling module's ``apply_rotary_pos_emb_vision`` during the forward.
    By default the stages outside the blocks' insides (``blocks.{i}.natural`` is added by
    :func:`qvlearn.tools.taps.add_natural_order`).
    """
    import importlib

    from transformers import vision_utils as vu

    from ..config import vision_config_from_dict
    from .taps import select_stages

    cfg = model.config
    m = cfg.spatial_merge_size
    grid = torch.as_tensor(np.asarray(grid_thw), dtype=torch.long)
    pv = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float32)
    found: dict[str, np.ndarray] = {"pixel_values": pv.numpy(), "grid_thw": grid.numpy()}
    found["position_ids"] = vu.get_vision_position_ids(grid, m).numpy()
    found["cu_seqlens"] = vu.get_vision_cu_seqlens(grid).numpy()
    if hasattr(cfg, "fullatt_block_indexes"):
        w_index, cu_w = vu.get_vision_window_index(grid, m, cfg.window_size, cfg.patch_size)
        found["window_index"], found["cu_window_seqlens"] = w_index.numpy(), cu_w.numpy()

    hooks = []

    def save(name, take=lambda out: out):
        def hook(module, args, output):
            found[name] = _np(take(output))
        return hook

    hooks.append(model.patch_embed.register_forward_hook(save("patch_embeds")))
    third = hasattr(model, "pos_embed")
    if third:  # Qwen3-VL / Qwen3.5: the interpolated table is the input of block 0 minus patch_embeds
        hooks.append(model.blocks[0].register_forward_pre_hook(
            lambda module, args: found.__setitem__("blocks.0.input", _np(args[0]))))

    def rotary_hook(module, args, output):
        found["cos"], found["sin"] = _np(output[0]), _np(output[1])

    hooks.append(model.rotary_pos_emb.register_forward_hook(rotary_hook))
    for i, blk in enumerate(model.blocks):
        hooks.append(blk.register_forward_hook(save(f"blocks.{i}")))
    if third:
        for j, merger in enumerate(getattr(model, "deepstack_merger_list", [])):
            hooks.append(merger.register_forward_hook(save(f"deepstack.{j}")))
    norm_name = "norm" if hasattr(model.merger, "norm") else "ln_q"  # Qwen3-VL / Qwen3.5 / Qwen4-Exp; Qwen2 / Omni
    hooks.append(getattr(model.merger, norm_name).register_forward_hook(save(f"merger.{norm_name}")))
    hooks.append(model.merger.register_forward_hook(save("merger")))

    wanted = None
    modeling, original_rotary = None, None
    if stages is not None:
        ours = vision_config_from_dict(_config_dict(model))
        wanted = set(select_stages(ours, [stages] if isinstance(stages, str) else stages))
        inner = sorted({int(n.split(".")[1]) for n in wanted if n.count(".") > 1 and n.startswith("blocks.")
                        and not n.endswith(".natural")})
        current = {"block": None}

        def mark(i):
            def pre(module, args):
                current["block"] = i
            return pre

        def save_input(name):
            def pre(module, args):
                found[name] = _np(args[0])
            return pre

        for i, blk in enumerate(model.blocks):  # every block says who is running (for the q/k recorder)
            hooks.append(blk.register_forward_pre_hook(mark(i)))
        for i in inner:
            blk = model.blocks[i]
            hooks.append(blk.norm1.register_forward_hook(save(f"blocks.{i}.norm1")))
            hooks.append(blk.attn.register_forward_hook(save(f"blocks.{i}.attn")))
            hooks.append(blk.norm2.register_forward_pre_hook(save_input(f"blocks.{i}.residual1")))
            hooks.append(blk.norm2.register_forward_hook(save(f"blocks.{i}.norm2")))
            hooks.append(blk.mlp.register_forward_hook(save(f"blocks.{i}.mlp")))
            if hasattr(blk.mlp, "gate_proj"):  # Qwen2.5-VL: down(act(gate(x)) * up(x))
                hooks.append(blk.mlp.gate_proj.register_forward_hook(save(f"blocks.{i}.mlp.gate")))
                hooks.append(blk.mlp.up_proj.register_forward_hook(save(f"blocks.{i}.mlp.up")))
                hooks.append(blk.mlp.down_proj.register_forward_pre_hook(save_input(f"blocks.{i}.mlp.act")))
            elif hasattr(blk.mlp, "linear_fc1"):  # Qwen3-VL / Qwen3.5: linear_fc2(act(linear_fc1(x)))
                hooks.append(blk.mlp.linear_fc1.register_forward_hook(save(f"blocks.{i}.mlp.fc1")))
                hooks.append(blk.mlp.linear_fc2.register_forward_pre_hook(save_input(f"blocks.{i}.mlp.act")))
            else:  # Qwen2-VL: fc2(act(fc1(x)))
                hooks.append(blk.mlp.fc1.register_forward_hook(save(f"blocks.{i}.mlp.fc1")))
                hooks.append(blk.mlp.fc2.register_forward_pre_hook(save_input(f"blocks.{i}.mlp.act")))
        modeling = importlib.import_module(type(model).__module__)
        original_rotary = modeling.apply_rotary_pos_emb_vision

        def recording_rotary(q, k, cos, sin):
            q_out, k_out = original_rotary(q, k, cos, sin)
            if current["block"] in inner:  # [N, heads, head_dim], as qvlearn's q and k
                found[f"blocks.{current['block']}.attn.q"] = _np(q_out)
                found[f"blocks.{current['block']}.attn.k"] = _np(k_out)
            return q_out, k_out

        modeling.apply_rotary_pos_emb_vision = recording_rotary
    try:
        weight = next(model.parameters())  # the tower's device and dtype (a CUDA tower gets CUDA inputs)
        out = model(pv.to(weight.device, weight.dtype), grid.to(weight.device))
    finally:
        for h in hooks:
            h.remove()
        if modeling is not None:
            modeling.apply_rotary_pos_emb_vision = original_rotary
    found["last_hidden_state"] = _np(out.last_hidden_state)
    found["embeddings"] = _np(out.pooler_output)
    if third:
        found["pos_embeds"] = found.pop("blocks.0.input") - found["patch_embeds"]
    if wanted is not None:
        from .taps import add_natural_order

        if any(n.endswith(".natural") for n in wanted):
            add_natural_order(found)
        found = {k: v for k, v in found.items() if k in wanted}
    return found


def _config_dict(model) -> dict:
    """The tower's config as the dict qvlearn's config reader takes (vision-only form): the family is the one whose
    entry names this vision model class."""
    name = type(model).__name__
    family = next((f for f in FAMILIES.values() if f.reference and f.reference[2] == name), None)
    if family is None:
        raise ValueError(f"{name} is not the vision tower of any family in qvlearn.families")
    return {"model_type": family.model_types[0], "vision_config": model.config.to_dict()}


def reference_preprocess(images, min_pixels: int = 3136, max_pixels: int = 12845056, **processor_config):
    """``(pixel_values, image_grid_thw)`` from transformers' ``Qwen2VLImageProcessorPil``; ``processor_config``:
    more of a ``preprocessor_config.json``'s keys (``patch_size=16`` for Qwen3-Omni, ``image_mean``, ...)."""
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                         **processor_config)
    out = processor(images=images, return_tensors="np")
    return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


def _transformers_video_method(name: str, module: str = "transformers.models.qwen2_vl.video_processing_qwen2_vl",
                               cls_name: str = "Qwen2VLVideoProcessor"):
    """One method of transformers' own video processor (``patchify``, ``sample_frames``), compiled from source.

    The 5.x video processor module imports torchvision at import time, and torchvision has no CPU build
    on this project's machines; these methods themselves are plain torch and math. We compile the one
    method from the installed transformers source, unchanged, so the video reference is transformers' code.
    """
    import ast
    import importlib.util
    import math

    spec = importlib.util.find_spec(module)
    source = Path(spec.origin).read_text()
    tree = ast.parse(source)
    body = tree.body if cls_name is None else next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name).body
    fn = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)
    fn.decorator_list = []
    namespace = {"torch": torch, "math": math, "np": np}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), spec.origin, "exec"), namespace)
    return namespace[name]


def _transformers_video_patchify():
    return _transformers_video_method("patchify")


_QWEN3_VIDEO = "transformers.models.qwen3_vl.video_processing_qwen3_vl"


def reference_qwen3_video_size(num_frames: int, height: int, width: int, min_pixels: int, max_pixels: int):
    """transformers' Qwen3-VL video ``smart_resize`` (module function, compiled from source)."""
    smart_resize = _transformers_video_method("smart_resize", _QWEN3_VIDEO, cls_name=None)
    return smart_resize(num_frames, height, width, temporal_factor=2, factor=32, min_pixels=min_pixels,
                        max_pixels=max_pixels)


def reference_qwen3_frame_indices(total_num_frames: int, video_fps: float, fps: float = 2.0) -> np.ndarray:
    """Frame indices of ``Qwen3VLVideoProcessor.sample_frames`` (its code, compiled, on a stand-in with its
    defaults)."""
    import types

    sample = _transformers_video_method("sample_frames", _QWEN3_VIDEO, "Qwen3VLVideoProcessor")
    stand_in = types.SimpleNamespace(fps=2, min_frames=4, max_frames=768)
    metadata = types.SimpleNamespace(total_num_frames=total_num_frames, fps=video_fps)
    return np.asarray(sample(stand_in, metadata, fps=fps))


def reference_qwen3_timestamps(indices, video_fps: float) -> list[float]:
    """``Qwen3VLProcessor._calculate_timestamps`` (the seconds written before each frame pair)."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    return Qwen3VLProcessor._calculate_timestamps(None, list(indices), video_fps, 2)


def reference_qwen3_video(frames, min_pixels: int = 128 * 32 * 32, max_pixels: int = 768 * 32 * 32):
    """``(pixel_values_videos, video_grid_thw)`` for one sampled Qwen3-VL video given as frames.

    The frame size comes from transformers' Qwen3-VL video ``smart_resize`` and the rows from its
    ``Qwen3VLVideoProcessor.patchify`` (both compiled from the installed source: the module imports torchvision);
    each frame is resized by transformers' PIL ``resize`` (Pillow bicubic) and rescaled / normalised (mean = std =
    0.5) by ``Qwen2VLImageProcessorPil``'s methods. The real video processor resizes tensors with torchvision
    (notebook 1: within a grey level of Pillow on a CPU), so this is the PIL path of its rules.
    """
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil
    from transformers.image_transforms import resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    pils = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in frames]
    height, width = reference_qwen3_video_size(len(pils), pils[0].height, pils[0].width, min_pixels, max_pixels)
    processor = Qwen2VLImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processed = []
    for frame in pils:
        array = np.asarray(frame.convert("RGB"))
        array = resize(array, (height, width), resample=PILImageResampling.BICUBIC,
                       input_data_format=ChannelDimension.LAST, data_format=ChannelDimension.FIRST)
        rescaled = processor.rescale(array, 1 / 255)
        processed.append(processor.normalize(rescaled, processor.image_mean, processor.image_std))
    videos = torch.from_numpy(np.stack(processed)[None].astype(np.float32))
    patchify = _transformers_video_method("patchify", _QWEN3_VIDEO, "Qwen3VLVideoProcessor")
    patches, t, h, w = patchify(None, videos, patch_size=16, merge_size=2, temporal_patch_size=2)
    return patches[0].numpy(), np.array([[t, h, w]], dtype=np.int64)


def reference_sample_frames(total_num_frames: int, video_fps: float, fps: float = 2.0, min_frames: int = 4,
                            max_frames: int = 768, temporal_patch_size: int = 2) -> np.ndarray:
    """Frame indices chosen by transformers' ``Qwen2VLVideoProcessor.sample_frames`` (``do_sample_frames=True``
    with ``fps``), its own code compiled from source and bound to a stand-in holding its defaults."""
    import types

    sample = _transformers_video_method("sample_frames")
    stand_in = types.SimpleNamespace(num_frames=None, fps=None, temporal_patch_size=temporal_patch_size,
                                     min_frames=min_frames, max_frames=max_frames)
    metadata = types.SimpleNamespace(total_num_frames=total_num_frames, fps=video_fps)
    return np.asarray(sample(stand_in, metadata, fps=fps))


def reference_video(frames, min_pixels: int = 3136, max_pixels: int = 12845056, patch_size: int = 14):
    """``(pixel_values_videos, video_grid_thw)`` for one video given as a list of frames, by Qwen2VLVideoProcessor's
    rules (Qwen2-VL, Qwen2.5-VL, both Omni models; ``patch_size=16`` for Qwen3-Omni).

    Each frame goes through the resize/rescale/normalise methods of ``Qwen2VLImageProcessorPil`` (PIL
    bicubic: the torchvision video processor cannot be imported here), then the frames are padded and
    patchified by transformers' own video ``patchify``.
    """
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil
    from transformers.image_utils import PILImageResampling, SizeDict

    processor = Qwen2VLImageProcessorPil()
    size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)
    processed = []
    for frame in frames:
        image = processor.process_image(frame if isinstance(frame, Image.Image) else Image.fromarray(frame),
                                        do_convert_rgb=True)
        image = processor.resize(image, size=size, resample=PILImageResampling.BICUBIC, factor=2 * patch_size)
        image = processor.normalize(processor.rescale(image, 1 / 255), processor.image_mean, processor.image_std)
        processed.append(image)
    videos = torch.from_numpy(np.stack(processed)[None])  # [1, T, C, H, W]
    patches, t, h, w = _transformers_video_patchify()(None, videos, patch_size=patch_size, merge_size=2,
                                                      temporal_patch_size=2)
    return patches[0].numpy(), np.array([[t, h, w]], dtype=np.int64)


def reference_get_rope_index(family: str, tokens_per_second: float = 2, spatial_merge_size: int = 2):
    """transformers' own ``get_rope_index`` of ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` / ``Qwen3VLModel`` (by the
    family entry's ``rope_index`` rule: Qwen3.5 and Qwen4-Exp take Qwen3-VL's) or of an Omni thinker, bound to a
    stand-in that holds only the config it reads (no LLM weights are built)."""
    import functools
    import types

    if FAMILIES[family].container:  # the Omni thinkers: their own get_rope_index (audio-aware; here without audio)
        import importlib

        module = FAMILIES[family].reference[0]
        modeling = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
        configuration = importlib.import_module(f"transformers.models.{module}.configuration_{module}")
        thinker = next(getattr(configuration, n) for n in dir(configuration) if n.endswith("ThinkerConfig"))
        model = next(getattr(modeling, n) for n in dir(modeling)
                     if n.endswith("PreTrainedModelForConditionalGeneration"))
        config = thinker(vision_start_token_id=VISION_START, vision_config={"spatial_merge_size": spatial_merge_size})
        stand_in = types.SimpleNamespace(config=config, spatial_merge_size=spatial_merge_size)
        stand_in.get_llm_pos_ids_for_vision = functools.partial(model.get_llm_pos_ids_for_vision, stand_in)
        return functools.partial(model.get_rope_index, stand_in)
    rule = FAMILIES[family].rope_index
    if rule == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel as Model

        config = Config(vision_config={"spatial_merge_size": spatial_merge_size})
    elif rule == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel as Model

        config = Config(vision_config={"spatial_merge_size": spatial_merge_size})
    elif rule == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel as Model

        config = Config(vision_config={"tokens_per_second": tokens_per_second,
                                       "spatial_merge_size": spatial_merge_size})
    else:
        raise ValueError(f"no reference get_rope_index for the M-RoPE rule {rule!r} of {family}")
    stand_in = types.SimpleNamespace(config=config)
    stand_in.get_vision_position_ids = functools.partial(Model.get_vision_position_ids, stand_in)
    return functools.partial(Model.get_rope_index, stand_in)


def reference_mrope_rows(mrope_section=(24, 20, 20), head_dim: int = 128) -> np.ndarray:
    """Which position row (0 t, 1 h, 2 w) drives each LLM rotary frequency in transformers'
    ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``: fed a [3, 1, 1, head_dim/2] table whose row r holds r."""
    import types

    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

    stand_in = types.SimpleNamespace(mrope_section=list(mrope_section))
    table = torch.arange(3, dtype=torch.float32)[:, None, None, None].expand(3, 1, 1, head_dim // 2).clone()
    out = Qwen3VLTextRotaryEmbedding.recomposition_frequencies(stand_in, table)
    return out[0, 0, : head_dim // 2].long().numpy()


def reference_add_deepstack(hidden_states, visual_mask, feature) -> np.ndarray:
    """transformers' ``Qwen3VLTextModel._deepstack_process`` on one tensor (no model built)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel

    out = Qwen3VLTextModel._deepstack_process(None, torch.from_numpy(np.asarray(hidden_states)),
                                              torch.from_numpy(np.asarray(visual_mask, dtype=bool)),
                                              torch.from_numpy(np.asarray(feature)))
    return out.numpy()
