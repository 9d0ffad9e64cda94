"""The bridge into the LLM against transformers 5.23: pads, scatter, and get_rope_index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.bridge import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    VISION_END_TOKEN_ID,
    VISION_START_TOKEN_ID,
    expand_vision_pads,
    get_rope_index,
    mrope_frequency_rows,
    scatter_embeddings,
    vision_token_counts,
)
from qvlearn.tools.reference import reference_get_rope_index as hf_get_rope_index


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
    extra = {"second_per_grid_ts": processor_seconds(seconds)} if family == "qwen2_5_vl" and videos else {}
    ref_pos, ref_delta = hf_get_rope_index(family)(
        torch.from_numpy(expanded)[None], torch.from_numpy(types_)[None],
        torch.tensor(images) if images else None, torch.tensor(videos) if videos else None, **extra)
    pos, delta = get_rope_index(expanded, images or None, videos or None, seconds, family=family)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def processor_seconds(seconds):
    """``second_per_grid_ts`` as transformers' processor hands it to the model: a list of Python floats turned
    into a tensor by ``BatchFeature`` -- float32."""
    from transformers import BatchFeature

    return BatchFeature({"second_per_grid_ts": [float(s) for s in seconds]}, tensor_type="pt")["second_per_grid_ts"]


@pytest.mark.parametrize("tokens_per_second", [2, 25])
@pytest.mark.parametrize("seconds", [[1 / 3, 2 / 3], [0.75, 1 / 3], [2 / 3, 0.75]])
def test_fractional_seconds_per_grid_in_a_padded_batch(tokens_per_second, seconds):
    """t * interval on an integer (1/3 s at 25 tokens/s: 3 * 8.333 = 25) is where float32 and float64 part."""
    assert processor_seconds(seconds).dtype == torch.float32
    video = [VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * 12 + [VISION_END_TOKEN_ID]   # grid (12, 2, 2)
    rows = [[7] + video + [8, 9], [4, 5] + video + [6]]
    width = max(len(r) for r in rows) + 2
    batch = np.zeros((2, width), dtype=np.int64)
    mask = np.zeros((2, width), dtype=np.int64)
    batch[0, width - len(rows[0]):], mask[0, width - len(rows[0]):] = rows[0], 1     # left padding
    batch[1, :len(rows[1])], mask[1, :len(rows[1])] = rows[1], 1                     # right padding
    grids = [(12, 2, 2), (12, 2, 2)]
    ref = hf_get_rope_index("qwen2_5_vl", tokens_per_second=tokens_per_second)
    types_ = torch.from_numpy(np.where(batch == VIDEO_TOKEN_ID, 2, 0))
    ref_pos, ref_delta = ref(torch.from_numpy(batch), types_, None, torch.tensor(grids),
                             second_per_grid_ts=processor_seconds(seconds), attention_mask=torch.from_numpy(mask))
    pos, delta = get_rope_index(batch, None, grids, seconds, attention_mask=mask, tokens_per_second=tokens_per_second)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_float32_interval_is_the_one_that_matters():
    """The case of the issue: 1/3 s per grid at 25 tokens/s puts frame pair 3 at 25 (float32), not 24 (float64);
    the check fails for the float64 formula, so it can catch that bug."""
    from qvlearn.bridge import temporal_positions

    assert temporal_positions(4, 25, 1 / 3).tolist() == [0, 8, 16, 25]
    assert np.floor(np.arange(4) * (25 * (1 / 3))).astype(int).tolist() == [0, 8, 16, 24]
    ids = [VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * 4 + [VISION_END_TOKEN_ID]
    pos, _ = get_rope_index(ids, None, [(4, 2, 2)], [1 / 3], tokens_per_second=25)
    ref_pos, _ = hf_get_rope_index("qwen2_5_vl", tokens_per_second=25)(
        torch.tensor([ids]), torch.tensor([[0, 2, 2, 2, 2, 0]]), None, torch.tensor([(4, 2, 2)]),
        second_per_grid_ts=processor_seconds([1 / 3]))
    assert pos[0, 0, 1:5].tolist() == ref_pos[0, 0, 1:5].tolist() == [1, 9, 17, 26]
    with pytest.raises(qvlearn.InputError, match="positive seconds"):
        get_rope_index(ids, None, [(4, 2, 2)], [0.0])


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
