"""The exercises: every solution passes its checker, every untouched stub fails it, and the checkers name
the classic mistakes they are about (each wrong variant below is one)."""

import importlib

import numpy as np
import pytest

from exercises.__main__ import MODULES, main
from exercises.checks import EXERCISES, NotYet

KEYS = sorted(EXERCISES)


def _function(key, solutions):
    module = importlib.import_module(f"exercises.{'solutions.' if solutions else ''}{MODULES[key.split('.')[0]]}")
    return getattr(module, EXERCISES[key].function)


def test_every_core_notebook_has_two_to_four_exercises():
    for nb in MODULES:
        count = sum(1 for k in KEYS if k.startswith(nb + "."))
        assert 2 <= count <= 4, (nb, count)


@pytest.mark.parametrize("key", KEYS)
def test_solution_passes(key):
    EXERCISES[key].check(_function(key, solutions=True))


@pytest.mark.parametrize("key", KEYS)
def test_untouched_stub_fails_with_a_helpful_message(key):
    with pytest.raises(NotYet, match="not written yet"):
        EXERCISES[key].check(_function(key, solutions=False))


def _solution(key):
    return _function(key, solutions=True)


WRONG = {
    "01.1": (lambda: 42, "not it"),
    "01.2": (lambda rows, grid: _solution("01.2")(rows, grid)[::-1].copy(), "frames are swapped"),
    "01.3": (lambda p: np.moveaxis((p / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073]))
                                   / np.array([0.26862954, 0.26130258, 0.27577711]), -1, 0).astype(np.float32),
             "not bit-identical"),                                  # all in float64, cast at the end
    "02.1": (lambda r, w: (r @ w.reshape(w.shape[0], -1).T).T, "transposed"),
    "02.2": (lambda w: w.reshape(w.shape[0], -1), "T before C"),
    "03.1": (lambda h, w: np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2),
             "raster-order"),
    "03.2": (lambda d: np.arange(d)[::-1].copy(), "scores differ"),
    "04.1": (lambda grids: np.concatenate([[0], np.cumsum([h * w * t for t, h, w in grids])]), "frame pairs"),
    "04.2": (lambda grids, window_size=112: _no_offset(grids, window_size), "start at 0 again"),
    "05.1": (lambda shards, weights, eps=1e-6: [x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
                                                for x, w in zip(shards, weights)], "own mean square"),
    "05.2": (lambda x: 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2))), "exact"),
    "05.3": (lambda x, **p: _solution("05.3")(x, **dict(p, gate_proj_weight=p["up_proj_weight"],
                                                         up_proj_weight=p["gate_proj_weight"],
                                                         gate_proj_bias=p["up_proj_bias"],
                                                         up_proj_bias=p["gate_proj_bias"])), "swapped"),
    "06.1": (lambda q, k, v, cu: _solution("06.1")(q, k, v, np.array([0, len(q)])), "across segments"),
    "06.2": (lambda q, k, v, chunk: _full_softmax(q, k, v), "peak memory"),
    "07.1": (lambda x, h, w: x, "unchanged"),
    "07.2": (lambda x, ln_q_weight, **p: _solution("07.2")(x, np.ones_like(ln_q_weight), **p), "differs"),
    "08.1": (lambda x, index: x[index], "groups of 4"),
    "08.2": (lambda t, index: t[index], "second time"),
    "10.1": (lambda ids, grids: _max_plus_one(ids, grids), "first difference"),
    "10.2": (lambda t, s, pps=25: (np.arange(t, dtype=np.float32) * (np.float32(pps) * np.float32(s))).astype(int),
             "Qwen2.5-VL's order"),
}


def _full_softmax(q, k, v):
    """Right, but the whole [heads, N, N] score matrix at once."""
    s = np.einsum("qhd,khd->hqk", q, k) * q.shape[-1] ** -0.5
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hqk,khd->qhd", p / p.sum(-1, keepdims=True), v)


