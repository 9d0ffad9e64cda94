"""Exercises 10 · the bridge to the LLM (notebooks/10_bridge_to_the_llm.ipynb).

Write each function, then check it:  python -m exercises 10
Solutions: exercises/solutions/ex10_bridge.py (try first!)
"""



def rope_index_images(input_ids, image_grid_thw):
    """input_ids: one expanded sequence (image pads 151655 already repeated t*h*w/4 times per image);
    image_grid_thw: [k, 3]. Return Qwen2-VL's M-RoPE position ids [3, S] (text and images only)."""
    raise NotImplementedError


def temporal_positions(t, tokens_per_second, second_per_grid_t):
    """The temporal M-RoPE offsets of a Qwen2.5-VL video's t frame pairs: int [t], exactly as
    transformers computes them (its processor hands second_per_grid_t over as float32)."""
    raise NotImplementedError
