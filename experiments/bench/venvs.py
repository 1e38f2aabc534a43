"""The peers' own Python environments, created once under a cache directory and reused.

Each peer runs in a virtual environment of its own, pinned by ``experiments/bench/peer_requirements/<name>.txt``:

* ``brax``: Brax 0.14.2 on JAX 0.7.2 (Brax's SAC trainer calls `jax.device_put_replicated`, which JAX 0.10
  removed, so it cannot run beside this framework's JAX);
* ``sbx``: Stable-Baselines-Jax with Gymnasium's MuJoCo HalfCheetah-v5 (and the CPU build of PyTorch that
  Stable-Baselines3 imports).

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


def python(name: str, quiet: bool = False) -> str:
    """The interpreter of peer ``name``'s environment, creating or rebuilding it first when needed."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    root = os.path.join(cache_root(), name)
    exe = os.path.join(root, "bin", "python")
    stamp = os.path.join(root, ".pins-sha256")
    want = _digest(pin_file(name))
    if os.path.exists(exe) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return exe
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"peers: building the {name} environment in {root} (once; a few minutes)")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.check_call([sys.executable, "-m", "venv", root])
    subprocess.check_call([exe, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    subprocess.check_call([exe, "-m", "pip", "install", "--quiet", "-r", pin_file(name)])
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return exe
