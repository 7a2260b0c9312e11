"""Typed, flat, validated run configuration (DESIGN §2)."""

from danlu.config import eval_args as _eval_args  # noqa: F401  (registers the eval section)
from danlu.config import methods as _methods  # noqa: F401  (registers the method sections)
from danlu.config import rag_args as _rag_args  # noqa: F401  (registers the rag section)
from danlu.config import sections as _sections  # noqa: F401  (registers the core sections)
from danlu.config import stages as _stages  # noqa: F401  (registers the preference section)
from danlu.config.load import Config, dump_config, load_config, save_config
from danlu.config.methods import (
    AdaLoraArgs,
    FreezeArgs,
    IA3Args,
    LoraArgs,
    MethodArgs,
    PromptLearningArgs,
)
from danlu.config.schema import SECTIONS, ConfigError
from danlu.config.sections import (
    DataArgs,
    DataSource,
    DistArgs,
    ModelArgs,
    OutputArgs,
    TrainArgs,
)
from danlu.config.stages import GrpoArgs, PreferenceArgs

__all__ = [
    "SECTIONS",
    "AdaLoraArgs",
    "Config",
    "ConfigError",
    "DataArgs",
    "DataSource",
    "DistArgs",
    "FreezeArgs",
    "GrpoArgs",
    "IA3Args",
    "LoraArgs",
    "MethodArgs",
    "ModelArgs",
    "OutputArgs",
    "PreferenceArgs",
    "PromptLearningArgs",
    "TrainArgs",
    "dump_config",
    "load_config",
    "save_config",
]
