"""What a run measures: the per-period metric dict, its FLOP accounting, and the run's final summary.

One module for every number a run reports, so the per-period metrics (`progress_fn`'s dict, the metric
files) and `summary.json` are computed in one place and always agree:

* `chunk_metrics` / `host_metrics`: one period's losses, returns, sparsity, topology events, buffer
  (data-parallel states merged over their shards), from the host copies the loop gathers;
* `add_period_metrics`: the run-level numbers of a period: FLOPs (`period_flops`, pass by pass from
  the agent's `flop_model` at the network sizes averaged over the period's updates), scheduled drop
  fractions, n-step state, update counts, speed;
* `summarize`: ``summary.json`` (per seed and mean/std: final and best return, AUC, sparsity, RLx2 total
  size, training and inference FLOPs as fractions of dense), `layer_densities`, `final_masks`.

Logging (`run_logging`) writes these numbers and persistence (`checkpoint`) saves them; neither computes
them, so neither needs the runner.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import dst, plasticity, replay, run_logging
from sparse_rl_jax import trainer as trainer_lib
from sparse_rl_jax.sparsity import flops

Trainer = trainer_lib.Trainer
TrainState = trainer_lib.TrainState


def chunk_metrics(trainer: Trainer, states: TrainState, info: Dict, updates: int) -> Dict[str, Any]:
    """Host-side metric dict (per-seed numpy arrays) with Brax-style names.

    `info` holds per-seed sums over the chunk; losses are averaged over the chunk's `updates`.
    """
    m: Dict[str, Any] = {}
    for name in trainer.agent.metric_names:
        if name in info:
            m[f"training/{name}"] = np.asarray(info[name]) / max(updates, 1)
    count = np.asarray(states.finished_count)
    m["training/episode_reward"] = np.where(
        count > 0, np.asarray(states.finished_return_sum) / np.maximum(count, 1), np.nan)
    for net_name, net in trainer.agent.networks(states.agent).items():
        m[f"sparsity/{net_name}"] = np.asarray(jax.vmap(dst.kernel_sparsity)(net))
        events = np.asarray(info[f"{net_name}_topology_events"])
        # mean fraction of active connections replaced per topology event in this chunk
        m[f"topology/{net_name}/mask_change"] = np.asarray(info[f"{net_name}_mask_change"]) / np.maximum(events, 1)
        m[f"topology/{net_name}/events"] = events
        m[f"topology/{net_name}/net_updates"] = np.asarray(net.updates)
        updates_made = np.asarray(info[f"{net_name}_updates"])
        m[f"plasticity/{net_name}/grad_norm"] = np.where(
            updates_made > 0, np.asarray(info[f"{net_name}_grad_norm"]) / np.maximum(updates_made, 1), np.nan)
        for measure in plasticity.STATE_MEASURES:  # of the final states, on a replay batch (`Trainer.diagnose`)
            m[f"plasticity/{net_name}/{measure}"] = np.asarray(info[f"plasticity/{net_name}/{measure}"])
    m["buffer/size"] = np.asarray(replay.num_transitions(states.replay))
    if "buffer_policy_distance" in info:
        checks = np.asarray(info["buffer_checks"])
        # mean over the checks made in this chunk (the no-check branch contributes 0); NaN if none
        m["buffer/policy_distance"] = np.where(
            checks > 0, np.asarray(info["buffer_policy_distance"]) / np.maximum(checks, 1), np.nan)
    return m


def _mean_counts(params, masks, active_sum, updates) -> Dict[str, flops.Count]:
    """One seed's network sizes (whole network and the twin critic's Q1) averaged over a period's
    updates, from the per-sparse-leaf active counts summed over those updates (``dst.active_vector``);
    with no update in the period, the current masks."""
    flat_params = jax.tree_util.tree_leaves_with_path(params)
    flat_masks = jax.tree.leaves(masks, is_leaf=lambda x: x is None)
    totals = {"": [0.0, 0.0], "q1/": [0.0, 0.0]}
    j = 0
    for (path, leaf), mask in zip(flat_params, flat_masks):
        if mask is not None:
            mean = active_sum[j] / updates if updates > 0 else float(np.count_nonzero(mask))
            j += 1
        if np.ndim(leaf) < 2:
            continue
        size = float(np.size(leaf))
        active = size if mask is None else mean
        name = flops.path_string(path)
        for prefix, acc in totals.items():
            if name.startswith(prefix):
                acc[0] += active
                acc[1] += size
    return {"all": flops.Count(*totals[""]), "q1": flops.Count(*totals["q1/"])}


def period_flops(trainer: Trainer, states: TrainState, info: Dict) -> Dict[str, np.ndarray]:
    """Per seed: training MACs of this period's updates, sparse and dense (`flops.period_flops`, sizes
    averaged exactly over the period's updates of each network), and the actor's inference fraction."""
    cfg, agent = trainer.run_config, trainer.agent
    nets = agent.networks(states.agent)
    rc = cfg.replay
    methods_of = {"actor": agent.actor_method, "critic": agent.critic_method}
    num_seeds = np.asarray(nets["critic"].updates).shape[0]
    sparse, dense, infer = [], [], []
    for i in range(num_seeds):
        counts, net_updates, dense_grads = {}, {}, {}
        for name, net in nets.items():
            params, masks = (jax.tree.map(lambda x: np.asarray(x[i]), t) for t in (net.params, net.masks))
            n = float(np.asarray(info[f"{name}_updates"])[i])
            counts[name] = _mean_counts(params, masks, np.asarray(info[f"{name}_active"])[i], n)
            method = methods_of[name]
            if method.dense_grad_every_step:
                dense_grads[name] = n
            elif method.dense_grad_on_events:
                dense_grads[name] = float(np.asarray(info[f"{name}_topology_events"])[i])
            net_updates[name] = n
        actor, critic = counts["actor"]["all"], counts["critic"]["all"]
        model = {"actor": actor, "actor_target": actor, "critic": critic, "critic_target": critic,
                 "critic_q1": counts["critic"]["q1"]}
        t = flops.period_flops(
            agent.flop_model, model, critic_updates=net_updates["critic"], actor_updates=net_updates["actor"],
            nstep_updates=float(np.asarray(info["nstep_updates"])[i]), nstep=rc.nstep,
            dense_grad_updates=dense_grads,
            batch_size=cfg.agent.batch_size)
        sparse.append(t.sparse)
        dense.append(t.dense)
        infer.append(flops.network_count(*(jax.tree.map(lambda x: np.asarray(x[i]), t)
                                           for t in (nets["actor"].params, nets["actor"].masks))).fraction)
    return {"train_sparse": np.array(sparse, np.float64), "train_dense": np.array(dense, np.float64),
            "inference_fraction": np.array(infer)}


def drop_fractions(trainer: Trainer, states: TrainState) -> Dict[str, Any]:
    """Scheduled drop fraction of each network at its current update count, from each seed's
    ``hparams["drop_fraction"]``: one number when the seeds agree, else per seed (a sweep)."""
    out: Dict[str, Any] = {}
    agent = trainer.agent
    nets = agent.networks(states.agent)
    base = np.asarray(states.agent.hparams.get("drop_fraction", np.nan)).reshape(-1)
    for net_name, method in (("actor", agent.actor_method), ("critic", agent.critic_method)):
        schedule = method.schedule
        if schedule is None or schedule.prune_only:
            continue
        updates = int(np.asarray(nets[net_name].updates).reshape(-1)[0])
        key = f"topology/{net_name}/drop_fraction"
        if np.all(base == base[0]):
            out[key] = float(schedule.fraction(updates, base[0]))
        else:
            out[key] = np.asarray([float(schedule.fraction(updates, d)) for d in base], np.float32)
    return out


def flops_so_far(history: Optional[list], num_seeds: int) -> Tuple[np.ndarray, np.ndarray]:
    """Training MACs counted so far (per seed; sparse, dense), carried over from a resumed run's history."""
    if history and "flops/train_so_far" in history[-1][1]:
        last = history[-1][1]
        return (np.asarray(last["flops/train_so_far"], np.float64),
                np.asarray(last["flops/train_dense_so_far"], np.float64))
    return np.zeros(num_seeds, np.float64), np.zeros(num_seeds, np.float64)


