"""The fast engine: kernels behind one table, run by :class:`qvlearn.VisionEncoder`.

    kernels    the kernel table (KERNELS) and its documented entries: the hook points of the tools
    block      the block's three steps (project, finish) and the merger, through the table
    attention  segment attention: max-free exp2 softmax with an online-softmax fallback, tiles, threads
    parallel   row and head parts on a thread pool (NumPy), set_threads
    patch_embed, norms, layers, merger     the kernels the table holds (exp2, ``out=``, GELU as x*sigmoid(2u))
    rotary, window_index, pos_embed        the host index builders and RoPE as a complex multiplication

The readable forward of the same mathematics is :mod:`qvlearn.spec`; ``tests/test_spec.py`` holds them equal.
"""
