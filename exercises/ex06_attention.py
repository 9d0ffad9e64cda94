"""Exercises 06 · attention (notebooks/06_attention.ipynb).

Write each function, then check it:  python -m exercises 06
Solutions: exercises/solutions/ex06_attention.py (try first!)
"""



def segment_attention(q, k, v, cu_seqlens):
    """q, k, v: float32 [N, heads, head_dim]; cu_seqlens: the segment boundaries. Return [N, heads,
    head_dim]: softmax(q k^T / sqrt(head_dim)) v within each segment, per head."""
    raise NotImplementedError


def chunked_attention(q, k, v, chunk):
    """Full attention (one segment) without ever holding the [heads, N, N] scores: walk the keys in
    blocks of `chunk` with an online softmax (running max, running sum, rescaled accumulator)."""
    raise NotImplementedError
