"""The bridge into the language model: vision token counts, ``<|image_pad|>`` expansion, scattering the
embeddings into the text sequence, and the 3-D M-RoPE position ids (``get_rope_index``).

Explained in ``notebooks/10_bridge_to_the_llm.ipynb``. Host-side NumPy; checked against
transformers 5.23 (notebook 10).

* One image or video entry with ``grid_thw = (t, h, w)`` becomes ``t*h*w / 4`` LLM tokens.
* The chat template writes one ``<|image_pad|>`` (``<|video_pad|>``) per entry; the processor repeats it
  to the entry's token count, and the model fills those slots with the encoder's rows in sequence order.
* ``get_rope_index``: text runs get positions ``s .. s+L-1`` on all three rows (t, h, w); a vision run
  with merged grid ``(t, H', W')`` gets ``T = s + floor(t_idx * interval)``, ``H = s + row``,
  ``W = s + col``. ``interval`` is 1, except for Qwen2.5-VL videos: ``second_per_grid_t *
  tokens_per_second`` (truncated after the multiply, in float32, as 5.x does: :func:`temporal_positions`).
* After a vision run, transformers 5.x continues text at ``s + max(H', W')``; transformers <= 4.57,
  vLLM and Qwen's original code continue at ``max(all positions so far) + 1``. They differ only when a
  video's temporal extent exceeds its spatial extent. Choose with ``text_after_vision``.
* Qwen3-VL / Qwen3.5 (``family="qwen3_vl"``): the processor writes each frame pair of a video as its own run,
  ``<x.x seconds><|vision_start|><|video_pad|>...<|vision_end|>``, so a video grid ``(t, h, w)`` counts as ``t``
  grids ``(1, h, w)``; time is carried by the timestamp text, not by a tokens-per-second interval. The LLM's
  M-RoPE is **interleaved** (:func:`mrope_frequency_rows` with ``interleaved=True``), and the DeepStack
  features are added to the hidden states at the visual positions after the first decoder layers
  (:func:`add_deepstack`).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .families import FAMILIES, QWEN2_TOKENS
from .grid import as_grid_thw

VISION_START_TOKEN_ID = QWEN2_TOKENS["vision_start_token_id"]  # Qwen2-VL .. Qwen3-VL; Qwen3.5: its family's token_ids
VISION_END_TOKEN_ID = QWEN2_TOKENS["vision_end_token_id"]
IMAGE_TOKEN_ID = QWEN2_TOKENS["image_token_id"]
VIDEO_TOKEN_ID = QWEN2_TOKENS["video_token_id"]
TEXT_AFTER_VISION = ("spatial", "max+1")  # transformers 5.x, transformers <= 4.57 / vLLM


def vision_token_counts(grid_thw, spatial_merge_size: int = 2) -> np.ndarray:
    """LLM tokens per entry: ``t * h * w / merge**2``."""
    grid = as_grid_thw(grid_thw, spatial_merge_size)
    return grid.prod(axis=1) // (spatial_merge_size ** 2)


def expand_vision_pads(input_ids, image_grid_thw=None, video_grid_thw=None, *, image_token_id=IMAGE_TOKEN_ID,
                       video_token_id=VIDEO_TOKEN_ID, spatial_merge_size: int = 2) -> np.ndarray:
    """Repeat the k-th ``<|image_pad|>`` to entry k's token count (same for videos); 1-D ids in, 1-D out."""
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    counts = {}
    for token, grid, name in ((image_token_id, image_grid_thw, "image"), (video_token_id, video_grid_thw, "video")):
        n_pads = int(np.sum(ids == token))
        n_grids = 0 if grid is None else len(as_grid_thw(grid, spatial_merge_size))
        if n_pads != n_grids:
            raise InputError(f"{n_pads} <|{name}_pad|> token(s) in the text but {n_grids} {name} grid(s); the chat "
                             f"template writes one pad per {name}")
        counts[token] = iter(vision_token_counts(grid, spatial_merge_size).tolist()) if n_grids else iter(())
    out = []
    for token in ids.tolist():
        out.extend([token] * next(counts[token]) if token in counts else [token])
    return np.asarray(out, dtype=np.int64)


def scatter_embeddings(text_embeds, input_ids, image_embeds=None, video_embeds=None, *,
                       image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID) -> np.ndarray:
    """``masked_scatter``: the k-th image-pad slot of ``input_ids [S]`` gets row k of ``image_embeds``
    (videos likewise). Returns a new ``[S, D]`` array; raises when counts disagree."""
    out = np.array(text_embeds, copy=True)
    ids = np.asarray(input_ids).reshape(-1)
    if out.shape[0] != ids.shape[0]:
        raise InputError(f"text_embeds has {out.shape[0]} rows but input_ids {ids.shape[0]} tokens")
    for token, embeds, name in ((image_token_id, image_embeds, "image"), (video_token_id, video_embeds, "video")):
        slots = np.nonzero(ids == token)[0]
        rows = 0 if embeds is None else np.asarray(embeds).shape[0]
        if len(slots) != rows:
            raise InputError(f"{name} features and {name} tokens do not match: {len(slots)} <|{name}_pad|> tokens, "
                             f"{rows} embedding rows; expand the pads with expand_vision_pads first")
        if rows:
            if np.asarray(embeds).shape[1] != out.shape[1]:
                raise InputError(f"{name} embeddings are {np.asarray(embeds).shape[1]} wide, the text embeddings "
                                 f"{out.shape[1]}: is out_hidden_size the LLM width?")
            out[slots] = embeds
    return out


