"""Exercises 09 · videos and batches (notebooks/09_videos_and_batches.ipynb).

Write each function, then check it:  python -m exercises 09
Solutions: exercises/solutions/ex09_videos.py (try first!)
"""


def video_grid(num_frames, height, width):
    """A video of ``num_frames`` frames already resized to ``height x width`` pixels (multiples of 28): its
    ``grid_thw`` row (t, h, w) as Qwen2VLVideoProcessor makes it -- 2 frames per temporal patch, 14-px patches.
    Think about an odd number of frames."""
    raise NotImplementedError


def frame_pair_segments(grid_thw):
    """A batch's ``grid_thw`` [k, 3] -> for every patch row, the index of the attention segment it belongs to
    (int [N]): rows attend to each other exactly when they share a segment."""
    raise NotImplementedError
