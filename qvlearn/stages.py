"""The names of the stages a forward reports, owned by the engine: what a trace, a tap file and compare call them.

Explained in ``docs/porting.md`` (the tap table) and ``notebooks/12_debugging_a_port.ipynb``. Each family reports
its own subset (:func:`stage_names`), decided by its entry of the family table: windows, position table, DeepStack,
the merger's norm name and the stages inside a block.
"""

from __future__ import annotations

import fnmatch
import re

from .errors import TapError

STAGES = ("pixel_values", "grid_thw", "patch_embeds", "pos_embeds", "position_ids", "cos", "sin", "cu_seqlens",
          "window_index", "cu_window_seqlens", "blocks.{i}", "deepstack.{j}", "last_hidden_state", "merger.ln_q",
          "merger.norm", "merger", "embeddings")
"""Names of the stages a forward reports to a tap, in order (each family reports its own subset:
:func:`stage_names`). Float stages are backend arrays, index stages host NumPy arrays. For Qwen2.5-VL,
``patch_embeds``, ``cos`` and ``sin`` are in natural order, while ``blocks.{i}``, ``last_hidden_state``,
``merger.ln_q`` and ``merger`` are in window order (as transformers reports them); ``embeddings`` is in natural
order. Qwen3-VL / Qwen3.5 report ``patch_embeds`` (the Conv3d with its bias), ``pos_embeds`` (the interpolated
position table) and ``merger.norm``; Qwen3-VL also ``deepstack.{j}``, the output of DeepStack merger j. Blocks
whose inner stages are asked for also report ``blocks.{i}.<name>`` for every name of the family's
:attr:`qvlearn.families.Family.block_stages`; :meth:`qvlearn.VisionEncoder.trace` adds ``blocks.{i}.natural``
(Qwen2.5-VL: block i's output in natural order)."""

TAP_STAGES = STAGES[:11] + ("blocks.{i}.natural",) + STAGES[11:]
"""The stages of a tap file: :data:`STAGES` and ``blocks.{i}.natural``."""
INNER_STAGES = ("norm1", "attn.q", "attn.k", "attn", "residual1", "norm2", "mlp.fc1", "mlp.gate", "mlp.up", "mlp.act",
                "mlp")
"""Stages inside block i, named ``blocks.{i}.<name>``, of every family (each family's own list, in order:
:attr:`qvlearn.families.Family.block_stages`)."""
INTEGER_STAGES = ("grid_thw", "position_ids", "cu_seqlens", "window_index", "cu_window_seqlens")
_BLOCK_NAME = re.compile(r"blocks\.(\d+)(?:\.(natural|" + "|".join(map(re.escape, INNER_STAGES)) + r"))?")
_DEEPSTACK_NAME = re.compile(r"deepstack\.(\d+)")


def is_stage_name(name: str) -> bool:
    """Whether ``name`` belongs to the tap format (``blocks.{i}``, ``blocks.{i}.norm1``, ``embeddings``, ...)."""
    return ((name in TAP_STAGES and "{" not in name) or _BLOCK_NAME.fullmatch(name) is not None
            or _DEEPSTACK_NAME.fullmatch(name) is not None)


def block_of(name: str):
    """``(i, inner)`` of a block stage (``blocks.3.norm1`` -> ``(3, "norm1")``, ``blocks.3`` -> ``(3, None)``), or
    None for a stage outside the blocks."""
    match = _BLOCK_NAME.fullmatch(name)
    return (int(match.group(1)), match.group(2)) if match else None


def stage_order(name: str) -> tuple:
    """Sort key following the forward: pixel_values ... blocks.0.norm1 ... blocks.0 ... blocks.31 ...
    embeddings."""
    match = _BLOCK_NAME.fullmatch(name)
    if match:
        inner = match.group(2)
        position = (len(INNER_STAGES) + 1 if inner == "natural" else INNER_STAGES.index(inner) if inner
                    else len(INNER_STAGES))
        return (TAP_STAGES.index("blocks.{i}"), int(match.group(1)), position, "")
    match = _DEEPSTACK_NAME.fullmatch(name)
    if match:
        return (TAP_STAGES.index("deepstack.{j}"), int(match.group(1)), 0, "")
    if name in TAP_STAGES:
        return (TAP_STAGES.index(name), 0, 0, "")
    return (len(TAP_STAGES), 0, 0, name)


def stage_names(config) -> list[str]:
    """Every stage an encoder of ``config`` can report, in forward order (the choices of a trace)."""
    kind = config.kind
    absent = set() if kind.windows else {"window_index", "cu_window_seqlens", "blocks.{i}.natural"}
    absent |= set() if kind.position_table else {"pos_embeds"}
    absent |= {"merger.ln_q", "merger.norm"} - {f"merger.{kind.merger_names[0]}"}
    names = []
    for name in TAP_STAGES:
        if name in absent:
            continue
        if name == "deepstack.{j}":
            names += [f"deepstack.{j}" for j in range(len(config.deepstack_visual_indexes))]
        elif name == "blocks.{i}":
            for i in range(config.depth):
                names += [f"blocks.{i}.{inner}" for inner in kind.block_stages] + [f"blocks.{i}"]
                names += [] if "blocks.{i}.natural" in absent else [f"blocks.{i}.natural"]
        elif name != "blocks.{i}.natural":
            names.append(name)
    return names


def default_stages(config) -> list[str]:
    """What a trace reports when no stages are named: every stage but those inside the blocks."""
    return [n for n in stage_names(config) if (block_of(n) or (0, None))[1] in (None, "natural")]


def select_stages(config, patterns) -> list[str]:
    """The stages of ``config`` matched by the glob ``patterns`` (``"blocks.3.*"``, ``"blocks.*.attn.q"``,
    ``"embeddings"``); a pattern that matches no stage is an error naming the closest names."""
    import difflib

    names = stage_names(config)
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=3)
            raise TapError(f"no stage matches {pattern!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                           + f"; stages are named like pixel_values, blocks.0, blocks.0.norm1, blocks.*.attn.q, "
                           f"embeddings (this {config.family} tower has blocks 0..{config.depth - 1})")
        chosen += hits
    return sorted(set(chosen), key=stage_order)
