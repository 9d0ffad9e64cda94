"""Exercises 10 · the bridge to the LLM (notebooks/10_bridge_to_the_llm.ipynb).

Write each function, then check it:  python -m exercises 10
Solutions: exercises/solutions/ex10_bridge.py (try first!)
"""



def rope_index_images(input_ids, image_grid_thw):
    """input_ids: one expanded sequence (image pads 151655 already repeated t*h*w/4 times per image);
    image_grid_thw: [k, 3]. Return Qwen2-VL's M-RoPE position ids [3, S] (text and images only)."""
    raise NotImplementedError


def omni_temporal_positions(t, second_per_grid_t, position_id_per_seconds=25):
    """The temporal M-RoPE offsets of a video's t frame pairs in Qwen2.5-Omni: ``position_id_per_seconds``
    positions per second of video (25), int [t], exactly as its thinker computes them -- mind the order of the
    multiplications and the float32 (compare notebook 10, section 5, for Qwen2.5-VL)."""
    raise NotImplementedError