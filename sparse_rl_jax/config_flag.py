"""The launcher's ``--config`` flag: an ml_collections config file with ``--config.<field>=value``
overrides, parsed into a checked `Config`.

``--config=experiments/configs/preset.py:rlx2,td3`` loads the file and calls its ``get_config("rlx2,td3")``;
``--config.sparsity.actor=0.95`` overrides one field (``--config.env=NAME`` is short for
``--config.env.name=NAME``). Every failure is one `cli.UsageError` naming the option, made from the
exception ml_collections or absl raises (never from its message text):

* ``flags.IllegalFlagValueError``: if ``--config`` itself was not parsed, its ``get_config`` raised
  (ml_collections re-raises that error with a traceback in its message: the original's message is
  shown); else an override's value did not parse (absl's message names ``--config.<field>``);
* ``AttributeError`` (``ConfigDict``), ``KeyError``/``IndexError`` (``config_path``): an override of a field
  the config lacks, named by walking the override paths through the `Config` tree;
* ``OSError``: the file could not be loaded (ml_collections raises it when the config is first used);
* any other ``flags.Error``: ml_collections' ``FlagOrderError`` (an override before ``--config``) and
  ``UnsupportedOperationError`` (a field type without a parser), whose messages name the flags;
* then `config.from_dict` (``TypeError``/``ValueError``) and `validation.validate` (``ConfigError``).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import List, Optional, Sequence, Tuple

from absl import flags
from ml_collections import config_flags

from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import methods, presets
from sparse_rl_jax.cli import UsageError, one_line
from sparse_rl_jax.validation import ConfigError, validate

FLAG = "config"
HELP = ("Config file, e.g. experiments/configs/preset.py:rlx2,td3; override fields with "
        "--config.<section>.<field>=value. Optional with --resume.")
SHORTHANDS = {"--config.env=": "--config.env.name="}  # a section's main field
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")  # ml_collections' own override pattern


def expand_shorthands(argv: Sequence[str]) -> List[str]:
    out = []
    for arg in argv:
        for short, full in SHORTHANDS.items():
            if arg.startswith(short):
                arg = full + arg[len(short):]
        out.append(arg)
    return out


def define(argv: Sequence[str], flag_values: Optional[flags.FlagValues] = None) -> flags.FlagValues:
    """``--config`` on ``flag_values`` (default: a fresh one). ml_collections reads the override flags
    from ``argv`` when ``--config`` is parsed."""
    fv = flag_values if flag_values is not None else flags.FlagValues()
    config_flags.DEFINE_config_file(FLAG, None, HELP, flag_values=fv, sys_argv=list(argv))
    return fv


def parse(argv: Sequence[str]) -> Tuple[Optional[cfg_lib.Config], List[str]]:
    """Parse ``--config`` and its overrides out of ``argv``; returns the config (None without
    ``--config``; not yet validated: `check`) and the remaining arguments, ``argv[0]`` first."""
    argv = expand_shorthands(argv)
    fv = define(argv)
    given = _config_arg(argv)
    try:
        rest = fv(argv, known_only=True)
        value = fv[FLAG].value
        data = None if value is None else value.to_dict()
    except flags.IllegalFlagValueError as err:
        if fv[FLAG].present:  # the file loaded: an override's value is bad, and absl's message names it
            raise UsageError(one_line(err)) from None
        raise UsageError(f"invalid --config={given!r}: {one_line(_get_config_error(err))}") from None
    except (AttributeError, KeyError, IndexError) as err:
        unknown = [(name, why) for name, why in ((n, unknown_field(p)) for n, p in overrides(argv)) if why]
        if not unknown:  # not an override: the config file's own code failed
            raise UsageError(f"invalid --config={given!r}: {type(err).__name__}: {one_line(err)}") from None
        raise UsageError(f"invalid {unknown[0][0]}: {unknown[0][1]}") from None
    except OSError as err:
        if not os.path.isfile(str(given).split(":", 1)[0]):
            raise UsageError(f"invalid --config={given!r}: no such config file; {presets_hint()}") from None
        raise UsageError(f"invalid --config={given!r}: cannot load it ({one_line(err.__cause__ or err)})") from None
    except flags.Error as err:  # ml_collections' FlagOrderError, UnsupportedOperationError: one line each
        raise UsageError(one_line(err)) from None
    if data is None:
        stray = overrides(argv)
        if stray:
            raise UsageError(f"invalid {stray[0][0]}: overrides need --config (the file whose fields they set)")
        return None, rest
    try:
        return cfg_lib.from_dict(data), rest
    except (TypeError, ValueError) as err:
        raise UsageError(f"--config: {one_line(err)}") from None


def check(config: cfg_lib.Config) -> cfg_lib.Config:
    """`validation.validate`, its `ConfigError` as a `UsageError` naming the flag."""
    try:
        return validate(config)
    except ConfigError as err:  # the option is a config field: its flag is --config.<field>
        raise UsageError(one_line(f"invalid --config.{err.option}={err.value!r}: {err.allowed}")) from None


def overrides(argv: Sequence[str]) -> List[Tuple[str, str]]:
    """``[(flag, field path)]`` of the ``--config.<path>`` arguments, in order."""
    out = []
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match:
            out.append((arg.split("=", 1)[0], match.group(1)))
    return out


def unknown_field(path: str) -> Optional[str]:
    """Why ``path`` (e.g. ``agent.hidden``) names no field of `Config`; None if it does."""
    cls, parts = cfg_lib.Config, path.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            where = "top-level fields" if i == 0 else f"fields of {'.'.join(parts[:i])}"
            return f"no such config field; {where}: {', '.join(names)}"
        cls = cfg_lib.SECTIONS.get(part) if i == 0 else None
        if cls is None and i < len(parts) - 1:
            return f"no such config field: {'.'.join(parts[:i + 1])} is a value, not a section"
    return None


def presets_hint() -> str:
    return (f"use experiments/configs/preset.py:<method>,<algo>[,<task>] (methods: "
            f"{', '.join(methods.method_names())}; tasks: {', '.join(presets.TASKS)}) or experiments/configs/demo.py")


def _config_arg(argv: Sequence[str]) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _get_config_error(err: flags.IllegalFlagValueError) -> BaseException:
    """The exception ``get_config`` raised: absl's error is raised while handling ml_collections' copy
    (message: "Error whilst parsing config file" and a traceback), itself raised while handling it."""
    wrapped = err.__context__
    return getattr(wrapped, "__context__", None) or wrapped or err
