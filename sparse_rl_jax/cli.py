"""The command-line conventions shared by the tools (`experiments/`, `sparse_rl_jax.report`).

Each tool defines its flags on a fresh ``FlagValues`` (``define_flags() -> FlagValues``), parses them
inside ``main(argv)`` (so ``main`` can run again, e.g. from tests) and returns its exit status; absl
itself is only initialised with the program name (`run`). Bad input is one `UsageError`, printed as one
line ``<program>: error: <message>`` on stderr with exit status `USAGE_ERROR` (`error`). The flag errors
are absl's own exceptions (``flags.Error`` and its subclasses), turned into that one line by `parse_args`.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable, List, Sequence

from absl import app, flags
from absl import logging as absl_logging

DIVERGED = 1  # a run stopped on NaN/inf (or data-parallel copies of the agent that differ)
USAGE_ERROR = 2  # bad input: one line on stderr, nothing compiled or written
INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
TERMINATED = 143  # 128 + SIGTERM, what batch schedulers expect from a job they stopped
IO_ERROR = 74  # a file of the run could not be written (sysexits' EX_IOERR); earlier checkpoints are intact
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


class UsageError(Exception):
    """Bad input; the message is one line naming the option, the value and what is allowed."""


# how tensorstore (under orbax) reports a failed write: a ValueError naming the file and the errno
_TENSORSTORE_WRITE = re.compile(r'Error writing (?:local )?file "([^"]+)".*?os_error_code=.?(\d+)', re.S)


def write_failure(err: BaseException):
    """The `OSError` behind ``err`` (itself, in its cause/context chain, or a tensorstore write error
    rebuilt as one: orbax raises those as ``ValueError``), or None when ``err`` is not a failed write."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        found = _TENSORSTORE_WRITE.search(str(err))
        if found:
            code = int(found.group(2))
            return OSError(code, os.strerror(code), found.group(1))
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def describe_write_failure(err: OSError) -> str:
    what = f" {err.filename}" if getattr(err, "filename", None) else ""
    reason = err.strerror or one_line(err) or type(err).__name__
    return f"could not write{what} ({reason})"


def one_line(text) -> str:
    """``text`` (or an exception's message) with every run of whitespace, newlines included, one space."""
    return " ".join(str(text).split())


def parse_args(fv: flags.FlagValues, argv: Sequence[str]) -> flags.FlagValues:
    """Parse ``argv`` (``argv[0]`` the program) into ``fv``; `UsageError` on a bad flag (absl's
    ``IllegalFlagValueError``, ``UnrecognizedFlagError``, ...: their messages name the flag) or on a
    positional argument."""
    try:
        extra = fv(list(argv))
    except flags.Error as err:
        raise UsageError(one_line(err)) from None
    if len(extra) > 1:
        raise UsageError(f"unexpected positional arguments {extra[1:]!r}; only --flags are allowed")
    return fv


def require(fv: flags.FlagValues, name: str, what: str) -> None:
    """`UsageError` unless ``--name`` has a value."""
    if fv[name].value in (None, ""):
        raise UsageError(f"--{name} is required ({what})")


def at_least(fv: flags.FlagValues, **lows: int) -> None:
    """`UsageError` for the first integer flag below its lower bound (unset flags pass)."""
    for name, low in lows.items():
        value = fv[name].value
        if value is not None and value < low:
            raise UsageError(f"invalid --{name}={value}: must be an integer >= {low}")


def error(program: str, err) -> int:
    """Print ``<program>: error: <err>`` (one line, stderr); returns `USAGE_ERROR`."""
    print(f"{program}: error: {one_line(err)}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def parse(fv: flags.FlagValues, argv: Sequence[str], program: str) -> bool:
    """`parse_args`, printing the error line instead of raising: False on bad flags (the tool then
    returns `USAGE_ERROR`)."""
    try:
        parse_args(fv, argv)
    except UsageError as err:
        error(program, err)
        return False
    return True


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv[1:])


def help_text(doc: str, *flag_values: flags.FlagValues) -> str:
    """The usage paragraph of a tool's docstring (its second paragraph), then every flag's help."""
    usage = doc.split("\n\n", 2)[1] if "\n\n" in doc else doc
    return "\n\n".join([usage, *(fv.get_help() for fv in flag_values)])


def _program_name_only(argv: List[str]) -> List[str]:
    flags.FLAGS(argv[:1])
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep backend-probing INFO lines off stderr
    return argv


def run(main: Callable[[Sequence[str]], int]) -> None:
    """``absl.app.run(main)`` with the tool's own flag parsing; exits with ``main``'s status."""
    app.run(main, flags_parser=_program_name_only)
