"""VNN-LIB 1.0 properties (the VNN-COMP format) in.

A property file declares the inputs ``X_0 … X_{n−1}`` and outputs ``Y_0 … Y_{m−1}`` (``declare-const``, type
``Real``) and asserts, in SMT-LIB syntax, the **unsafe** set: inputs and outputs that would be a counterexample.
Every ``assert`` must hold; an assert is a comparison (``<=``, ``>=``, ``<``, ``>``; a strict one is read as the
non-strict one, a superset of the unsafe set, so "no counterexample" stays a proof), or an ``and`` / ``or`` of
them, nested at will. Terms are linear: variables, numbers, ``+``, ``-``, and ``*`` by a number.

``read`` puts the conjunction of the asserts in disjunctive normal form and returns one ``Case`` per disjunct: an
input box (from comparisons of one input with a number) and the output rows ``C·y ≤ d`` (every other
comparison). The property holds (``unsat``: no counterexample) iff for every case no ``x`` in the box has
``C·f(x) ≤ d`` in every row, which a lower bound ``min_x (C_i·f(x) − d_i) > 0`` of one row proves.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VARIABLE = re.compile(r"([XY])_(\d+)$")
_COMPARISONS = {"<=": 1.0, "<": 1.0, ">=": -1.0, ">": -1.0}  # lhs − rhs ≤ 0, or rhs − lhs ≤ 0


class VnnlibError(ValueError):
    """A property this reader cannot take: the message names the file and what is wrong."""


@dataclass
class Case:
    """One disjunct of the unsafe set: ``lower ≤ x ≤ upper`` (``(inputs,)``) and ``C·y ≤ d`` in every row
    (``C``: ``(rows, outputs)``, ``d``: ``(rows,)``)."""

    lower: Tensor
    upper: Tensor
    C: Tensor
    d: Tensor


def _parse(tokens: list[str], where: str) -> list:
    """S-expressions of ``tokens`` as nested lists of strings."""
    stack: list[list] = [[]]
    for token in tokens:
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) == 1:
                raise VnnlibError(f"{where}: a ')' closes nothing")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise VnnlibError(f"{where}: {len(stack) - 1} '(' never closed")
    return stack[0]


def _linear(term, where: str) -> dict:
    """``term`` as ``{variable: coefficient, 1: constant}`` (variables are ``("X", i)`` / ``("Y", i)``)."""
    if isinstance(term, str):
        match = _VARIABLE.match(term)
        if match:
            return {(match.group(1), int(match.group(2))): 1.0}
        try:
            return {1: float(term)}
        except ValueError:
            raise VnnlibError(f"{where}: {term!r} is neither a number nor a declared X_i / Y_i") from None
    if not term or not isinstance(term[0], str):
        raise VnnlibError(f"{where}: cannot read the term {term!r}")
    op, args = term[0], [_linear(a, where) for a in term[1:]]
    if op == "+" and args:
        return _sum(args)
    if op == "-" and len(args) == 1:
        return {k: -v for k, v in args[0].items()}
    if op == "-" and len(args) >= 2:
        return _sum([args[0]] + [{k: -v for k, v in a.items()} for a in args[1:]])
    if op == "*" and len(args) == 2:
        constant = [a for a in args if set(a) <= {1}]
        if not constant:
            raise VnnlibError(f"{where}: a product of two variables is not linear: {term!r}")
        factor, other = constant[0].get(1, 0.0), args[1] if args[0] is constant[0] else args[0]
        return {k: factor * v for k, v in other.items()}
    raise VnnlibError(f"{where}: unsupported term {term!r} (linear terms: +, -, * by a number)")


def _sum(terms: list[dict]) -> dict:
    total: dict = {}
    for term in terms:
        for k, v in term.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _dnf(formula, where: str) -> list[list[dict]]:
    """``formula`` as a list of conjunctions, each a list of atoms ``expression ≤ 0``."""
    if not isinstance(formula, list) or not formula or not isinstance(formula[0], str):
        raise VnnlibError(f"{where}: cannot read the formula {formula!r}")
    op = formula[0]
    if op in _COMPARISONS:
        if len(formula) != 3:
            raise VnnlibError(f"{where}: a comparison takes two terms: {formula!r}")
        sign = _COMPARISONS[op]
        difference = _sum([_linear(formula[1], where), {k: -v for k, v in _linear(formula[2], where).items()}])
        return [[{k: sign * v for k, v in difference.items()}]]
    if op == "and":
        return [sum(parts, []) for parts in itertools.product(*(_dnf(f, where) for f in formula[1:]))]
    if op == "or":
        return [conjunction for f in formula[1:] for conjunction in _dnf(f, where)]
    raise VnnlibError(f"{where}: unsupported connective {op!r} (and, or, <=, >=, <, >)")


def read(source: Union[str, Path], inputs: int | None = None, outputs: int | None = None,
         dtype: torch.dtype = torch.float64) -> list[Case]:
    """The cases of the VNN-LIB property in file ``source`` (or the text itself when it has a parenthesis).
    ``inputs`` / ``outputs``: the model's sizes, checked against the declarations when given."""
    text = Path(source).read_text() if "(" not in str(source) else str(source)
    where = str(source) if "(" not in str(source) else "the property"
    text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    asserts = []
    for command in _parse(_TOKEN.findall(text), where):
        if not isinstance(command, list) or not command:
            raise VnnlibError(f"{where}: {command!r} outside a command")
        if command[0] == "declare-const":
            match = _VARIABLE.match(command[1]) if len(command) == 3 else None
            if match is None or command[2] != "Real":
                raise VnnlibError(f"{where}: only 'declare-const X_i Real' and 'Y_i Real' are read, not {command!r}")
            declared[match.group(1)].add(int(match.group(2)))
        elif command[0] == "assert" and len(command) == 2:
            asserts.append(command[1])
        else:
            raise VnnlibError(f"{where}: unsupported command {command[0]!r} (declare-const, assert)")
    sizes = {}
    for kind, given in (("X", inputs), ("Y", outputs)):
        count = len(declared[kind])
        if declared[kind] != set(range(count)) or not count:
            raise VnnlibError(f"{where}: {kind}_0 … {kind}_{{n−1}} must all be declared, "
                              f"found {sorted(declared[kind])}")
        if given is not None and given != count:
            raise VnnlibError(f"{where}: declares {count} {'inputs' if kind == 'X' else 'outputs'}, "
                              f"the model has {given}")
        sizes[kind] = count
    conjunctions = [sum(parts, []) for parts in itertools.product(*(_dnf(a, where) for a in asserts))]
    cases = []
    for atoms in conjunctions:
        lower = torch.full((sizes["X"],), -torch.inf, dtype=dtype)
        upper = torch.full((sizes["X"],), torch.inf, dtype=dtype)
        rows, offsets = [], []
        for atom in atoms:
            for key in atom:
                if key != 1 and key[1] >= sizes[key[0]]:
                    raise VnnlibError(f"{where}: {key[0]}_{key[1]} is used but not declared")
            variables = {k: v for k, v in atom.items() if k != 1 and v != 0}
            constant = atom.get(1, 0.0)
            if any(k[0] == "X" for k in variables):
                if len(variables) != 1:
                    raise VnnlibError(f"{where}: only bounds of one input by a number are read (an input box), "
                                      f"not {atom}")
                (_, index), coefficient = next(iter(variables.items()))
                value = -constant / coefficient  # coefficient·x + constant ≤ 0
                if coefficient > 0:
                    upper[index] = min(float(upper[index]), value)
                else:
                    lower[index] = max(float(lower[index]), value)
            elif variables:
                row = torch.zeros(sizes["Y"], dtype=dtype)
                for (_, index), coefficient in variables.items():
                    row[index] = coefficient
                rows.append(row)
                offsets.append(-constant)
            elif constant > 0:  # a false constant atom: this disjunct is empty
                break
        else:
            if not bool(torch.isfinite(lower).all() and torch.isfinite(upper).all()):
                missing = [i for i in range(sizes["X"]) if not (torch.isfinite(lower[i]) and torch.isfinite(upper[i]))]
                raise VnnlibError(f"{where}: inputs {missing} have no lower and upper bound in some disjunct")
            if bool((lower > upper).any()):
                continue  # an empty box holds no counterexample
            C = torch.stack(rows) if rows else torch.zeros(0, sizes["Y"], dtype=dtype)
            cases.append(Case(lower, upper, C, torch.tensor(offsets, dtype=dtype)))
    return cases
