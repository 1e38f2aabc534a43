"""Export the actor of a training run's newest checkpoint to a compressed sparse policy file.

    python -m experiments.export --workdir runs/demo --out policy.npz [--seed 0] [--values_dtype float32]

Then, on the deployment side (NumPy/SciPy only)::

    from sparse_rl_jax.export import load_policy
    policy = load_policy("policy.npz"); action = policy(obs)

Exit status: 0 on success, 1 when the checkpoint cannot be read or exported, 2 on bad flags or when the
saved-run module (``sparse_rl_jax.runs``) is not available in this installation.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Dict, NamedTuple, Sequence

import numpy as np
from absl import flags

from sparse_rl_jax import cli
from sparse_rl_jax.export import export_actor, size_report


class ActorCheckpoint(NamedTuple):
    """What the exporter needs from a training run: one seed's actor and its masks."""

    params: Any  # Flax variable dict {'params': {'dense_0': ...}}
    masks: Any  # same structure; bool at sparse kernels, None at dense leaves
    algo: str  # a name of `sparse_rl_jax.agents.AGENTS`
    obs_normalizer: Any  # (mean, std) float32 arrays, or None when the run does not normalise
    metadata: Dict[str, Any]


class CheckpointModuleMissing(RuntimeError):
    """``sparse_rl_jax.runs`` cannot be imported (the CLI maps this to exit status 2)."""


def _seed_slice(tree: Any, seed: int) -> Any:
    """One seed of a vmapped pytree (leading axis = seeds) as host NumPy arrays; None leaves stay None."""
    import jax

    def pick(x):
        x = np.asarray(x)
        if not 0 <= seed < x.shape[0]:
            raise ValueError(f"seed {seed} out of range: the run has {x.shape[0]} seeds")
        return x[seed]

    return jax.tree.map(pick, tree)


def load_actor_from_workdir(workdir: str, seed: int = 0) -> ActorCheckpoint:
    """Actor params, masks and algorithm of the newest checkpoint in ``workdir``.

    Kept separate from the CLI so it is the only code that knows the checkpoint layout: it relies on
    ``sparse_rl_jax.runs.restore_latest(workdir) -> (config_dict, states)`` with ``states`` the
    vmapped TrainState whose ``agent.actor`` holds ``params`` and ``masks``, and ``config_dict['algo']``.
    A run trained with ``env.normalize_observations`` has ``states.obs_stats`` (running statistics,
    ``normalization.RunningStats``): their ``normalization.mean_std`` (the exact ``(obs - mean) / std``
    the trainer applies; no clipping) is exported as the file's observation normaliser.
    """
    try:
        # import_module consults sys.modules, so the module can be replaced (tests, plug-in checkpoint
        # formats) even after `sparse_rl_jax.runs` was imported as a package attribute
        runs = importlib.import_module("sparse_rl_jax.runs")
    except ImportError as err:
        raise CheckpointModuleMissing(
            f"cannot import sparse_rl_jax.runs ({err}); this installation has no checkpoint "
            "support, so there is no trained actor to export (use sparse_rl_jax.export.export_actor "
            "on params in memory instead)") from err
    config, states = runs.restore_latest(workdir)
    try:
        actor = states.agent.actor
        params, masks = actor.params, actor.masks
    except AttributeError as err:
        raise ValueError(f"checkpoint in {workdir} has no agent.actor.params/masks ({err})") from err
    stats = getattr(states, "obs_stats", None)
    if stats is not None:
        from sparse_rl_jax import normalization

        stats = normalization.mean_std(_seed_slice(stats, seed))
    metadata = {"workdir": os.path.abspath(workdir), "seed": seed, "method": config.get("method"),
                "env": (config.get("env") or {}).get("name")}
    return ActorCheckpoint(params=_seed_slice(params, seed), masks=_seed_slice(masks, seed),
                           algo=str(config["algo"]),
                           obs_normalizer=stats,
                           metadata=metadata)


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Training work dir (its newest checkpoint is exported).",
                        flag_values=fv, required=True)
    flags.DEFINE_string("out", None, "Output policy file, e.g. policy.npz.", flag_values=fv,
                        required=True)
    flags.DEFINE_integer("seed", 0, "Which seed of a multi-seed run to export.", flag_values=fv)
    flags.DEFINE_enum("values_dtype", "float32", ["float32", "float16"],
                      "Stored weight dtype (float16 halves the values, ~1e-3 relative error).",
                      flag_values=fv)
    flags.DEFINE_bool("compress", True, "Deflate-compress the npz members.", flag_values=fv)
    return fv


def _summary(path: str, ckpt: ActorCheckpoint) -> str:
    report = size_report(path)
    return (f"wrote {path}: {report['file_bytes']} bytes, algo {ckpt.algo}, "
            f"{report['total_nnz']} stored weights {report['nnz']}")


def run(workdir: str, out: str, seed: int = 0, values_dtype: str = "float32",
        compress: bool = True) -> str:
    """Export ``workdir``'s newest checkpoint to ``out``; returns a one-line summary."""
    ckpt = load_actor_from_workdir(workdir, seed)
    export_actor(ckpt.params, ckpt.masks, ckpt.algo, out, obs_normalizer=ckpt.obs_normalizer,
                 metadata=ckpt.metadata, values_dtype=values_dtype, compress=compress)
    return _summary(out, ckpt)


def main(argv: Sequence[str]) -> int:
    fv = _define_flags()
    if not cli.parse(fv, argv, "export"):
        return cli.USAGE_ERROR
    try:
        print(run(fv["workdir"].value, fv["out"].value, fv["seed"].value, fv["values_dtype"].value,
                  fv["compress"].value))
    except CheckpointModuleMissing as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as err:  # CheckpointError is a RuntimeError
        print(f"export: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
