"""The peers' own Python environments, created once under a cache directory and reused.

Each peer runs in a virtual environment of its own, pinned by ``experiments/bench/peer_requirements/<name>.txt``:

* ``brax``: Brax 0.14.2 on JAX 0.7.2 (Brax's SAC trainer calls `jax.device_put_replicated`, which JAX 0.10
  removed, so it cannot run beside this framework's JAX);
* ``sbx``: Stable-Baselines-Jax with Gymnasium's MuJoCo HalfCheetah-v5 (and the CPU build of PyTorch that
  Stable-Baselines3 imports).

Each pin file names its interpreter on a ``# python: X.Y`` line: the peers were measured on Python 3.11
(SBX's CPU build of PyTorch 2.13.0 is a local file for 3.11 only; elsewhere PyPI serves a CUDA build of
several GB), which stays their interpreter while this framework runs on 3.12. It is found by
``tools/find_python.sh`` (PATH, then pyenv's versions).

The environments live in ``$SRJ_CACHE`` (default ``$XDG_CACHE_HOME/sparse_rl_jax``, i.e.
``~/.cache/sparse_rl_jax``) under ``peers/<name>``; one is rebuilt when its pin file changes (a stamp beside
it holds the pin file's hash). The first build downloads from PyPI (a few minutes); later runs reuse it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("brax", "sbx")


def cache_root() -> str:
    base = os.environ.get("SRJ_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparse_rl_jax")
    return os.path.join(base, "peers")


def pin_file(name: str) -> str:
    return os.path.join(HERE, "peer_requirements", f"{name}.txt")


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def interpreter(name: str) -> str:
    """The Python that peer ``name``'s environment is built with (its pin file's ``# python: X.Y``)."""
    with open(pin_file(name)) as f:
        versions = [line.split(":", 1)[1].strip() for line in f if line.startswith("# python:")]
    if not versions:
        return sys.executable
    finder = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools", "find_python.sh")
    found = subprocess.run(["sh", finder, versions[0]], capture_output=True, text=True).stdout.strip()
    if not found:
        raise RuntimeError(f"peer {name} needs Python {versions[0]} ({pin_file(name)}), and none was found: "
                           f"install it (e.g. 'pyenv install {versions[0]}')")
    return found


def _paths(name: str):
    """Peer ``name``'s environment: its root, its interpreter, and the stamp holding its pin file's hash."""
    root = os.path.join(cache_root(), name)
    return root, os.path.join(root, "bin", "python"), os.path.join(root, ".pins-sha256")


def built(name: str) -> Optional[str]:
    """The interpreter of peer ``name``'s environment if it is built from its current pin file, else None
    (never builds it)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    _, exe, stamp = _paths(name)
    if os.path.exists(exe) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == _digest(pin_file(name)):
                return exe
    return None


def python(name: str, quiet: bool = False) -> str:
    """The interpreter of peer ``name``'s environment, creating or rebuilding it first when needed."""
    ready = built(name)
    if ready is not None:
        return ready
    root, exe, stamp = _paths(name)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"peers: building the {name} environment in {root} (once; a few minutes)")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.check_call([interpreter(name), "-m", "venv", root])
    subprocess.check_call([exe, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    subprocess.check_call([exe, "-m", "pip", "install", "--quiet", "-r", pin_file(name)])
    with open(stamp, "w") as f:
        f.write(_digest(pin_file(name)) + "\n")
    return exe