OMNI_RULES = ("omni", "omni_float")
"""The Omni models' rule (their thinker's ``get_rope_index``, images and videos without audio): a vision run
starts at ``max(positions so far) + 1`` and so does the text after it; a video's frame pair ``i`` sits at
``i * second_per_grid * position_id_per_seconds`` (25), computed in float32 -- truncated to an integer by
Qwen2.5-Omni (``omni``), kept as a float by Qwen3-Omni (``omni_float``: its position ids are float32)."""


def get_rope_index(input_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None, *,
                   attention_mask=None, spatial_merge_size: int = 2, tokens_per_second: float = 2,
                   family: str = "qwen2_5_vl", text_after_vision: str | None = None,
                   image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID, position_id_per_seconds: float = 25):
    """3-D M-RoPE position ids ``[3, B, S]`` and ``rope_deltas [B, 1]`` for already-expanded ``input_ids``.

    ``family``: any family of :mod:`qvlearn.families`, which names its rule (``rope_index``): ``qwen2_vl`` (no
    temporal interval), ``qwen2_5_vl`` (videos step by ``second_per_grid_t * tokens_per_second``), or ``qwen3_vl``
    (Qwen3-VL, Qwen3.5, Qwen4-Exp: each video frame pair is its own run, between timestamp texts; no interval), or
    the Omni models' rules (:data:`OMNI_RULES`: ``position_id_per_seconds`` per second of video, ``max+1`` after
    each run; Qwen3-Omni's positions are float32). The token ids are Qwen2's unless given (Qwen3.5's are its
    family's ``token_ids``). ``text_after_vision``: ``"spatial"`` (transformers 5.x, the default), ``"max+1"``
    (transformers <= 4.57, vLLM, and the Omni models' own rule, their default). Padding positions
    (``attention_mask == 0``) get 0, as in transformers (1 for Qwen2.5-Omni, whose thinker fills with ones).
    """
    if family not in FAMILIES:
        raise InputError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    rule = FAMILIES[family].rope_index
    omni = rule in OMNI_RULES
    if text_after_vision is None:
        text_after_vision = "max+1" if omni else "spatial"
    if rule == "qwen3_vl" and video_grid_thw is not None:  # one (1, h, w) grid per frame pair
        videos = as_grid_thw(video_grid_thw, spatial_merge_size)
        video_grid_thw = np.repeat(videos, videos[:, 0], axis=0)
        video_grid_thw[:, 0] = 1
    if text_after_vision not in TEXT_AFTER_VISION:
        raise InputError(f"text_after_vision must be one of {TEXT_AFTER_VISION}, got {text_after_vision!r}")
    ids = np.atleast_2d(np.asarray(input_ids, dtype=np.int64))
    mask = np.ones_like(ids, dtype=bool) if attention_mask is None else np.atleast_2d(np.asarray(attention_mask)) != 0
    m = spatial_merge_size
    grids = {1: iter(as_grid_thw(image_grid_thw, m).tolist() if image_grid_thw is not None else []),
             2: iter(as_grid_thw(video_grid_thw, m).tolist() if video_grid_thw is not None else [])}
    # float32, as transformers' processor hands second_per_grid_ts to the model (a float32 tensor); see
    # temporal_positions for why the dtype changes positions
    seconds = iter(np.asarray(second_per_grid_ts, dtype=np.float32).reshape(-1)
                   if second_per_grid_ts is not None else [])
    positions = np.full((3, *ids.shape), 1 if rule == "omni" else 0,
                        dtype=np.float32 if rule == "omni_float" else np.int64)
    deltas = []
    for b in range(ids.shape[0]):
        seq = ids[b][mask[b]]
        kinds = np.where(seq == image_token_id, 1, np.where(seq == video_token_id, 2, 0))
        parts, s = [], 0
        seen_max = -1
        boundaries = np.nonzero(np.diff(kinds))[0] + 1
        for run in np.split(np.arange(len(seq)), boundaries):
            kind = int(kinds[run[0]])
            if kind == 0:
                part = np.broadcast_to(np.arange(len(run)) + s, (3, len(run)))
                s += len(run)
            else:
                try:
                    t, h, w = next(grids[kind])
                except StopIteration:
                    name = "image" if kind == 1 else "video"
                    raise InputError(f"more {name} token runs than {name} grids") from None
                gh, gw = h // m, w // m
                if len(run) != t * gh * gw:
                    raise InputError(f"a vision run of {len(run)} tokens does not match its grid {(t, h, w)} "
                                     f"({t * gh * gw} tokens); expand the pads with expand_vision_pads")
                if kind == 2 and rule == "qwen2_5_vl":
                    tt = temporal_positions(t, tokens_per_second, next(seconds, np.float32(1.0)))
                elif omni:  # float32 (arange * seconds) * position_id_per_seconds; images: seconds = 1
                    sec = next(seconds, np.float32(1.0)) if kind == 2 else np.float32(1.0)
                    tt = (np.arange(t, dtype=np.float32) * np.float32(sec)) * np.float32(position_id_per_seconds)
                    tt = tt.astype(np.int64) if rule == "omni" else tt
                else:
                    tt = np.arange(t, dtype=np.int64)  # images and Qwen2-VL videos: one step per frame pair
                T, H, W = np.meshgrid(tt, np.arange(gh), np.arange(gw), indexing="ij")
                part = np.stack([T.reshape(-1), H.reshape(-1), W.reshape(-1)]) + s
                s = s + max(gh, gw) if text_after_vision == "spatial" else max(seen_max, part.max()) + 1
            seen_max = max(seen_max, part.max())
            parts.append(part)
        llm = np.concatenate(parts, axis=1)
        positions[:, b, mask[b]] = llm
        deltas.append(llm.max() + 1 - len(seq))
    return positions, np.asarray(deltas, dtype=positions.dtype)[:, None]


