"""boundgraph: a bound-propagation compiler for PyTorch (IBP, CROWN-IBP, CROWN, LBP, CROWN-LBP, GloRo,
SingleProp)."""
from .allocator import keep_freed_memory
from .attacks import pgd_attack
from .bounded_module import BoundedModule
from .selfcheck import CheckReport, check
from .emit import BoundProgram, set_sweep_budget
from .errors import ModelChangedError, UnsupportedOpError
from .evaluation import certified, evaluate
from .gloro import GloroLoss, certified_radius, gloro_logits, pairwise_lipschitz, vra
from .ir import Interval
from .nn import ParamRamp
from .losses import margin_spec, robust_loss, worst_case_logits
from .perturbation import Box, L2Ball, LinfBall, Perturbation

__all__ = ["BoundedModule", "BoundProgram", "Interval", "UnsupportedOpError", "ModelChangedError", "check",
           "CheckReport", "Perturbation", "LinfBall",
           "L2Ball", "Box", "margin_spec", "robust_loss", "worst_case_logits",
           "pgd_attack", "certified", "evaluate", "GloroLoss", "gloro_logits", "certified_radius",
           "pairwise_lipschitz", "vra", "ParamRamp", "set_sweep_budget", "keep_freed_memory"]
__version__ = "0.1.0"
