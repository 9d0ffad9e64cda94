"""Exercises 13 · the third generation (notebooks/13_qwen3_vl.ipynb).

Write each function, then check it:  python -m exercises 13
Solutions: exercises/solutions/ex13_qwen3.py (try first!)
"""


def position_table_taps(h, w, side):
    """Qwen3's learned ``side x side`` table read at an ``h x w`` patch grid, bilinearly with the corners aligned:
    for every patch in **raster** order, the 4 table entries it mixes and their weights -- (indices int [h*w, 4],
    weights float32 [h*w, 4]), in the order (top-left, top-right, bottom-left, bottom-right)."""
    raise NotImplementedError


def interleaved_mrope_rows(mrope_section, head_dim=128):
    """Qwen3-VL's interleaved M-RoPE: for each of the LLM's head_dim / 2 rotary frequencies, which position row
    drives it (0 = t, 1 = h, 2 = w), given ``mrope_section`` (e.g. [24, 20, 20]). Int [head_dim / 2]."""
    raise NotImplementedError


def deepstack_merger(x, weights, eps=1e-6):
    """One DeepStack merger: ``x`` [N, D] (a block's output, rows in 2x2 merge-block order) and ``weights`` with
    ``norm.weight``, ``norm.bias`` [4D], ``linear_fc1.weight`` [4D, 4D], ``linear_fc1.bias``, ``linear_fc2.weight``
    [out, 4D], ``linear_fc2.bias``. Return its output [N/4, out]."""
    raise NotImplementedError
