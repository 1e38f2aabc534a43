"""The sparse core: masks, per-layer densities, exact-count topology updates, scores, schedules, targets.

See docs/ARCHITECTURE.md for the pytree conventions (masks: bool arrays at sparse leaves, None at dense).
"""
from sparse_rl_jax.sparsity import (
    distributions, flops, masks, optim, schedules, scores, targets, topology)
from sparse_rl_jax.sparsity.distributions import (
    densities_for, er_densities, erk_densities, erk_solve, uniform_densities)
from sparse_rl_jax.sparsity.masks import (
    active_counts, apply_masks, default_predicate, init_masks, leaf_keys, map_sparse, sparse_structure,
    sparse_weight_count, top_k_mask)
from sparse_rl_jax.sparsity.schedules import TopologySchedule, gmp_sparsity, gmp_window
from sparse_rl_jax.sparsity.scores import (
    ImportanceState, LeafInputs, score_tree, init_importance, update_importance)
from sparse_rl_jax.sparsity.targets import prune_target, remask_target
from sparse_rl_jax.sparsity.topology import keep_top, prune_to_count, update_mask, update_masks
from sparse_rl_jax.sparsity.optim import grown_mask, mask_tree, masked_optimizer, reset_grown_moments
from sparse_rl_jax.sparsity.flops import (
    Count, LayerStat, Pass, PassModel, inference_flops, layer_stats, network_count,
    total_size, train_flops, train_passes)
