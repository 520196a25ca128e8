"""Bound rules, one file per op family; importing this package registers them all."""
from . import activation, arithmetic, attention, bilinear, constant, conv, linear, loss, norm, pool, recurrent, shape, structure  # noqa: F401  (registration)
from .base import LINE_STRATEGIES, RULES, SPELLINGS, Call, Lines, Nonlinear, Rule, method, rule
from .elementwise import Elementwise

__all__ = ["RULES", "SPELLINGS", "LINE_STRATEGIES", "Call", "Elementwise", "Lines", "Nonlinear", "Rule", "method",
           "rule"]
