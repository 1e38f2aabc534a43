"""Keep three known banners of Brax's dependency stack out of every run's output.

Importing Brax imports MuJoCo's MJX, which ``print``s "Failed to import warp: ..." and "Failed to import
mujoco_warp: ..." when the optional NVIDIA Warp package is absent (an install without MuJoCo Playground,
which brings it; Brax's backends do not use it); building a Brax halfcheetah makes MuJoCo's C library
write "WARNING: compiler attribute 'settotalmass' is deprecated ..." (from Brax's own
``half_cheetah.xml``; Gymnasium's models say it too) straight to file descriptor 2; and Brax warns on
every env construction that "Brax System, piplines and environments are not actively being maintained".
None of them concerns a user of this library, so:

* `import_brax()` imports ``brax.envs`` with those two Python-level lines dropped (any other output of the
  import passes through) and installs a `warnings` filter for the maintenance banner only;
* `native_lines_dropped(patterns)` drops matching lines that native code writes to stderr while the
  block runs, passing every other line through (used around env construction).

Set ``SRJ_SHOW_DEPENDENCY_BANNERS=1`` to see everything unfiltered.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from typing import Iterator, Sequence

IMPORT_BANNERS = ("Failed to import warp:", "Failed to import mujoco_warp:")
NATIVE_BANNERS = ("WARNING: compiler attribute 'settotalmass' is deprecated",)
MAINTENANCE_WARNING = "Brax System, piplines and environments"


def _enabled() -> bool:
    return os.environ.get("SRJ_SHOW_DEPENDENCY_BANNERS", "") in ("", "0")


def _passthrough(text: str, patterns: Sequence[str], stream) -> None:
    for line in text.splitlines(keepends=True):
        if line.strip() and not any(line.lstrip().startswith(p) for p in patterns):
            stream.write(line)
    stream.flush()


def import_brax():
    """``import brax.envs`` without the Warp banners; returns the module. (Brax is imported here, not at
    the top of this module: the import is what prints, so it must run inside the redirect below.)"""
    if not _enabled():
        import brax.envs
        return brax.envs
    warnings.filterwarnings("ignore", message=MAINTENANCE_WARNING)  # also when Brax came in first
    if "brax.envs" in sys.modules:
        return sys.modules["brax.envs"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        import brax.envs
    _passthrough(buf.getvalue(), IMPORT_BANNERS, sys.stdout)
    return brax.envs


@contextlib.contextmanager
def native_lines_dropped(patterns: Sequence[str] = NATIVE_BANNERS) -> Iterator[None]:
    """Drop lines starting with ``patterns`` that anything (native code included) writes to fd 2 here."""
    if not _enabled():
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured or replaced stderr (pytest, notebooks)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            _passthrough(tmp.read().decode(errors="replace"), patterns, sys.stderr)
