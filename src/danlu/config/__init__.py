"""Typed, flat, validated run configuration (DESIGN §2)."""

from danlu.config import sections as _sections  # noqa: F401  (registers the sections)
from danlu.config.load import Config, dump_config, load_config, save_config
from danlu.config.schema import SECTIONS, ConfigError
from danlu.config.sections import (
    DataArgs,
    DataSource,
    FreezeArgs,
    LoraArgs,
    MethodArgs,
    ModelArgs,
    OutputArgs,
    PromptLearningArgs,
    TrainArgs,
)

__all__ = [
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataArgs",
    "DataSource",
    "FreezeArgs",
    "LoraArgs",
    "MethodArgs",
    "ModelArgs",
    "OutputArgs",
    "PromptLearningArgs",
    "TrainArgs",
    "dump_config",
    "load_config",
    "save_config",
]
