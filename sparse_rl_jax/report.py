"""Sparsity report: per-layer densities, RLx2 total size and FLOPs of a planned sparse TD3/SAC agent.

    python -m sparse_rl_jax.report --algo td3 --obs-dim 17 --act-dim 6 \\
        --actor-sparsity 0.9 --critic-sparsity 0.85 --distribution erk [--dense-output] [--dense-input] \\
        [--hidden 256,256] [--json]

Nothing is allocated: the networks are traced with ``jax.eval_shape`` and the densities come from
``sparsity.distributions`` exactly as the trainer computes them (the actor is one allocation; the twin
critic's tree holds both Qs, so both critics form ONE shared allocation, as in RLx2). ``er`` is Sokar's ER
with a single lambda per allocation solved for the target sparsity (see ``_er_lambda``). Counts and FLOPs follow
``sparsity/flops.py`` (weights only, targets share the online non-zero counts). ``--json`` prints one JSON
object ``{total_size, train_flops, inference_flops, params}`` (fractions of dense; ``params`` = non-zero
weights of actor + critic, targets excluded) and nothing else on stdout.

Bad input prints one line naming the option, the value and what is allowed, and exits with status 2.
Flags live in a private ``FlagValues`` built per call, so ``main(argv)`` is reusable and keeps no state.
"""
from __future__ import annotations

import json
import math
from typing import Any, List, Sequence, Tuple

import jax
import jax.numpy as jnp
from absl import flags

from sparse_rl_jax import agents, cli
from sparse_rl_jax.sparsity import distributions, flops, masks

DISTRIBUTIONS = ("uniform", "er", "erk")


def _parse_hidden(text: str) -> Tuple[int, ...]:
    return tuple(int(w) for w in text.split(","))


def _valid_hidden(text: str) -> bool:
    try:
        return all(w > 0 for w in _parse_hidden(text))
    except ValueError:
        return False


def _define_flags() -> flags.FlagValues:
    """Register the CLI's flags on a fresh FlagValues (no global registry, so main() is re-entrant)."""
    fv = flags.FlagValues()
    flags.DEFINE_enum("algo", "td3", list(agents.names()), "Agent whose networks are accounted.", flag_values=fv)
    flags.DEFINE_integer("obs-dim", None, "Observation size.", flag_values=fv)
    flags.DEFINE_integer("act-dim", None, "Action size.", flag_values=fv)
    flags.DEFINE_float("actor-sparsity", 0.0, "Actor sparsity (fraction of zero weights).", flag_values=fv)
    flags.DEFINE_float("critic-sparsity", 0.0, "Sparsity of the twin critic (one allocation).",
                       flag_values=fv)
    flags.DEFINE_enum("distribution", "erk", list(DISTRIBUTIONS), "Per-layer density rule.", flag_values=fv)
    flags.DEFINE_boolean("dense-input", False, "Keep every input layer dense.", flag_values=fv)
    flags.DEFINE_boolean("dense-output", False, "Keep every output layer dense (DS).", flag_values=fv)
    flags.DEFINE_string("hidden", "256,256", "Comma-separated hidden widths.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print one JSON object only.", flag_values=fv)
    for name in ("obs-dim", "act-dim"):
        flags.mark_flag_as_required(name, flag_values=fv)
        flags.register_validator(name, lambda v: v is None or v > 0, message="must be a positive integer",
                                 flag_values=fv)
    for name in ("actor-sparsity", "critic-sparsity"):
        flags.register_validator(name, lambda v: 0.0 <= v < 1.0, message="must be in [0, 1)", flag_values=fv)
    flags.register_validator("hidden", _valid_hidden, message="must be comma-separated positive integers",
                             flag_values=fv)
    return fv


def build_networks(algo: str, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> Tuple[Any, Any]:
    """Shape-only (``jax.eval_shape``) param trees of the agent's actor and critic."""
    cls = agents.get(algo)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    key = jax.random.key(0)
    actor = jax.eval_shape(cls.make_actor(act_dim, hidden).init, key, obs)
    critic = jax.eval_shape(cls.make_critic(hidden).init, key, obs, act)
    return actor, critic


def _er_lambda(params: Any, structure: Any, density: float) -> float:
    """One Sokar lambda per allocation hitting ``density`` before clipping: d_l = lambda (n_in+n_out)/size.

    With one lambda, sum_l d_l n_l = lambda * sum_l (n_in + n_out). Layers whose density would exceed 1
    are clipped by ``er_densities`` without redistribution (Sokar's ER), so the global density can end
    below the target; ERK redistributes instead (for MLP kernels the two coincide otherwise).
    """
    shapes = [p.shape for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(structure)) if s]
    sizes = sum(math.prod(sh) for sh in shapes)
    return density * sizes / max(sum(sum(sh) for sh in shapes), 1)


