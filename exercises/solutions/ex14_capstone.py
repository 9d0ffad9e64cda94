"""Solutions 14 · the capstone. The whole forward is qvlearn/spec.py: read it top to bottom (notebook 14 prints it);
its functions are the ones exercises 01-08 and notebook 13 derive."""

from qvlearn import spec


def encoder_forward(config, weights, pixel_values, grid_thw, tap):
    return spec.forward(config, weights, pixel_values, grid_thw, tap=tap)


def encoder_forward_qwen3(config, weights, pixel_values, grid_thw, tap):
    return spec.forward(config, weights, pixel_values, grid_thw, tap=tap)
