"""The bridge into the LLM against transformers 5.23: pads, scatter, and get_rope_index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.reference import reference_get_rope_index as hf_get_rope_index
from qvlearn.bridge import (IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_END_TOKEN_ID, VISION_START_TOKEN_ID,
                            expand_vision_pads, get_rope_index, mrope_frequency_rows, scatter_embeddings,
                            vision_token_counts)


def random_prompt(rng, n_images, n_videos):
    """Text runs with <vision_start> pad <vision_end> for each entry, in random order."""
    entries = ["image"] * n_images + ["video"] * n_videos
    rng.shuffle(entries)
    ids, images, videos = [], [], []
    for kind in entries:
        ids += list(rng.integers(0, 1000, int(rng.integers(0, 6))))
        ids += [VISION_START_TOKEN_ID, IMAGE_TOKEN_ID if kind == "image" else VIDEO_TOKEN_ID, VISION_END_TOKEN_ID]
        t = 1 if kind == "image" else int(rng.integers(1, 7))
        grid = (t, 2 * int(rng.integers(1, 6)), 2 * int(rng.integers(1, 6)))
        (images if kind == "image" else videos).append(grid)
    ids += list(rng.integers(0, 1000, int(rng.integers(1, 6))))
    return ids, images, videos


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("seed", range(25))
def test_get_rope_index_matches_transformers(family, seed):
    rng = np.random.default_rng(seed)
    ids, images, videos = random_prompt(rng, int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    expanded = expand_vision_pads(ids, images or None, videos or None)
    seconds = rng.choice([0.5, 1.0, 2.0, 0.25, 1 / 3], size=len(videos)) if videos else None
    types_ = np.where(expanded == IMAGE_TOKEN_ID, 1, np.where(expanded == VIDEO_TOKEN_ID, 2, 0))
    extra = {"second_per_grid_ts": torch.tensor(seconds)} if family == "qwen2_5_vl" and videos else {}
    ref_pos, ref_delta = hf_get_rope_index(family)(
        torch.from_numpy(expanded)[None], torch.from_numpy(types_)[None],
        torch.tensor(images) if images else None, torch.tensor(videos) if videos else None, **extra)
    pos, delta = get_rope_index(expanded, images or None, videos or None, seconds, family=family)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_rope_index_spec_examples():
    a, b, c, d, e = 11, 12, 13, 14, 15
    ids = [a, b, c, VISION_START_TOKEN_ID] + [IMAGE_TOKEN_ID] * 6 + [VISION_END_TOKEN_ID, d, e]
    pos, delta = get_rope_index(ids, [(1, 4, 6)])
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9]
    assert pos[1, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9]
    assert pos[2, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9]
    assert delta.tolist() == [[-3]]
    ids = [a, VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * 16 + [VISION_END_TOKEN_ID, b]
    pos, delta = get_rope_index(ids, None, [(4, 4, 4)], [2.0])
    assert pos[0, 0, 2:18].tolist() == [2] * 4 + [6] * 4 + [10] * 4 + [14] * 4
    assert pos[0, 0, 18:].tolist() == [4, 5] and delta.tolist() == [[-5]]  # transformers 5.x
    pos, delta = get_rope_index(ids, None, [(4, 4, 4)], [2.0], text_after_vision="max+1")
    assert pos[0, 0, 18:].tolist() == [15, 16] and delta.tolist() == [[-3]]  # transformers <= 4.57, vLLM


def test_padding_and_batches():
    ids = [1, VISION_START_TOKEN_ID] + [IMAGE_TOKEN_ID] * 4 + [VISION_END_TOKEN_ID, 2]
    batch = np.array([[0, 0] + ids, ids + [5, 6]])
    mask = np.array([[0, 0] + [1] * len(ids), [1] * (len(ids) + 2)])
    pos, delta = get_rope_index(batch, [(1, 4, 4), (1, 4, 4)], attention_mask=mask)
    ref = hf_get_rope_index("qwen2_5_vl")
    types_ = torch.from_numpy(np.where(batch == IMAGE_TOKEN_ID, 1, 0))
    ref_pos, ref_delta = ref(torch.from_numpy(batch), types_, torch.tensor([(1, 4, 4), (1, 4, 4)]),
                             attention_mask=torch.from_numpy(mask))
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_pads_and_scatter(checkpoint):
    rng = np.random.default_rng(0)
    pixel_values, grid = qvlearn.preprocess(images=[rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)] * 2)
    embeds = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))(pixel_values, grid)
    assert vision_token_counts(grid).tolist() == [6, 6]
    ids = [7, VISION_START_TOKEN_ID, IMAGE_TOKEN_ID, VISION_END_TOKEN_ID, 8, VISION_START_TOKEN_ID, IMAGE_TOKEN_ID,
           VISION_END_TOKEN_ID]
    expanded = expand_vision_pads(ids, grid)
    assert len(expanded) == len(ids) + 2 * 5
    text = rng.standard_normal((len(expanded), 96)).astype(np.float32)
    merged = scatter_embeddings(text, expanded, image_embeds=embeds)
    ref = torch.from_numpy(text).masked_scatter(torch.from_numpy(expanded == IMAGE_TOKEN_ID)[:, None],
                                                torch.from_numpy(embeds))
    np.testing.assert_array_equal(merged, ref.numpy())
    with pytest.raises(qvlearn.InputError, match="do not match: 12 <|image_pad|> tokens, 6 embedding rows"):
        scatter_embeddings(text, expanded, image_embeds=embeds[:6])
    with pytest.raises(qvlearn.InputError, match="2 <|image_pad|> token"):
        expand_vision_pads(ids, grid[:1])


def test_mrope_sections():
    rows = mrope_frequency_rows()
    assert rows.shape == (64,) and (rows == 0).sum() == 16 and (rows == 1).sum() == 24 and rows[-1] == 2
