"""The VNN-LIB 1.0 reader (``boundgraph/vnnlib.py``): input boxes and output rows ``C·y ≤ d`` of each
disjunct of the unsafe set, from the shapes VNN-COMP properties take; unreadable properties are errors."""
import pytest
import torch

from boundgraph.vnnlib import VnnlibError, read

ACAS_LIKE = """
; a property in the style of ACAS Xu's: the first output is minimal (unsafe), over a box
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (<= X_1 1e-1))
(assert (>= X_1 -2))
(assert (<= Y_0 Y_1))
(assert (< Y_0 (+ Y_2 (* 2 0.25))))
"""


def test_a_box_and_a_conjunction_of_output_rows_become_one_case():
    (case,) = read(ACAS_LIKE, inputs=2, outputs=3)
    assert case.lower.tolist() == [-0.5, -2.0] and case.upper.tolist() == [0.5, 0.1]
    assert case.C.tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]] and case.d.tolist() == [0.0, 0.5]


def test_disjunctions_of_boxes_and_of_output_conjunctions_multiply_out():
    text = """(declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
    (assert (or (and (>= Y_0 Y_1)) (and (<= Y_0 -1) (>= Y_1 (- 2 (- 1))))))"""
    cases = read(text)
    assert [(c.lower.item(), c.upper.item()) for c in cases] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    assert cases[0].C.tolist() == [[-1.0, 1.0]] and cases[0].d.tolist() == [0.0]
    assert cases[1].C.tolist() == [[1.0, 0.0], [0.0, -1.0]] and cases[1].d.tolist() == [-1.0, -3.0]


def test_an_empty_box_holds_no_counterexample_and_is_dropped():
    text = "(declare-const X_0 Real) (declare-const Y_0 Real) (assert (>= X_0 1)) (assert (<= X_0 0)) (assert (<= Y_0 0))"
    assert read(text) == []


@pytest.mark.parametrize("text, message", [
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= X_0 1)) (assert (<= Y_0 0))", "no lower and upper"),
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= (* Y_0 Y_0) 1))", "not linear"),
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= (+ X_0 Y_0) 1))", "only bounds of one input"),
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= Y_3 1))", "Y_3 is used but not declared"),
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= Y_0 1)", "never closed"),
    ("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (=> Y_0 1))", "unsupported connective"),
    ("(declare-const X_0 Int) (declare-const Y_0 Real)", "only 'declare-const X_i Real'"),
])
def test_an_unreadable_property_is_an_error_saying_what(text, message):
    with pytest.raises(VnnlibError, match=message):
        read(text)


def test_the_declared_sizes_must_be_the_models(tmp_path):
    path = tmp_path / "p.vnnlib"
    path.write_text(ACAS_LIKE)
    with pytest.raises(VnnlibError, match=r"p.vnnlib: declares 3 outputs, the model has 5"):
        read(path, inputs=2, outputs=5)
    assert torch.equal(read(path)[0].upper, torch.tensor([0.5, 0.1], dtype=torch.float64))