def _no_offset(grids, window_size=112):
    index, cu = [], [0]
    for g in grids:
        i, c = _solution("04.2")([g], window_size)
        index.extend(i)
        cu.extend(c[1:] + cu[-1])
    return np.array(index), np.array(cu)


def _max_plus_one(ids, grids):
    pos = _solution("10.1")(ids, grids)
    return np.where(np.arange(pos.shape[1]) > np.flatnonzero(ids == 151655)[-1], pos + 1, pos)


def test_every_exercise_has_a_wrong_variant():
    assert set(WRONG) == set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_checker_names_the_mistake(key):
    wrong, message = WRONG[key]
    with pytest.raises(NotYet, match=message):
        EXERCISES[key].check(wrong)


def test_command_line(capsys):
    assert main(["3", "--solutions"]) == 0
    assert "2 of 2 solved" in capsys.readouterr().out
    assert main(["03"]) == 1
    assert "not written yet" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["15"])
    assert "no exercises for notebook 15" in capsys.readouterr().err


def _max_free_online_softmax(q, k, v, chunk):
    """Keys in blocks, a running sum and accumulator, but no running max: right until exp overflows."""
    qh, kh, vh = (z.transpose(1, 0, 2) for z in (q, k, v))
    qh = qh * q.shape[-1] ** -0.5
    total, acc = 0.0, 0.0
    for a in range(0, kh.shape[1], chunk):
        p = np.exp(qh @ kh[:, a:a + chunk].transpose(0, 2, 1))
        total, acc = total + p.sum(-1, keepdims=True), acc + p @ vh[:, a:a + chunk]
    return (acc / total).transpose(1, 0, 2)


def test_an_online_softmax_without_its_guard_is_rejected():
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NotYet, match="NaN or Inf: exp overflows"):
            EXERCISES["06.2"].check(_max_free_online_softmax)


