"""Exercises 01 · preprocessing (notebooks/01_preprocessing.ipynb).

Write each function, then check it:  python -m exercises 01
Solutions: exercises/solutions/ex01_preprocessing.py (try first!)
"""




def first_c_rounding_mismatch():
    """The smallest n for which an n x n image gets a different token count when smart_resize rounds
    n / 28 like C's round() (halves away from zero) instead of Python's round() (halves to even).
    Return an int. Hint: qvlearn.smart_resize is the reference rule; write the C-style variant."""
    raise NotImplementedError


def unpatchify(pixel_values, grid_thw):
    """The inverse of the processor's patchify, for one image: ``pixel_values [h * w, 1176]`` and ``grid_thw``
    (1, h, w) -> the frame pair float32 [2, 3, 14 * h, 14 * w]. (A port that can undo the layout has understood
    it: notebook 1, section 4.)"""
    raise NotImplementedError


def normalize(pixels):
    """pixels: uint8 [H, W, 3]. Return float32 [3, H, W] = (x / 255 - mean) / std with the OpenAI CLIP
    mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711),
    bit-identical to transformers' Qwen2VLImageProcessorPil."""
    raise NotImplementedError
