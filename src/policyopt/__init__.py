"""policyopt: optimize the prompts (policies) of LLM programs.

Public names only; everything else lives in submodules.
"""

from policyopt._version import __version__
from policyopt.anything import optimize_anything
from policyopt.errors import PolicyOptError
from policyopt.gepa import GEPA
from policyopt.lm import LM, LocalLM
from policyopt.mipro import MIPRO
from policyopt.opro import OPRO
from policyopt.protocol import Optimizer
from policyopt.registry import OptimizerSpec, register_optimizer
from policyopt.rollout import RolloutEngine
from policyopt.sideinfo import log
from policyopt.types import Candidate, OptimizationResult, Program, Score

__all__ = [
    "GEPA",
    "LM",
    "MIPRO",
    "OPRO",
    "Candidate",
    "LocalLM",
    "OptimizationResult",
    "Optimizer",
    "OptimizerSpec",
    "PolicyOptError",
    "Program",
    "RolloutEngine",
    "Score",
    "__version__",
    "log",
    "optimize_anything",
    "register_optimizer",
]
