"""Solutions to the exercises 10 · the bridge to the LLM (notebooks/10_bridge_to_the_llm.ipynb)."""

import numpy as np


def rope_index_images(input_ids, image_grid_thw):
    """input_ids: one expanded sequence (image pads 151655 already repeated t*h*w/4 times per image);
    image_grid_thw: [k, 3]. Return Qwen2-VL's M-RoPE position ids [3, S] (text and images only)."""
    positions, s, k, i = [], 0, 0, 0
    while i < len(input_ids):
        if input_ids[i] == 151655:
            t, h, w = (int(v) for v in image_grid_thw[k])
            gh, gw = h // 2, w // 2
            T, H, W = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
            positions.append(np.stack([T.ravel(), H.ravel(), W.ravel()]) + s)
            s, i, k = s + max(gh, gw), i + t * gh * gw, k + 1
        else:
            positions.append(np.full((3, 1), s))
            s, i = s + 1, i + 1
    return np.concatenate(positions, axis=1)


def omni_temporal_positions(t, second_per_grid_t, position_id_per_seconds=25):
    steps = np.arange(t, dtype=np.float32) * np.float32(second_per_grid_t)  # arange * seconds first, in float32
    return (steps * np.float32(position_id_per_seconds)).astype(np.int64)  # then * 25, then truncated