def network_densities(params: Any, sparsity: float, distribution: str, dense_input: bool,
                      dense_output: bool) -> Any:
    """Density tree of one allocation (the whole tree: for the critic, Q1 and Q2 together)."""
    structure = masks.sparse_structure(params, dense_input=dense_input, dense_output=dense_output)
    lambdas = _er_lambda(params, structure, 1.0 - sparsity) if distribution == "er" else None
    return distributions.densities_for(params, structure, sparsity, distribution, lambdas=lambdas)


def compute_report(algo: str, obs_dim: int, act_dim: int, actor_sparsity: float, critic_sparsity: float,
                   distribution: str, hidden: Sequence[int] = (256, 256), dense_input: bool = False,
                   dense_output: bool = False) -> dict:
    """All numbers of the report as a dict (layers, per-network counts, totals); no printing."""
    actor, critic = build_networks(algo, obs_dim, act_dim, hidden)
    model = agents.get(algo).flop_model
    layers, counts = {}, {}
    for name, params, sparsity in (("actor", actor, actor_sparsity), ("critic", critic, critic_sparsity)):
        dens = network_densities(params, sparsity, distribution, dense_input, dense_output)
        layers[name] = flops.layer_stats(params, densities=dens)
        counts[name] = flops.Count(sum(s.active for s in layers[name]), sum(s.dense for s in layers[name]))
    return {
        "layers": layers,
        "counts": counts,
        "total_size": flops.total_size(model, counts["actor"], counts["critic"]),
        "train_flops": flops.train_flops(model, counts["actor"], counts["critic"]),
        "inference_flops": flops.inference_flops(counts["actor"]),
        "params": counts["actor"].sparse + counts["critic"].sparse,
    }


def json_summary(report: dict) -> dict:
    """The ``--json`` object: fractions of dense plus the non-zero weights of actor + critic."""
    return {
        "total_size": report["total_size"].fraction,
        "train_flops": report["train_flops"].fraction,
        "inference_flops": report["inference_flops"].fraction,
        "params": int(report["params"]),
    }


def format_report(report: dict, algo: str) -> str:
    """Human-readable per-layer table followed by per-network and total lines."""
    head = f"{'network':<8} {'layer':<28} {'shape':>12} {'dense':>9} {'active':>9} {'density':>8}"
    lines: List[str] = [head, "-" * len(head)]
    for name, stats in report["layers"].items():
        for s in stats:
            path = s.path[len("params/"):] if s.path.startswith("params/") else s.path
            shape = "x".join(str(d) for d in s.shape)
            lines.append(f"{name:<8} {path:<28} {shape:>12} {s.dense:>9,} {s.active:>9,} {s.density:>8.4f}")
    lines.append("-" * len(head))
    for name, c in report["counts"].items():
        lines.append(f"{name:<8} {'(all layers)':<28} {'':>12} {int(c.dense):>9,} {int(c.sparse):>9,} "
                     f"{c.fraction:>8.4f}")
    targets = " + ".join(n.replace("_", " ") for n in sorted(agents.get(algo).flop_model.stored))
    t, i = report["train_flops"], report["inference_flops"]
    lines += [
        "",
        f"params (actor + critic non-zero weights): {int(report['params']):,}",
        f"total size ({targets}): {report['total_size'].fraction:.4f} of dense",
        f"train FLOPs per critic update: {t.fraction:.4f} of dense ({t.sparse:,.0f} / {t.dense:,.0f} MACs per "
        "sample)",
        f"inference FLOPs (actor forward): {i.fraction:.4f} of dense ({i.sparse:,.0f} / {i.dense:,.0f} MACs)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """CLI entry: ``argv[0]`` is the program name. Returns the exit status (0, or 2 on bad input)."""
    if cli.wants_help(argv):
        print(cli.help_text(__doc__, _define_flags()))
        return 0
    try:
        fv = cli.parse_args(_define_flags(), argv)
    except cli.UsageError as err:
        return cli.error("report", err)
    report = compute_report(fv["algo"].value, fv["obs-dim"].value, fv["act-dim"].value,
                            fv["actor-sparsity"].value, fv["critic-sparsity"].value, fv["distribution"].value,
                            _parse_hidden(fv["hidden"].value), fv["dense-input"].value, fv["dense-output"].value)
    if fv["json"].value:
        print(json.dumps(json_summary(report)))
    else:
        print(format_report(report, fv["algo"].value))
    return 0


if __name__ == "__main__":
    cli.run(main)
