"""Any torch call whose operands do not depend on the model's inputs (weights transposed, sliced,
standardised, ...): computed exactly, like every constant, so it needs no bound rule."""
from __future__ import annotations

from typing import Any

from torch import fx

from .base import Rule, rule


class Slot(int):
    """Where the ``i``-th operand goes back into the call's arguments."""


def fill(template: Any, operands: tuple) -> Any:
    return fx.node.map_aggregate(template, lambda a: operands[a] if isinstance(a, Slot) else a)


@rule("call")
class ConstantCall(Rule):
    """``z = fn(*args, **kwargs)`` for constant operands only; ``fn`` a function or a method name."""

    perturbable = ()

    def forward(self, *operands: Any, fn: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = fill(args, operands), fill(kwargs, operands)
        if isinstance(fn, str):
            return getattr(args[0], fn)(*args[1:], **kwargs)
        return fn(*args, **kwargs)
