"""Shared helper of the config files: a preset's full `Config` as an `ml_collections.ConfigDict`.

Every field of `sparse_rl_jax.config.Config` is present, so every one can be overridden on the command
line (``--config.sparsity.actor=0.95``, ``--config.env.name=hopper``). Fields whose default is ``None``
become typed placeholders (``--config.agent.target_entropy=-2.0`` works). The launcher turns the
ConfigDict back with `config.from_dict` and validates it before anything is compiled.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Optional

import ml_collections
from ml_collections import config_dict

from sparse_rl_jax import config as cfg
from sparse_rl_jax import presets


def _typed(cls, values: Dict[str, Any]) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        value, hint = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            out[f.name] = _typed(hint, value)
        elif value is None:
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            kind = inner[0] if inner else object
            out[f.name] = config_dict.placeholder(typing.get_origin(kind) or kind)  # Tuple[...] -> tuple
        else:
            out[f.name] = value
    return out


def to_config_dict(config: cfg.Config) -> ml_collections.ConfigDict:
    """A `Config` as a ConfigDict with the same nested fields (sections are sub-ConfigDicts)."""
    return ml_collections.ConfigDict(_typed(cfg.Config, cfg.to_dict(config)))


def preset_config(method: str, algo: str, task: Optional[str] = None, recipe: Optional[str] = None,
                  **overrides: Any) -> ml_collections.ConfigDict:
    """Defaults, then the method's preset (`presets.make_config`, per task when given, a recipe over it),
    then ``overrides``."""
    return to_config_dict(presets.make_config(method, algo, task, recipe=recipe, **overrides))
