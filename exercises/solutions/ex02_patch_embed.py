"""Solutions to the exercises 02 · patch embedding (notebooks/02_patch_embed.ipynb)."""



def conv3d_as_matmul(rows, weight):
    """rows: [N, 1176] pixel_values rows laid out (C=3, T=2, 14, 14); weight: the Conv3d weight
    [out, 3, 2, 14, 14] (kernel = stride, no bias). Return the embeddings [N, out] with one matmul."""
    return rows @ weight.reshape(weight.shape[0], -1).T


def weight_for_tc_rows(weight):
    """A port lays each row out (T, C, 14, 14) instead of (C, T, 14, 14). Return the [out, 1176]
    matrix M such that rows_tc @ M.T equals the Conv3d's output."""
    return weight.transpose(0, 2, 1, 3, 4).reshape(weight.shape[0], -1)