def add_period_metrics(metrics: Dict[str, Any], trainer: Trainer, states: TrainState, info: Dict,
                       so_far: Tuple[np.ndarray, np.ndarray], period: int, elapsed: float
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Complete one period's `chunk_metrics` + evaluation with the run-level numbers (FLOPs, schedules,
    counters, speed); returns the updated FLOPs so far (`runner`'s loop).

    ``flops/train_fraction`` is this period's; ``flops/train_so_far / flops/train_dense_so_far`` the
    run's so far, which the summary reports (the same numbers, so the two always agree).
    """
    fl = period_flops(trainer, states, info)
    sparse, dense = so_far[0] + fl["train_sparse"], so_far[1] + fl["train_dense"]
    _, update_step = trainer_lib.period_updates(trainer, period)
    metrics["flops/train_so_far"] = sparse.copy()
    metrics["flops/train_dense_so_far"] = dense.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics["flops/train_fraction"] = np.where(fl["train_dense"] > 0, fl["train_sparse"] / fl["train_dense"], np.nan)
    metrics["flops/inference_fraction"] = fl["inference_fraction"]
    metrics.update(drop_fractions(trainer, states))
    cfg = trainer.run_config
    metrics["nstep"] = cfg.replay.nstep if update_step > cfg.replay.nstep_delay else 1
    metrics["training/updates"] = update_step
    metrics["training/sps"] = trainer_lib.chunk_iterations(cfg) * cfg.env_steps_per_iteration / elapsed
    metrics["training/walltime"] = elapsed
    return sparse, dense


def host_metrics(trainer: trainer_lib.Trainer, states, info, updates: int) -> Tuple[Dict[str, Any], Any, Dict]:
    """`chunk_metrics` of host copies of the period's states and sums, in any layout (`Trainer.merge_host`
    gives one value per seed); returns the metrics and the merged states and sums (the FLOP accounting
    reads those)."""
    merged, merged_info, extra = trainer.merge_host(states, info)
    m = chunk_metrics(trainer, merged, merged_info, updates)
    m.update(extra)
    return m, merged, merged_info


# ---------------------------------------------------------------------------- the run's summary
def network_layers(trainer, agent) -> Dict[str, Any]:
    """``{net_name: (params, masks)}`` with the leading seed axis (from the vmapped agent states)."""
    return {name: (net.params, net.masks) for name, net in trainer.agent.networks(agent).items()}


def _seed_slice(tree: Any, seed: int) -> Any:
    return jax.tree.map(lambda x: np.asarray(x[seed]), tree)


def layer_densities(trainer, agent, num_seeds: int) -> Dict[str, List[float]]:
    """``{'density/<net>/<layer>': [per-seed density]}`` counted from the masks (dense layers: 1.0)."""
    out: Dict[str, List[float]] = {}
    for name, (params, masks) in network_layers(trainer, agent).items():
        for seed in range(num_seeds):
            for stat in flops.layer_stats(_seed_slice(params, seed), masks=_seed_slice(masks, seed)):
                key = f"density/{name}/{stat.path.removesuffix('/kernel')}"
                out.setdefault(key, []).append(stat.density)
    return out


def final_masks(trainer, agent, seed: int = 0) -> Dict[str, np.ndarray]:
    """``{'<net>/<layer>': bool[in, out]}`` of one seed; dense layers are all True."""
    out = {}
    for name, (params, masks) in network_layers(trainer, agent).items():
        p, m = _seed_slice(params, seed), _seed_slice(masks, seed)
        flat_p = jax.tree_util.tree_flatten_with_path(p)[0]
        flat_m = jax.tree.structure(p).flatten_up_to(m)
        for (path, leaf), mask in zip(flat_p, flat_m):
            if leaf.ndim < 2:
                continue
            layer = "/".join(str(getattr(k, "key", k)) for k in path if getattr(k, "key", None) != "params")
            out[f"{name}/{layer.removesuffix('/kernel')}"] = (
                np.ones(leaf.shape, bool) if mask is None else np.asarray(mask, bool))
    return out


def size_and_flops(trainer, agent, seed: int, history: Optional[List[list]] = None) -> Dict[str, float]:
    """Sparsity, RLx2 total size (final masks) and FLOPs (fractions of dense) of one seed.

    ``train_flops`` is the whole run's: every period's multiply-adds, counted at the network sizes of
    that period (GMP's dense phase included), summed, over the dense agent's for the same updates. It is
    read from the last period's ``flops/train_so_far`` and ``flops/train_dense_so_far``, so the summary
    and the per-period metrics are the same numbers.
    """
    nets = network_layers(trainer, agent)
    counts = {name: flops.network_count(_seed_slice(p, seed), masks=_seed_slice(m, seed))
              for name, (p, m) in nets.items()}
    actor, critic = counts["actor"], counts["critic"]
    train = None
    if history and "flops/train_dense_so_far" in history[-1][1]:
        last = history[-1][1]
        dense = float(np.asarray(last["flops/train_dense_so_far"])[seed])
        train = float(np.asarray(last["flops/train_so_far"])[seed]) / dense if dense > 0 else None
    return {
        "sparsity_actor": 1.0 - actor.fraction,
        "sparsity_critic": 1.0 - critic.fraction,
        # weights (kernels, `sparsity.flops`): all, and the active ones; a scaling sweep's x axes
        "actor_weights": float(actor.dense), "actor_active_weights": float(actor.sparse),
        "critic_weights": float(critic.dense), "critic_active_weights": float(critic.sparse),
        "total_size": flops.total_size(trainer.agent.flop_model, actor, critic).fraction,
        "train_flops": train,
        "inference_flops": flops.inference_flops(actor).fraction,
    }


def summarize(run: cfg_lib.RunSpec, history: List[list], trainer, agent) -> Dict[str, Any]:
    """The ``summary.json`` object of ``run``: one entry per seed (``agent``: its vmapped agent states),
    then mean and std over seeds."""
    config, seeds = run.config, []
    for i in range(run.num_seeds):
        steps, rets = run_logging.returns_of(history, i)
        row = {"seed": run.seeds[i],
               "final_return": float(rets[-1]) if len(rets) else None,
               "best_return": float(rets.max()) if len(rets) else None,
               "auc": run_logging.area_under_curve(steps, rets)}
        row.update(size_and_flops(trainer, agent, i, history))
        row.update(final_plasticity(history, i))
        seeds.append(row)
    return {
        "method": config.method, "algo": config.algo, "env": config.env.name, "num_seeds": run.num_seeds,
        "env_steps": history[-1][0] if history else 0, "periods": len(history),
        "seeds": seeds, "mean": _aggregate(seeds, np.mean), "std": _aggregate(seeds, np.std),
        "config": cfg_lib.to_dict(config),
    }


def final_plasticity(history: List[list], seed: int) -> Dict[str, Optional[float]]:
    """The last period's plasticity measures of one seed (``plasticity/<net>/<measure>``; None if absent,
    e.g. a run recorded before they existed, or no update in the period for the gradient norm)."""
    last = history[-1][1] if history else {}
    out = {}
    for name in PLASTICITY_FIELDS:
        value = run_logging.seed_value(last.get(name), seed)
        out[name] = None if value is None or not np.isfinite(value) else float(value)
    return out


PLASTICITY_FIELDS = tuple(f"plasticity/{net}/{m}" for net in ("actor", "critic") for m in plasticity.MEASURES)


def _aggregate(rows: List[Dict[str, Any]], fn) -> Dict[str, Optional[float]]:
    out = {}
    for name in run_logging.SUMMARY_FIELDS + PLASTICITY_FIELDS:
        vals = [r[name] for r in rows if r.get(name) is not None]
        out[name] = float(fn(vals)) if vals else None
    return out
