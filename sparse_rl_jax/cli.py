"""The absl entry point shared by the command-line tools.

Each tool parses its own ``FlagValues`` inside ``main(argv)`` (so ``main`` can be called again, e.g. from
tests) and returns its exit status; absl itself is only initialised with the program name.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

from absl import app, flags
from absl import logging as absl_logging


def _program_name_only(argv: List[str]) -> List[str]:
    flags.FLAGS(argv[:1])
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep backend-probing INFO lines off stderr
    return argv


def run(main: Callable[[Sequence[str]], int]) -> None:
    """``absl.app.run(main)`` with the tool's own flag parsing; exits with ``main``'s status."""
    app.run(main, flags_parser=_program_name_only)
