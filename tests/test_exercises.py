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
    "01.2": (lambda f: _solution("01.2")(f).reshape(f.shape[2] // 14, f.shape[3] // 28, 2, -1)
             .transpose(0, 2, 1, 3).reshape(-1, 1176), "another order"),
    "01.3": (lambda p: np.moveaxis((p / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073]))
                                   / np.array([0.26862954, 0.26130258, 0.27577711]), -1, 0).astype(np.float32),
             "not bit-identical"),                                  # all in float64, cast at the end
    "02.1": (lambda r, w: (r @ w.reshape(w.shape[0], -1).T).T, "transposed"),
    "02.2": (lambda w: w.reshape(w.shape[0], -1), "T before C"),
    "03.1": (lambda h, w: np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2),
             "raster-order"),
    "03.2": (lambda d: np.arange(d), "scores differ"),
    "04.1": (lambda grids: np.concatenate([[0], np.cumsum([h * w * t for t, h, w in grids])]), "frame pairs"),
    "04.2": (lambda grids: _no_offset(grids), "start at 0 again"),
    "05.1": (lambda x, w, eps=1e-6: (x - x.mean(-1, keepdims=True))
             / np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + eps) * w, "LayerNorm"),
    "05.2": (lambda x: 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2))), "exact"),
    "05.3": (lambda x, **p: _solution("05.3")(x, **dict(p, gate_proj_weight=p["up_proj_weight"],
                                                         up_proj_weight=p["gate_proj_weight"],
                                                         gate_proj_bias=p["up_proj_bias"],
                                                         up_proj_bias=p["gate_proj_bias"])), "swapped"),
    "06.1": (lambda q, k, v, cu: _solution("06.1")(q, k, v, np.array([0, len(q)])), "across segments"),
    "06.2": (lambda q, k, v, chunk: _solution("06.1")(q, k, v, np.array([0, len(q)])), "peak memory"),
    "07.1": (lambda x, h, w: x, "unchanged"),
    "07.2": (lambda x, ln_q_weight, **p: _solution("07.2")(x, np.ones_like(ln_q_weight), **p), "differs"),
    "08.1": (lambda x, index: x[index], "groups of 4"),
    "08.2": (lambda t, index: t[index], "second time"),
    "10.1": (lambda ids, grids: _max_plus_one(ids, grids), "first difference"),
    "10.2": (lambda t, tps, s: np.floor(np.arange(t) * (tps * s)).astype(int), "float64"),
}


def _no_offset(grids):
    index, cu = [], [0]
    for g in grids:
        i, c = _solution("04.2")([g])
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
        main(["09"])
    assert "no exercises for notebook 09" in capsys.readouterr().err
