"""Exercises 06 · attention (notebooks/06_attention.ipynb).

Write each function, then check it:  python -m exercises 06
Solutions: exercises/solutions/ex06_attention.py (try first!)
"""



def padded_batch_attention(q, k, v, cu_seqlens):
    """Attention within segments the way an SDPA- or ONNX-based port runs it: pad every segment
    ``cu_seqlens[i]:cu_seqlens[i+1]`` of q, k, v [N, heads, head_dim] to the longest one, run one batched attention
    ``[segments, heads, L_max, L_max]`` with the padding masked out, and return the real rows [N, heads, head_dim]
    in their original order."""
    raise NotImplementedError


def chunked_attention(q, k, v, chunk):
    """Full attention (one segment) without ever holding the [heads, N, N] scores: walk the keys in
    blocks of `chunk` with an online softmax (running max, running sum, rescaled accumulator)."""
    raise NotImplementedError