def temporal_positions(t: int, tokens_per_second, second_per_grid_t) -> np.ndarray:
    """Temporal M-RoPE offsets of a Qwen2.5-VL video's ``t`` frame pairs, exactly as transformers 5.23:
    ``interval = tokens_per_second * second_per_grid_t`` and ``arange(t) * interval`` both in **float32**,
    then truncated (``.long()``) -- multiply first, then truncate (transformers PR #48669).

    The dtype matters: with 1/3 s per grid and 25 tokens per second, ``3 * (25 * float32(1/3))`` is
    ``25.000002`` in float32 but ``24.999999999999996`` in float64, so a float64 port puts frame pair 3 at
    24 instead of 25. The positions lie exactly on an integer whenever ``t * interval`` does.
    """
    if not np.isfinite(float(second_per_grid_t)) or float(second_per_grid_t) <= 0:
        raise InputError(f"second_per_grid_ts must be positive seconds per frame pair, got {second_per_grid_t!r}")
    interval = np.float32(tokens_per_second) * np.float32(second_per_grid_t)   # a float32 0-d tensor in torch
    return (np.arange(t, dtype=np.int64).astype(np.float32) * interval).astype(np.int64)


def mrope_frequency_rows(head_dim: int = 128, mrope_section=(16, 24, 24), interleaved: bool = False) -> np.ndarray:
    """For each of the LLM's ``head_dim/2`` rotary frequencies, which position row drives it: 0 = t,
    1 = h, 2 = w. Contiguous sections (Qwen2/2.5-VL, ``mrope_section`` [16, 24, 24]): t, then h, then w.
    ``interleaved`` (Qwen3-VL, ``mrope_interleaved``, sections [24, 20, 20]): frequency ``i`` follows h when
    ``i % 3 == 1`` and ``i < 3 * sections[1]``, w when ``i % 3 == 2`` and ``i < 3 * sections[2]``, t otherwise, as
    transformers' ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``: every row gets fast and slow frequencies."""
    if sum(mrope_section) != head_dim // 2:
        raise InputError(f"mrope_section {list(mrope_section)} must sum to head_dim/2 = {head_dim // 2}")
    if not interleaved:
        return np.concatenate([np.full(n, i) for i, n in enumerate(mrope_section)])
    rows = np.zeros(head_dim // 2, dtype=np.int64)
    for row, offset in ((1, 1), (2, 2)):
        rows[offset: 3 * mrope_section[row]: 3] = row
    return rows


def add_deepstack(hidden_states, visual_mask, feature):
    """Qwen3-VL's DeepStack injection after decoder layer ``k`` (k < number of DeepStack features):
    ``hidden_states[visual_mask] += deepstack_features[k]``, the visual positions in sequence order (transformers'
    ``Qwen3VLTextModel._deepstack_process``). ``hidden_states [S, D]`` or ``[B, S, D]``; returns a new array."""
    hidden = np.array(hidden_states, copy=True)
    mask = np.asarray(visual_mask, dtype=bool)
    if mask.shape != hidden.shape[:-1]:
        raise InputError(f"visual_mask of shape {mask.shape} does not match hidden_states {hidden.shape}")
    if int(mask.sum()) != len(feature):
        raise InputError(f"{int(mask.sum())} visual positions but {len(feature)} DeepStack rows: the mask marks the "
                         "image and video pad positions, one per merged token")
    hidden[mask] = hidden[mask] + np.asarray(feature, dtype=hidden.dtype)
    return hidden


def llm_inv_freq(head_dim: int = 128, theta: float = 1e6) -> np.ndarray:
    return (1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)).astype(np.float32)


__all__ = ["add_deepstack", "expand_vision_pads", "get_rope_index", "llm_inv_freq", "mrope_frequency_rows",
           "scatter_embeddings", "vision_token_counts"]
