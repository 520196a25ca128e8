"""Errors boundgraph raises. Input mistakes are ``ValueError``s; models we cannot bound are
``UnsupportedOpError``s, raised when the model is compiled, never at bound time."""
from __future__ import annotations


HOW_TO_REGISTER = (
    "To support an op, register a rule from your own code (`from boundgraph.ops import rule, Rule, "
    "Elementwise`; README, \"Adding an op\"): its concrete `forward`, its IBP `interval` and its CROWN "
    "`backward` (an elementwise activation: its function, derivative and curvature pieces), registered with "
    "@rule(\"name\", spellings=(<module class, function or method name>,))."
)


class UnsupportedOpError(NotImplementedError):
    """Nodes of the traced model that have no bound rule, or use a rule in a way it cannot bound: every
    one of them (``errors``), each with its node, op, module path and source line."""

    def __init__(self, node: str, op: str, source: str, reason: str, module: str = "") -> None:
        super().__init__(f"cannot bound {self.describe(node, op, source, reason, module)}")
        self.node, self.op, self.source, self.module, self.reason = node, op, source, module, reason
        self.errors = [self]

    @staticmethod
    def describe(node: str, op: str, source: str, reason: str, module: str = "") -> str:
        inside = f" in {module}" if module else ""
        at = f" at {source}" if source else ""
        return f"node '{node}' (op {op}){inside}{at}: {reason}"

    @classmethod
    def several(cls, errors: list, note: str = "") -> "UnsupportedOpError":
        """One error for all of ``errors`` (the first one's node, op and source), listing every one."""
        first = errors[0]
        combined = cls(first.node, first.op, first.source, first.reason, first.module)
        if len(errors) > 1:
            listed = "\n".join(f"  - {cls.describe(e.node, e.op, e.source, e.reason, e.module)}" for e in errors)
            combined.args = (f"cannot bound {len(errors)} nodes of the model:\n{listed}",)
        combined.errors = list(errors)
        if note or any("no bound rule" in e.reason for e in errors):
            combined.args = (combined.args[0] + (f"\n{note}" if note else "") + f"\n{HOW_TO_REGISTER}",)
        return combined


class ModelChangedError(ValueError):
    """The model changed after it was compiled (a module swapped, a parameter added, an attribute that
    ``forward`` may read changed, ...): its compiled bound programs would bound the old model."""
