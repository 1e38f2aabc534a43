"""The absl entry point shared by the command-line tools.

Each tool parses its own ``FlagValues`` inside ``main(argv)`` (so ``main`` can be called again, e.g. from
tests) and returns its exit status; absl itself is only initialised with the program name.
"""
from __future__ import annotations

import sys
from typing import Callable, List, Sequence

from absl import app, flags
from absl import logging as absl_logging


USAGE_ERROR = 2


def parse(fv: flags.FlagValues, argv: Sequence[str], program: str) -> bool:
    """Parse ``argv`` into the tool's ``fv``; on bad flags print ``<program>: error: ...`` (one line on
    stderr) and return False (the tool then returns `USAGE_ERROR`)."""
    try:
        fv(list(argv))
    except flags.Error as err:
        print(f"{program}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return False
    return True


def _program_name_only(argv: List[str]) -> List[str]:
    flags.FLAGS(argv[:1])
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep backend-probing INFO lines off stderr
    return argv


def run(main: Callable[[Sequence[str]], int]) -> None:
    """``absl.app.run(main)`` with the tool's own flag parsing; exits with ``main``'s status."""
    app.run(main, flags_parser=_program_name_only)
