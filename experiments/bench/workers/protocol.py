"""The worker side of the peers-bench protocol (see the package docstring)."""
from __future__ import annotations

import json
import sys
import time
from typing import Callable, Dict, Optional


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def next_command() -> str:
    line = sys.stdin.readline()
    return line.strip() if line else "quit"


def serve(builders: Dict[str, Callable[[], Callable[[], float]]], info: Optional[dict] = None) -> None:
    """Build every program (``builder()`` compiles, warms up and returns a ``run() -> seconds``), report
    the start-up times (and ``info``), then answer run requests until ``quit``."""
    programs, startup = {}, {}
    for name, build in builders.items():
        t0 = time.perf_counter()
        programs[name] = build()
        startup[name] = time.perf_counter() - t0
    say({"ready": startup, "info": info or {}})
    while True:
        cmd = next_command()
        if cmd == "quit":
            return
        say({"program": cmd, "seconds": programs[cmd]()})
