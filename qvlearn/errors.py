"""Typed errors raised by qvlearn.

Every error says what is wrong and what to do about it. All of them derive from
:class:`QvlearnError`, which is a :class:`ValueError`, so code written against
transformers' ``ValueError`` keeps working.
"""


class QvlearnError(ValueError):
    """Base class of every error qvlearn raises on bad input."""


class ImageError(QvlearnError):
    """An image or video frame cannot be used: unreadable, empty, wrong dtype/shape, or an
    aspect ratio above 200."""


class InputError(QvlearnError):
    """``pixel_values`` / ``grid_thw`` handed to the encoder do not fit together or hold NaN/Inf."""


class ConfigError(QvlearnError):
    """``config.json`` is missing, unreadable, of another model type, or inconsistent."""


class CheckpointError(QvlearnError):
    """The weights cannot be loaded: missing/corrupt safetensors, a pickled format, or
    missing, extra or wrongly shaped ``visual.*`` tensors."""


class BackendError(QvlearnError):
    """The requested array backend is unknown or not usable on this machine."""


class OutputError(QvlearnError):
    """An output file or cache entry cannot be written (an unwritable folder, a full disk); nothing partial is
    left behind."""


class TapError(QvlearnError):
    """A stage name matches nothing, or a tap file cannot be read or compared: another format version, a missing
    stage, a shape mismatch."""
