"""Exercises 11 · the precision lab (notebooks/11_precision_lab.ipynb).

Write each function, then check it:  python -m exercises 11
Solutions: exercises/solutions/ex11_precision.py (try first!)
"""


def round_to_bf16(x):
    """float32 array -> the nearest bfloat16 value of each element, returned as float32 (what ``tensor.to(
    torch.bfloat16).float()`` gives), using only integer operations on the float32 bits (``x.view(np.uint32)``).
    Ties go to even, as every GPU rounds."""
    raise NotImplementedError


def first_fp16_overflow(rms_per_block, width):
    """``rms_per_block``: the RMS of the residual stream after each block (float [depth]); ``width``: its channel
    count. An fp16 port computes ``mean(x * x)`` in fp16 for the next norm; return the index of the first block
    whose output makes that overflow for a row of this RMS (-1 if none does)."""
    raise NotImplementedError
