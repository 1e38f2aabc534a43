"""Parameter and FLOP accounting for sparse actor-critic agents, following RLx2's table conventions.

Everything here is host-side bookkeeping on Python numbers. It works from real ``params`` + ``masks``
(the trainer) or from shapes + a density tree (``jax.eval_shape`` params, the report CLI), so nothing has to
be allocated to get the numbers.

Counting conventions (ALGORITHMS.md, "Accounting conventions"):

* **Weights** are the kernels (leaves with ``ndim >= 2``, the same rule as ``masks.default_predicate``).
  Biases are excluded from every count, *including FLOPs*: a bias add is not a multiply-add and RLx2 counts
  weights only, so the sparse and dense columns stay comparable.
* A layer's active count is the mask's non-zeros, or ``round(density * size)`` from a density tree (the
  exact-count rule of ``masks.init_masks``, float32 and half to even). Dense leaves (mask/density
  ``None``) count in full.
* **Forward pass** of a network on one sample = its non-zero weights in multiply-adds (MACs).
  **Backward pass** = 2x forward (input gradient + weight gradient). A twin critic's pass runs both Qs.

Pass model: each agent declares its own as data (a `PassModel`, the agent's ``flop_model``); the ones
of TD3 and SAC, per sample of the mini-batch (multiply by ``batch_size``), are:

==========================================  ===================  ===============  =====================
pass                                        network              forward units    runs on
==========================================  ===================  ===============  =====================
TD3 target action                           actor target         1                every critic update
SAC next action                             actor (online)       1                every critic update
SAC entropy at the n-1 intermediate states  actor (online)       n - 1            critic updates, n > 1
target Q (both Qs)                          critic target        1                every critic update
critic update                               critic               1 + 2            every critic update
actor update: actor forward                 actor                1                every actor update
actor update: critic forward                TD3: Q1 only; SAC:   1                every actor update
                                            both Qs (min)
actor update: critic backward               as above             2                every actor update
actor update: actor backward                actor                2                every actor update
==========================================  ===================  ===============  =====================

(DDPG: TD3's passes with one Q.) TD3's actor updates once per ``policy_delay`` critic updates; SAC's at
every one. SAC's temperature update
reuses the actor update's log-probabilities and costs no network pass; soft target updates and
re-masking are elementwise and not counted. The critic backward inside the actor update is counted as a
full backward (2x), as RLx2 does, although only its input gradient is strictly needed.

Dense weight gradients: a backward pass is input gradient (f_S) + weight gradient (f_S when the
weight gradient is masked). Where a method needs the *dense* weight gradient the step costs
``2 f_S + f_D`` instead of ``3 f_S`` (RigL, Evci et al. 2020): an extra ``f_D - f_S``. RigL/RLx2 need it on
their event steps only; the importance scorer at *every* update of the network (its EMA of |g| at absent
connections). Random growth (SET/DS) and GMP need none. Drop/grow sorting is not counted. The dense
column is the dense agent doing the same updates with 1-step targets (the dense baseline).
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import numpy as np



class LayerStat(NamedTuple):
    """One weight matrix: path (e.g. 'q1/dense_0/kernel'), shape, dense size and active (non-zero) count."""

    path: str
    shape: Tuple[int, ...]
    dense: int
    active: int

    @property
    def density(self) -> float:
        return self.active / self.dense


class Count(NamedTuple):
    """A sparse quantity beside its dense equivalent (weights or multiply-adds)."""

    sparse: float
    dense: float

    @property
    def fraction(self) -> float:
        return self.sparse / self.dense


class Pass(NamedTuple):
    """One network pass: ``units`` forward-pass equivalents each time it ``runs`` ('critic_update',
    'actor_update', or 'nstep': per critic update while n-step targets are on, times n - 1)."""

    name: str
    network: str  # 'actor' | 'actor_target' | 'critic' | 'critic_q1' | 'critic_target'
    units: float
    runs: str = "critic_update"


class PassModel(NamedTuple):
    """An agent's training cost as data: the passes of one critic update (`Pass`), the networks it
    stores (for RLx2's total size: online networks and targets) and its default critic updates per actor
    update (TD3's policy delay; the steady-state figure of the report)."""

    passes: Tuple[Pass, ...]
    stored: Tuple[str, ...]
    actor_interval: int = 1


def path_string(path: Any) -> str:
    """'/'-joined key names without the leading 'params' collection (the masks.py convention)."""
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return "/".join(names[1:] if names[:1] == ["params"] else names)


def _active(spec: Any, size: int, kind: str) -> int:
    if spec is None:
        return size
    if kind == "masks":
        return int(np.count_nonzero(np.asarray(spec)))
    # float32 product rounded half to even: the same count as masks.density_count / init_masks.
    return int(np.round(np.float32(spec) * np.float32(size)))


def layer_stats(params: Any, masks: Any = None, densities: Any = None) -> List[LayerStat]:
    """Per-weight-matrix table of ``params`` (arrays or ``ShapeDtypeStruct``s), in tree order.

    Give ``masks`` (bool arrays / ``None``) for real networks or ``densities`` (floats / ``None``) for
    planned ones; with neither the network is dense. Biases (``ndim < 2``) are skipped.
    """
    if masks is not None and densities is not None:
        raise ValueError("give masks or densities, not both")
    kind, spec_tree = ("masks", masks) if masks is not None else ("densities", densities)
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if spec_tree is None:
        specs = [None] * len(path_leaves)
    else:
        specs = treedef.flatten_up_to(spec_tree)
    stats = []
    for (path, leaf), spec in zip(path_leaves, specs):
        shape = tuple(int(s) for s in np.shape(leaf))
        if len(shape) < 2:
            continue
        size = int(np.prod(shape))
        stats.append(LayerStat(path_string(path), shape, size, _active(spec, size, kind)))
    return stats


def network_count(params: Any, masks: Any = None, densities: Any = None, prefix: str = "") -> Count:
    """Non-zero and dense weight totals of one network (weights only); ``prefix``: only the layers whose
    path starts with it (``'q1/'``: the twin critic's Q1)."""
    stats = [s for s in layer_stats(params, masks, densities) if s.path.startswith(prefix)]
    return Count(sum(s.active for s in stats), sum(s.dense for s in stats))


def inference_flops(actor: Count, batch_size: int = 1) -> Count:
    """Multiply-adds of one actor forward (one action); the fraction equals the actor's density."""
    return Count(actor.sparse * batch_size, actor.dense * batch_size)


def train_passes(model: PassModel, policy_delay: Optional[int] = None) -> List[Pass]:
    """Per critic update on average: actor-update passes scaled by ``1 / policy_delay`` (default: the
    model's actor interval), n-step passes left out (the steady-state figure of the report CLI)."""
    d = model.actor_interval if policy_delay is None else policy_delay
    if d < 1:
        raise ValueError(f"policy_delay must be >= 1, got {d}")
    return [p._replace(units=p.units / d) if p.runs == "actor_update" else p
            for p in model.passes if p.runs != "nstep"]


def _networks(actor: Count, critic: Count, actor_target: Optional[Count],
              critic_target: Optional[Count], critic_q1: Optional[Count] = None) -> dict:
    """Targets default to the online counts (RLx2 shares masks; DS prunes to the online nnz); Q1 to half
    the twin critic."""
    return {"actor": actor, "critic": critic,
            "actor_target": actor if actor_target is None else actor_target,
            "critic_target": critic if critic_target is None else critic_target,
            "critic_q1": Count(critic.sparse / 2, critic.dense / 2) if critic_q1 is None else critic_q1}


def _topology_extra(net: Count, period: Optional[float]) -> float:
    """Amortised RigL cost: the update step's weight gradient is dense (f_D instead of f_S)."""
    if period is None:
        return 0.0
    if period <= 0:
        raise ValueError(f"topology period must be positive, got {period}")
    return (net.dense - net.sparse) / period


def train_flops(model: PassModel, actor: Count, critic: Count, *, actor_target: Optional[Count] = None,
                critic_target: Optional[Count] = None, critic_q1: Optional[Count] = None,
                policy_delay: Optional[int] = None, batch_size: int = 1,
                topology_period: Optional[float] = None,
                actor_topology_period: Optional[float] = None) -> Count:
    """Multiply-adds per critic update in the steady state (``train_passes``), beside the dense equivalent.

    ``topology_period`` (critic updates between critic events with a dense gradient; 1 for importance)
    adds the amortised dense-gradient cost; ``actor_topology_period`` is in critic updates too and
    defaults to ``topology_period * policy_delay``. The dense column never includes it.
    """
    nets = _networks(actor, critic, actor_target, critic_target, critic_q1)
    passes = train_passes(model, policy_delay)
    sparse = sum(p.units * nets[p.network].sparse for p in passes)
    dense = sum(p.units * nets[p.network].dense for p in passes)
    if actor_topology_period is None and topology_period is not None:
        actor_topology_period = topology_period * (policy_delay or model.actor_interval)
    sparse += _topology_extra(critic, topology_period) + _topology_extra(actor, actor_topology_period)
    return Count(sparse * batch_size, dense * batch_size)


def period_flops(model: PassModel, nets: dict, *, critic_updates: float, actor_updates: float,
                 nstep_updates: float = 0.0, nstep: int = 1, dense_grad_updates: Optional[dict] = None,
                 batch_size: int = 1) -> Count:
    """Multiply-adds of a stretch of training, counted pass by pass (``model.passes``).

    ``nets``: ``Count`` per network name of the pass model (mean sizes over the stretch); the numbers of
    critic and actor updates made, of critic updates with n-step targets on (``nstep`` > 1), and
    ``dense_grad_updates`` {network: updates whose weight gradient was dense (events or every update)}.
    The dense column: the same updates by the dense agent with 1-step targets.
    """
    runs = {"critic_update": critic_updates, "actor_update": actor_updates,
            "nstep": nstep_updates * max(nstep - 1, 0)}
    sparse = dense = 0.0
    for p in model.passes:
        sparse += p.units * runs[p.runs] * nets[p.network].sparse
        if p.runs != "nstep":
            dense += p.units * runs[p.runs] * nets[p.network].dense
    for name, count in (dense_grad_updates or {}).items():
        sparse += count * (nets[name].dense - nets[name].sparse)
    return Count(sparse * batch_size, dense * batch_size)


def total_size(model: PassModel, actor: Count, critic: Count, *, actor_target: Optional[Count] = None,
               critic_target: Optional[Count] = None) -> Count:
    """RLx2 "total size": non-zero weights over dense weights, all stored networks incl. targets
    (``model.stored``; TD3: actor + actor target + critic (both Qs) + critic target; SAC: no actor target)."""
    nets = _networks(actor, critic, actor_target, critic_target)
    return Count(sum(nets[n].sparse for n in model.stored), sum(nets[n].dense for n in model.stored))
