"""Memory estimator and launch planner: pure functions of an architecture and the hardware.

`load_arch` reads a model's numbers (table, config.json, GGUF, hub id); `estimate` gives the
per-device memory of a training or inference Setup; `plan` picks the fastest layout that fits.
"""

from danlu.plan.arch import Arch
from danlu.plan.estimate import Estimate, estimate
from danlu.plan.hardware import Hardware
from danlu.plan.planner import Plan, plan
from danlu.plan.setup import Setup
from danlu.plan.sources import load_arch

__all__ = ["Arch", "Estimate", "Hardware", "Plan", "Setup", "estimate", "load_arch", "plan"]
