"""Notebook 08's quantize_rows check on ties, its group sizes, and its int8-activations cell's skip."""

import json
import types

import pytest
import torch

from helpers import check
from helpers.check.int8 import QUANTIZE_ROWS_MISTAKES, int8_matrix, quantize_rows_reference
from helpers.model import REPO_ROOT as ROOT
from helpers.model import TINY_MODEL_DIR, load_model

from conftest import load_script


def verdict(capsys, learner):
    check.quantize_rows(learner)
    return capsys.readouterr().out.rstrip("\n")


# ---- quantize_rows: a tie may round either way ------------------------------------------------------------

def times_127_over_absmax(w):
    absmax = w.abs().amax(dim=1)
    return (w * 127 / absmax[:, None]).round().to(torch.int8), absmax / 127


def over_absmax_times_127(w):
    absmax = w.abs().amax(dim=1)
    return (w / absmax[:, None] * 127).round().to(torch.int8), absmax / 127


def in_float64(w):
    scales = w.double().abs().amax(dim=1) / 127
    return (w.double() / scales[:, None]).round().to(torch.int8), scales.float()


def the_solution(w):
    return load_script("solutions/08_int8.py").my_quantize_rows(w)


def test_the_formulas_round_ties_differently():
    """What the check must allow: the correct formulas part at exact ties, on both of the check's matrices."""
    for name in ("tiny", "dim 96"):
        w = int8_matrix(name)
        assert not torch.equal(times_127_over_absmax(w)[0], quantize_rows_reference(w)[0])


@pytest.mark.parametrize("learner", [times_127_over_absmax, over_absmax_times_127, in_float64, the_solution,
                                     quantize_rows_reference])
def test_every_correct_formula_is_correct(capsys, learner):
    assert verdict(capsys, learner) == "correct"


@pytest.mark.parametrize("diagnosis", QUANTIZE_ROWS_MISTAKES)
def test_each_mistake_keeps_its_diagnosis(capsys, diagnosis):
    assert verdict(capsys, QUANTIZE_ROWS_MISTAKES[diagnosis]) == f"wrong: {diagnosis}"


def test_the_absmax_scale_is_named_whichever_way_the_values_round_ties(capsys):
    """The values right, by (w / scale).round(), but absmax returned as the scale: the mistake rounds its ties by
    w / absmax * 127, and this formula the other way, so the diagnosis used to be missed."""
    def absmax_scale(w):
        absmax = w.abs().amax(dim=1)
        return (w / (absmax[:, None] / 127)).round().to(torch.int8), absmax

    assert verdict(capsys, absmax_scale) == "wrong: " + next(d for d in QUANTIZE_ROWS_MISTAKES if "127, so that" in d)


def test_one_value_off_where_there_is_no_tie_is_wrong(capsys):
    def one_off(w):
        values, scales = quantize_rows_reference(w)
        values = values.clone()
        values[0, 0] += 1 if values[0, 0] < 127 else -1  # w[0, 0] / scale is not a tie in either matrix
        return values, scales

    assert verdict(capsys, one_off).startswith("wrong: the tiny model, layer 0's w1: at index 0")


def test_a_tie_rounded_to_neither_neighbour_is_wrong(capsys):
    def two_off(w):
        values, scales = quantize_rows_reference(w)
        exact = w.double() * 127 / w.double().abs().amax(dim=1, keepdim=True)  # exact ties are exactly k + 1/2
        tie = (exact.abs() % 1 == 0.5).nonzero()[0]
        values = values.clone()
        values[tuple(tie)] += 2 if values[tuple(tie)] < 0 else -2
        return values, scales

    assert verdict(capsys, two_off).startswith("wrong: the tiny model, layer 0's w1: at index 0")


# ---- notebook 08's cells ----------------------------------------------------------------------------------

def cells(name="08_int8"):
    notebook = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    return {cell["id"]: "".join(cell["source"]) for cell in notebook["cells"]}


@pytest.mark.parametrize("width", [64, 2048, 3072, 4096])
def test_the_group_sizes_end_with_the_whole_row(width):
    """The sizes of notebook 08's error plot, for the tiny model's, Llama 3.2 1B's, 3B's and the 8B's wq."""
    line = next(line for line in cells()["90438bb7"].splitlines() if line.startswith("sizes = "))
    namespace = {"width": width}
    exec(line, namespace)
    sizes = namespace["sizes"]
    assert sizes[-1] == width and sizes[0] == 8 and sizes == sorted(set(sizes))
    assert all(width % size == 0 for size in sizes)
    assert all(size & (size - 1) == 0 for size in sizes[:-1])
    if width == 3072:
        assert sizes[-2:] == [1024, 3072]


@pytest.fixture(scope="module")
def before_the_activations_cell():
    """The namespace of notebook 08 on the tiny model up to its int8-activations cell (the cells it needs)."""
    source = cells()
    from helpers import quantize_int8

    namespace = {"model": load_model(TINY_MODEL_DIR, verbose=False), "quantize_int8": quantize_int8}  # cells 2, 10
    for cell_id in ("6d866f1f", "3d8d99a5", "3d46cd58", "93d57aa4"):
        exec(source[cell_id], namespace)
    return namespace


def run_activations_cell(namespace, memory, monkeypatch, capsys, copies_here=True):
    """The cell, as on a machine with `memory` bytes whose CPU gets the packed copies (`copies_here`), or not."""
    import helpers.int8

    monkeypatch.setattr(helpers.int8, "onednn_here", lambda: copies_here)
    monkeypatch.setattr(helpers.int8, "int8_dot_products", lambda: copies_here)
    capsys.readouterr()
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": memory // 4096}
    namespace = dict(namespace, os=types.SimpleNamespace(sysconf=pages.__getitem__))
    exec(cells()["rounded-activations-1"], namespace)
    return namespace, capsys.readouterr().out


def test_the_activations_cell_is_skipped_where_the_copies_do_not_fit(before_the_activations_cell, monkeypatch,
                                                                     capsys):
    from helpers import weight_bytes

    int8_bytes = weight_bytes(before_the_activations_cell["model8"])
    namespace, out = run_activations_cell(before_the_activations_cell, 2 * int8_bytes, monkeypatch, capsys)
    assert out.startswith("skipped: with its packed copies") and "rounded" not in namespace


def test_the_activations_cell_runs_where_they_fit_or_are_not_made(before_the_activations_cell, monkeypatch,
                                                                   capsys):
    from helpers import weight_bytes

    int8_bytes = weight_bytes(before_the_activations_cell["model8"])
    for memory, copies_here in [(2 ** 40, False), (2 * int8_bytes, False)]:
        namespace, out = run_activations_cell(before_the_activations_cell, memory, monkeypatch, capsys, copies_here)
        assert out.startswith("int8 weights and activations: 283 positions") and "rounded" in namespace
