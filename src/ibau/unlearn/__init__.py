"""The I-BAU core: configuration and presets, inner maximisation, hypergradient solvers, the round loop."""
from .config import PRESETS, IBAUConfig
from .core import RoundRecord, UnlearnResult, unlearn
from .hypergrad import implicit_hypergradient
from .inner import project, solve_delta
from .solvers import SOLVERS, conjugate_gradient, fixed_point

__all__ = ["IBAUConfig", "PRESETS", "RoundRecord", "SOLVERS", "UnlearnResult", "conjugate_gradient",
           "fixed_point", "implicit_hypergradient", "project", "solve_delta", "unlearn"]
