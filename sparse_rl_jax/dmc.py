"""The DeepMind Control Suite as MuJoCo Playground ships it (``dmc/CheetahRun``, ``dmc/WalkerWalk``, ...).

Playground's envs are JAX envs with Brax's shape of API (``reset(key)``, ``step(state, action)``, a state
with ``obs``, ``reward``, ``done``, ``metrics``, ``info``) but their own ``State`` (``data`` where Brax has
``pipeline_state``). The env layer's wrappers (vmap, time limit, fresh auto-reset) read only the fields
both share, so a Playground env goes under them as it is; this module only loads it and settles two
details:

* **The MuJoCo implementation** (``env.backend``): ``jax`` (MJX; about 0.1 ms per cheetah step inside a
  scan on the 2-core CPU) or ``warp`` (Playground's default, NVIDIA Warp, written for GPUs: 21 ms per
  step on that CPU). ``auto`` means ``jax`` (docs/envs.md).
* **Weak types.** Playground's ``reset`` returns a weakly typed ``data.time`` (a Python float) that its
  ``step`` makes a strong float32; a state carried through a compiled loop would make the loop compile
  twice. ``reset`` here returns every leaf strongly typed.

Time limit and action repeat come from the run's config (``env.episode_length``, ``env.action_repeat``),
not from Playground's task config: DMC's episodes are 1000 control steps whatever the repeat.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

PACKAGE_HINT = ("MuJoCo Playground (the 'playground' package: pip install -r requirements.txt, or the 'envs' "
                "extra)")


def _registry():
    """Playground's registry, imported with its native banner lines dropped (ImportError when missing)."""
    from sparse_rl_jax import quiet

    with quiet.native_lines_dropped():
        from mujoco_playground import registry
    return registry


def task_names() -> Tuple[str, ...]:
    """Playground's DM Control Suite tasks (ImportError when Playground is missing)."""
    return tuple(_registry().dm_control_suite.ALL_ENVS)


def _strong(tree):
    """Every leaf as a strongly typed array of its own dtype."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


class PlaygroundEnv:
    """One Playground DMC task, unbatched (``reset(key)``, ``step(state, action)``); batch it with Brax's
    ``VmapWrapper``. ``unwrapped`` is itself, as for Brax envs."""

    def __init__(self, task: str, backend: str):
        from sparse_rl_jax import quiet

        registry = _registry()
        with quiet.native_lines_dropped():  # loading a task prints its own lines too
            self._env = registry.load(task, config_overrides={"impl": backend})
        self.task = task
        self._backend = backend

    def reset(self, rng: jax.Array):
        return _strong(self._env.reset(rng))

    def step(self, state, action: jax.Array):
        return self._env.step(state, action)

    @property
    def unwrapped(self):
        return self

    @property
    def observation_size(self) -> int:
        size = self._env.observation_size
        if not isinstance(size, int):
            raise ValueError(f"dmc/{self.task}: observations are a dict ({size}); only flat observations "
                             "are supported")
        return size

    @property
    def action_size(self) -> int:
        return int(self._env.action_size)

    @property
    def backend(self) -> str:
        return self._backend
