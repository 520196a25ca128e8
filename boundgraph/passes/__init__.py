"""Compiler passes over the IR; each is a function from graph to graph (or to an analysis)."""
from .batchnorm import fold_batchnorm, use_batch_statistics
from .canonicalize import canonicalize
from .dead_code import eliminate_dead_nodes
from .perturbed import mark_perturbed
from .rules import attach_rules, expand_perturbed
from .schedule import BOUND_METHODS, METHODS, Schedule, Step, schedule
from .shapes import evaluate, propagate_shapes
from .spec import fuse_loss, fuse_spec

__all__ = ["canonicalize", "propagate_shapes", "evaluate", "eliminate_dead_nodes", "fold_batchnorm", "use_batch_statistics",
           "mark_perturbed", "fuse_spec", "fuse_loss", "attach_rules", "expand_perturbed", "schedule", "Schedule", "Step", "METHODS", "BOUND_METHODS"]