def _float32_scale_error(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(abs(np.sum(a * b, dtype=np.float32) / np.sum(b * b, dtype=np.float32) - 1))


def _inverse_interleave(d):
    right = np.empty(d, dtype=int)
    right[0::2], right[1::2] = np.arange(d // 2), np.arange(d // 2) + d // 2
    return np.argsort(right)


@pytest.mark.parametrize("key, wrong, message", [
    ("12.1", _float32_scale_error, "float32 sums cannot hold it"),
    ("03.2", _inverse_interleave, "the inverse of the permutation"),
    ("03.2", lambda d: np.arange(d), "that is the identity"),
    ("09.2", lambda g: 1 + np.repeat(np.arange(sum(t for t, _, _ in np.asarray(g).tolist())),
                                     [h * w for t, h, w in np.asarray(g).tolist() for _ in range(t)]),
     "a segment's index is its place in cu_seqlens"),
])
def test_the_checkers_tell_the_plausible_mistakes_apart(key, wrong, message):
    """A float32 scale error, the inverse permutation, the identity and segment labels off by one: each named."""
    with pytest.raises(NotYet, match=message):
        EXERCISES[key].check(wrong)


def test_no_message_gives_the_answer_away():
    with pytest.raises(NotYet) as err:
        EXERCISES["03.2"].check(lambda d: np.arange(d))
    assert "2i + 1" not in str(err.value) and "scores differ" in str(err.value)


def _without_norm2_gain(config, weights, pixel_values, grid_thw, tap):
    """A port that drops block 1's norm2 gain (a norm of ones)."""
    from qvlearn import spec

    weights = dict(weights, **{"blocks.1.norm2.weight": np.ones_like(weights["blocks.1.norm2.weight"])})
    return spec.forward(config, weights, pixel_values, grid_thw, tap=tap)


def _deepstack_reversed(config, weights, pixel_values, grid_thw, tap):
    from qvlearn import spec

    out, features = spec.forward(config, weights, pixel_values, grid_thw, deepstack=True,
                                 tap=lambda n, a: None if n.startswith("deepstack") else tap(n, a))
    for j, feature in enumerate(reversed(features)):
        tap(f"deepstack.{j}", feature)
    return out


# the capstone: a port that departs at one stage; the checker names it and the stages before that agree
WRONG["14.1"] = (_without_norm2_gain, "first stage beyond tolerance: blocks.1.norm2 .*every stage before agree")
WRONG["14.2"] = (_deepstack_reversed, "first stage beyond tolerance: deepstack.0 .*every stage before agree")


def _eps_1e5(config, weights, pixel_values, grid_thw, tap):
    """A port whose norms use eps = 1e-5 (the torch default) instead of the checkpoint's 1e-6."""
    import dataclasses

    from qvlearn import spec

    return spec.forward(dataclasses.replace(config, eps=1e-5), weights, pixel_values, grid_thw, tap=tap)


def test_the_capstone_checker_compares_every_stage_tapped_inner_ones_too():
    """With every stage tapped the checker names the first norm that departs; with only the main stages it can
    only name a block: the more stages tapped, the closer it points."""
    from exercises.checks import EXERCISES, NotYet
    from qvlearn.stages import INNER_STAGES

    with pytest.raises(NotYet) as every:
        EXERCISES["14.1"].check(_eps_1e5)
    assert str(every.value).startswith("first stage beyond tolerance: blocks.0.norm1 "), str(every.value)

    def main_stages_only(config, weights, pixel_values, grid_thw, tap):
        inner = tuple(f".{s}" for s in INNER_STAGES)
        return _eps_1e5(config, weights, pixel_values, grid_thw,
                        lambda n, a: None if n.startswith("blocks.") and n.endswith(inner) else tap(n, a))

    with pytest.raises(NotYet) as main:
        EXERCISES["14.1"].check(main_stages_only)
    named = str(main.value).split(": ", 1)[1].split(" ")[0]
    assert named.startswith("blocks.") and named.count(".") == 1, str(main.value)


def _first_far_stage(port, golden):
    """Finds the first stage off by more than 1e-3: misses the bugs that only a scale error shows."""
    return next((n for n in port
                 if not np.allclose(port[n], golden[n], rtol=1e-3, atol=1e-3 * np.abs(golden[n]).max())), None)


def _table_without_interpolation(h, w, side):
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    idx = np.zeros((h * w, 4), dtype=np.int64)
    idx[:, 0] = np.minimum(rows, side - 1).reshape(-1) * side + np.minimum(cols, side - 1).reshape(-1)
    wts = np.zeros((h * w, 4), dtype=np.float32)
    wts[:, 0] = 1
    return idx, wts


def _merger_without_norm(x, weights, eps=1e-6):
    from scipy.special import erf

    m = x.reshape(len(x) // 4, -1)
    h = m @ weights["linear_fc1.weight"].T + weights["linear_fc1.bias"]
    return (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ weights["linear_fc2.weight"].T + weights["linear_fc2.bias"]


WRONG.update({
    "09.1": (lambda n, h, w: (n // 2, h // 14, w // 14), "repeats the last frame"),
    "09.2": (lambda g: np.repeat(np.arange(len(g)), [t * h * w for t, h, w in np.asarray(g).tolist()]),
             "one segment per entry"),
    "11.1": (lambda x: (np.asarray(x, np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32), "truncates"),
    "11.2": (lambda rms, width: int(np.argmax(np.asarray(rms) ** 2 > 65504)), "fp16 holds at most 65504"),
    "12.1": (lambda a, b: float(np.abs(a - b).max() / np.abs(b).max()), "not a max-based error"),
    "12.2": (_first_far_stage, "scale error too"),
    "13.1": (_table_without_interpolation, "differs from the reference"),
    "13.2": (lambda section, head_dim=128: np.concatenate([np.full(n, i) for i, n in enumerate(section)]),
             "contiguous sections"),
    "13.3": (_merger_without_norm, "DeepStack merger differs"),
})
