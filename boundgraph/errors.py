"""Errors boundgraph raises. Input mistakes are ``ValueError``s; models we cannot bound are
``UnsupportedOpError``s, raised when the model is compiled, never at bound time."""
from __future__ import annotations


class UnsupportedOpError(NotImplementedError):
    """A node of the traced model has no bound rule, or uses a rule in a way it cannot bound."""

    def __init__(self, node: str, op: str, source: str, reason: str) -> None:
        where = f" at {source}" if source else ""
        super().__init__(f"cannot bound node '{node}' (op {op}){where}: {reason}")
        self.node, self.op, self.source = node, op, source


HOW_TO_REGISTER = (
    "To support it, add a rule class in boundgraph/ops/<family>.py with its concrete `forward`, "
    "its IBP `interval` and its CROWN `backward` (or `lines` for an elementwise nonlinearity), "
    "registered with @rule(\"name\", spellings=(<module class, function or method name>,))."
)


class ModelChangedError(ValueError):
    """The model changed after it was compiled (a module swapped, a parameter added, an attribute that
    ``forward`` may read changed, ...): its compiled bound programs would bound the old model."""
