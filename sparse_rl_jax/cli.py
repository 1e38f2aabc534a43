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
import tempfile
from typing import Callable, List, Optional, Sequence, TextIO

from absl import app, flags
from absl import logging as absl_logging

DIVERGED = 1  # a run stopped on NaN/inf (or data-parallel copies of the agent that differ)
USAGE_ERROR = 2  # bad input: one line on stderr, nothing compiled or written
INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
TERMINATED = 143  # 128 + SIGTERM, what batch schedulers expect from a job they stopped
IO_ERROR = 74  # a file of the run could not be written (sysexits' EX_IOERR); earlier checkpoints are intact
PEER_FAILED = 75  # another process of a multi-host run failed (sysexits' EX_TEMPFAIL): continue with --resume
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


def report_file(program: str) -> Optional[str]:
    """A new empty file in the temporary directory for what a failing process prints after its last
    line, or None if none can be made there (that disk may be the full one)."""
    try:
        fd, path = tempfile.mkstemp(prefix=f"{program}-", suffix=".log")
    except OSError:
        return None
    os.close(fd)
    return path


def divert_stderr(path: str) -> TextIO:
    """Append whatever this process writes to its stderr from now on (file descriptor 2, so ``sys.stderr``
    and native code alike) to ``path``; returns a stream on the original stderr, for the process's last
    words. For a process about to exit: the redirection is never undone."""
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", buffering=1)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    return original


# how a collective reports that another process of the run is gone (CPU: gloo; GPU: NCCL; the coordination
# service once its heartbeats stop)
_PEER_GONE = re.compile(r"Gloo|Connection reset by peer|Connection refused|Broken pipe|Socket closed|NCCL|"
                        r"heartbeat timeout|tasks are unhealthy|task is set to ERROR", re.I)


def peer_failure(err: BaseException):
    """The first line of a collective's error saying another process is gone, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        text = str(err)
        if _PEER_GONE.search(text):
            return one_line(text.strip().splitlines()[0])[:240]
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def distributed_run() -> bool:
    """True inside a started multi-process JAX run (never starts the runtime itself)."""
    jax = sys.modules.get("jax")
    return bool(jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1)


def one_line(text) -> str:
    """``text`` (or an exception's message) with every run of whitespace, newlines included, one space."""
    return " ".join(str(text).split())


def parse_args(fv: flags.FlagValues, argv: Sequence[str], positional: bool = False):
    """Parse ``argv`` (``argv[0]`` the program) into ``fv``; `UsageError` on a bad flag (absl's
    ``IllegalFlagValueError``, ``UnrecognizedFlagError``, ...: their messages name the flag) or on a
    positional argument. ``positional=True``: positional arguments are the tool's (``plot DIR ...``),
    returned with the flags as ``(fv, args)``."""
    try:
        extra = fv(list(argv))
    except flags.Error as err:
        raise UsageError(one_line(err)) from None
    if positional:
        return fv, list(extra[1:])
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
    """``absl.app.run(main)`` with the tool's own flag parsing; exits with ``main``'s status.

    A process of a multi-process run that ends with an error leaves at once (``os._exit`` after flushing
    its output): a normal exit would wait in ``jax.distributed``'s shutdown barrier for processes that
    are gone until the heartbeat timeout, and the others must see this one leave to stop themselves.
    A run stopped by a failed write (`IO_ERROR`) leaves the same way: the checkpoint writer's pending
    asynchronous writes (orbax's coroutines) would otherwise be collected during the interpreter's
    shutdown, which crashed it with a segmentation fault (exit -11, not 74) in 2 of 4 runs of the
    full-disk test here."""

    def checked(argv):
        try:
            code = main(argv)
        except Exception:
            if not distributed_run():
                raise
            import traceback
            traceback.print_exc()
            code = 1
        if code and (code == IO_ERROR or distributed_run()):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    app.run(checked, flags_parser=_program_name_only)
