"""Mask pytrees: which leaves are sparse, exact-count selection, initial masks, counting.

A *structure* is a tree of Python bools with the params' structure (True = sparse): static, it decides
which leaves carry a mask. A *mask tree* has a ``bool`` array at sparse leaves and ``None`` at dense
leaves (biases, dense layers). Densities may be traced, so counts are ``jnp`` values and no shape
depends on a density. Layer paths are '/'-joined key names without the leading ``'params'``, e.g.
``'q1/dense_2/kernel'`` (leaf) and ``'q1/dense_2'`` (layer).

:func:`top_k_mask` (exact count, traced ``k``, ties to the lower flat index) is the primitive under
every mask operation. It bisects on an order-preserving integer image of the scores (passes of
``count(key >= t)`` with early exit) and resolves ties by a second bisection over flat indices; the
stable argsort (``method='sort'``) is kept as the reference. DS prunes its targets after every soft
update, so speed matters, and what costs is the number of passes (one count over a 256x256 layer:
10-25 us on the 2-core development CPU, see :func:`_pieces`): given a guess of the threshold
(`targets.floor_guesses`: the previous search's own threshold, :func:`top_k_floor`), the search
gallops from it and takes ~3 passes instead of ~15 (docs/benchmarks.md).
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
from jax import lax

_DENSE_RE = re.compile(r"^dense_(\d+)$")


def is_none(x: Any) -> bool:
    """``is_leaf`` for mask / density trees, whose dense leaves are ``None``."""
    return x is None


# ----------------------------------------------------------------------------------------- paths
def _key_name(k: Any) -> str:
    """Name of one key-path entry (DictKey.key, GetAttrKey.name, SequenceKey.idx)."""
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_names(path: Iterable[Any]) -> tuple:
    """Key names of a JAX key path, without a leading ``'params'`` collection name."""
    names = tuple(_key_name(k) for k in path)
    return names[1:] if names[:1] == ("params",) else names


def path_string(path: Iterable[Any]) -> str:
    """'/'-joined leaf path, e.g. ``'q1/dense_0/kernel'``."""
    return "/".join(path_names(path))


def layer_string(path: Iterable[Any]) -> str:
    """'/'-joined layer path (leaf path without the leaf name), e.g. ``'q1/dense_0'``."""
    return "/".join(path_names(path)[:-1])


def match_layer(layer: str, pattern: str) -> bool:
    """True when ``pattern`` is a '/'-aligned suffix of ``layer`` ('dense_0' matches 'q1/dense_0')."""
    pattern = pattern.strip("/")
    return layer == pattern or layer.endswith("/" + pattern)


def best_match(layer: str, table: Optional[dict]) -> Optional[str]:
    """The longest key of ``table`` matching ``layer`` (most specific override wins), else None."""
    hits = [p for p in (table or {}) if match_layer(layer, p)]
    return max(hits, key=len) if hits else None


# ------------------------------------------------------------------------------------- structure
def default_predicate(path: str, leaf: Any) -> bool:
    """Sparsify weight matrices only: leaves named 'kernel' with ndim >= 2 (biases stay dense).

    ``path`` is the leaf's path string (see :func:`path_string`); user predicates get the same.
    """
    return path.split("/")[-1] == "kernel" and getattr(leaf, "ndim", 0) >= 2


def _layer_index(names: tuple) -> Optional[int]:
    m = _DENSE_RE.match(names[-2]) if len(names) >= 2 else None
    return int(m.group(1)) if m else None


def _output_indices(flat) -> dict:
    """Highest ``dense_i`` index per parent dict: each MLP (actor, q1, q2) has its own output layer."""
    last: dict = {}
    for path, _ in flat:
        names = path_names(path)
        idx = _layer_index(names)
        if idx is not None:
            last[names[:-2]] = max(idx, last.get(names[:-2], -1))
    return last


def sparse_structure(params, predicate: Optional[Callable] = None, dense_input: bool = False,
                     dense_output: bool = False, dense_layers: Iterable[str] = ()):
    """Tree of Python bools (True = sparse) with the params' structure.

    ``predicate(path_string, leaf)`` chooses candidate leaves (default: kernels). ``dense_input`` keeps
    every MLP's ``dense_0`` dense, ``dense_output`` its highest ``dense_i`` (DS keeps outputs dense,
    RLx2 does not). ``dense_layers`` are layer-path suffixes kept dense, e.g. ``('q1/dense_2',)``.
    """
    predicate = predicate or default_predicate
    dense_layers = (dense_layers,) if isinstance(dense_layers, str) else tuple(dense_layers)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    last = _output_indices(flat)

    def decide(path, leaf) -> bool:
        names = path_names(path)
        if not predicate("/".join(names), leaf):
            return False
        idx = _layer_index(names)
        if dense_input and idx == 0:
            return False
        if dense_output and idx is not None and idx == last[names[:-2]]:
            return False
        layer = "/".join(names[:-1])
        return not any(match_layer(layer, p) or match_layer("/".join(names), p) for p in dense_layers)

    return jax.tree_util.tree_unflatten(treedef, [decide(p, x) for p, x in flat])


# ---------------------------------------------------------------------------------- tree helpers
def map_sparse(fn: Callable, masks, *trees, keep_dense: bool = False):
    """Apply ``fn(mask, *leaves)`` at the sparse leaves of ``masks`` (their non-``None`` leaves).

    At dense leaves the result is ``None`` by default, so the result is a *mask-shaped* tree (new masks,
    scores, counts) and a params leaf can never leak into a mask tree. With ``keep_dense=True`` it is
    the first tree's leaf instead, so mapping over params gives a *params-shaped* tree (e.g.
    :func:`apply_masks`: biases pass through). ``trees`` must match ``masks`` down to its leaves and
    may hold ``None`` at dense leaves (density or score trees). ``masks`` may be any mask-shaped tree,
    e.g. a density tree.
    """
    def leaf(m, *xs):
        if m is None:
            return xs[0] if keep_dense and xs else None
        return fn(m, *xs)

    return jax.tree.map(leaf, masks, *trees, is_leaf=is_none)


def leaf_keys(key: jax.Array, masks):
    """One independent PRNG key per sparse leaf (``None`` at dense leaves), split from ``key``."""
    flat, treedef = jax.tree_util.tree_flatten(masks, is_leaf=is_none)
    n = sum(m is not None for m in flat)
    keys = iter(jax.random.split(key, max(n, 1)))
    return jax.tree_util.tree_unflatten(treedef, [None if m is None else next(keys) for m in flat])


def apply_masks(params, masks):
    """Zero the weights where the mask is False (the stored-weights invariant); dense leaves as is."""
    return map_sparse(lambda m, p: jnp.where(m, p, jnp.zeros((), p.dtype)), masks, params,
                      keep_dense=True)


def active_counts(masks):
    """Tree of int32 non-zero counts per sparse leaf (``None`` at dense leaves)."""
    return map_sparse(lambda m: jnp.sum(m, dtype=jnp.int32), masks)


def sparse_weight_count(params, structure) -> int:
    """Dense size (Python int) of the sparse leaves: the denominator of every density."""
    sizes = jax.tree.map(lambda s, p: int(p.size) if s else 0, structure, params)
    return sum(jax.tree.leaves(sizes))


# ---------------------------------------------------------------------------- exact-count top-k
def order_key(scores: jax.Array) -> jax.Array:
    """uint32 image of float scores with the same order (NaN -> -inf, -0 -> +0), flattened.

    Non-negative floats already compare like their bit patterns; negative ones are bit-flipped. Every
    key is >= 0x007FFFFF (the key of -inf), so 0 is free to mark invalid entries.
    """
    x = jnp.ravel(scores).astype(jnp.float32)
    x = jnp.where(jnp.isnan(x), -jnp.inf, x)
    x = jnp.where(x == 0, jnp.float32(0), x)
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))


def _signed(ukeys):
    """uint32 keys -> int32 with the same order (signed compares vectorise better on CPU)."""
    return lax.bitcast_convert_type(ukeys ^ jnp.uint32(0x80000000), jnp.int32)


_PIECE = 2**15


def _pieces(x: jax.Array) -> list:
    """Flat ``x`` as slices of at most 2**15 entries on CPU (whole elsewhere), for reductions.

    Why: XLA:CPU splits a longer loop over its threads, which on the 2-core development machine costs
    more than it saves. A count over 65,536 entries takes 24 us as one reduction and 10 us as two
    slices (separate loops, which also run concurrently).
    """
    x = jnp.ravel(x)
    n = x.shape[0]
    if n <= _PIECE or jax.default_backend() != "cpu":
        return [x]
    size = -(-n // -(-n // _PIECE))  # equal slices of at most _PIECE
    return [x[i:i + size] for i in range(0, n, size)]


def _count(pred):
    """Number of True entries. A float32 sum is ~2x faster than an int32 one on XLA:CPU and exact
    while every partial sum is an integer <= 2**24."""
    if pred.size <= 2**24:
        return sum(jnp.sum(p.astype(jnp.float32)).astype(jnp.int32) for p in _pieces(pred))
    return jnp.sum(pred, dtype=jnp.int32)


def _bisect(count_at, lo, hi, c_lo, c_hi, target, lo_side):
    """Integer bisection on [lo, hi] for a monotone count; stops early when either end's count is
    exactly ``target``. ``lo_side(c)`` says whether a point with count ``c`` belongs to the low end.
    Resolves ties over flat indices (`_select_bisect`); the key threshold itself is `_search`'s."""
    def cond(s):
        lo, hi, c_lo, c_hi = s
        return (hi - lo > 1) & (c_lo != target) & (c_hi != target)

    def body(s):
        lo, hi, c_lo, c_hi = s
        mid = lo + (hi - lo) // 2
        c = count_at(mid)
        low = lo_side(c)
        return (jnp.where(low, mid, lo), jnp.where(low, hi, mid), jnp.where(low, c, c_lo),
                jnp.where(low, c_hi, c))

    return lax.while_loop(cond, body, (lo, hi, c_lo, c_hi))


_TOP = 0xFFFFFFFF  # above every key (+inf is 0xFF800000): count(key >= _TOP) == 0
_FIRST_STEP = 2**15  # first gallop step: 2**15 / 2**23 of a float's value, ~0.4%
_UP, _DOWN, _BISECT = 0, 1, 2  # phases of `_search`: gallop upwards / downwards, bisect the bracket


def _search(count_at, lo, hi, c_lo, c_hi, phase, k):
    """Bracket and bisect the key threshold in **one** loop whose state is **one** uint32 vector.

    From a guessed key (``phase`` _UP: ``lo`` is the guess, its count ``c_lo >= k``; _DOWN: ``hi`` is the
    guess, ``c_hi < k``) it gallops away from the guess, doubling the step from `_FIRST_STEP`, until the
    count crosses ``k``; then (or at once, ``phase`` _BISECT over a known bracket) it bisects, stopping as
    soon as either end's count is exactly ``k``. Returns ``(lo, hi, c_lo, c_hi, k)`` with ``c_lo >= k >
    c_hi`` or ``c_lo == k``, where the returned ``k`` is ``min(k, c_lo)``: ``c_lo < k`` only at key 1, which
    counts every valid entry (fewer than ``k``).

    Why one loop and one vector: under the seed ``vmap`` a loop's predicate is batched, so every carried
    value is re-selected each trip, and on XLA:CPU each such select and each loop's entry costs about a
    microsecond of dispatch. Two loops (gallop, then bisection) over six scalars cost about as much again
    as their counts (DS's target prune: ~40 us per trip of which ~21 us counting, against ~23 us
    per trip in one loop; docs/benchmarks.md). The probes,
    and so the result and the threshold, are those of the two loops.
    """
    bits = lambda c: lax.bitcast_convert_type(jnp.asarray(c, jnp.int32), jnp.uint32)
    count = lambda u: lax.bitcast_convert_type(u, jnp.int32)

    def unpack(s):
        return s[0], s[1], count(s[2]), count(s[3]), s[4], s[5]

    def cond(s):
        lo, hi, c_lo, c_hi, _, ph = unpack(s)
        kk = jnp.minimum(k, c_lo)
        return (ph != _BISECT) | ((hi - lo > 1) & (c_lo != kk) & (c_hi != kk))

    def body(s):
        lo, hi, c_lo, c_hi, step, ph = unpack(s)
        gallop, up = ph != _BISECT, ph == _UP
        p = jnp.where(gallop,
                      jnp.where(up, jnp.where(lo > hi - step, hi, lo + step),
                                jnp.where(hi > step, hi - step, jnp.uint32(1))),
                      lo + (hi - lo) // 2)
        c = count_at(p)
        # key 1 is below every valid key: its count is the valid count, so it closes a downward gallop
        to_lo = jnp.where(gallop, (c >= k) | (p == 1), c >= jnp.minimum(k, c_lo))
        still = jnp.where(up, to_lo & (c != k), ~to_lo)  # the gallop has not crossed k yet
        ph = jnp.where(gallop & still, ph, jnp.uint32(_BISECT))
        step = jnp.where(gallop & (step < jnp.uint32(2**31)), step * 2, step)
        return jnp.stack([jnp.where(to_lo, p, lo), jnp.where(to_lo, hi, p), bits(jnp.where(to_lo, c, c_lo)),
                          bits(jnp.where(to_lo, c_hi, c)), step, ph])

    start = jnp.stack([jnp.asarray(lo, jnp.uint32), jnp.asarray(hi, jnp.uint32), bits(c_lo), bits(c_hi),
                       jnp.uint32(_FIRST_STEP), jnp.asarray(phase, jnp.uint32)])
    lo, hi, c_lo, c_hi, _, _ = unpack(lax.while_loop(cond, body, start))
    return lo, hi, c_lo, c_hi, jnp.minimum(k, c_lo)


def _select_bisect(keys, valid, k, guess=None):
    """Top-k by bisection on the keys, no sort and no cumsum (both are slow on XLA:CPU).

    1. A key threshold ``t`` with ``count(key >= t) == k``, or the largest one with ``count >= k`` when
       more entries tie at it than are needed (`_search`): bisection over all keys (<= 32 passes of
       compare + count, stopping as soon as a threshold isolates exactly ``k`` entries: ~15-22 passes on
       weights), or, given a guessed key, a gallop from the guess and a bisection inside the bracket it
       finds (~3 passes with DS's guess, `targets.floor_guesses`).
    2. Only with such ties: the flat-index bound ``j`` below which the ties fill the remainder
       (<= log2(n) passes). The counts at the bracket's ends give every other count it needs.
    Any guess gives the same mask: every threshold that passes 1. selects the same entries.
    """
    n = keys.size
    skeys = jnp.where(valid, _signed(keys), jnp.iinfo(jnp.int32).min)  # invalid below every key
    count_at = lambda t: _count(skeys >= _signed(t))
    if guess is None:
        n_valid = _count(valid)
        start = (jnp.uint32(1), jnp.uint32(_TOP), n_valid, jnp.int32(0), _BISECT)
    else:
        g = jnp.where(k > 0, guess, jnp.uint32(_TOP))
        c_g = count_at(g)
        up = c_g >= k  # g is on the low side: the threshold is at or above it
        start = (jnp.where(up, g, jnp.uint32(1)), jnp.where(up, jnp.uint32(_TOP), g), jnp.where(up, c_g, -1),
                 jnp.where(up, 0, c_g), jnp.where(c_g == k, _BISECT, jnp.where(up, _UP, _DOWN)))
    t, _, c_t, c_above, k = _search(count_at, *start, k)
    # Either count(key >= t) == k, or ties: count(key > t) == c_above < k < c_t == count(key >= t).
    # The tie arrays are built inside the loop and the final mask, never as loop inputs: a loop input
    # is materialised, and in the usual exact case the loop makes no trip.
    exact = c_t == k
    st = _signed(t)
    need, n_ties = jnp.where(exact, 1, k - c_above), jnp.where(exact, 1, c_t - c_above)
    below = lambda j: (skeys == st) & (lax.iota(jnp.int32, n) < j)
    j_lo, j_hi, c_lo, _ = _bisect(lambda j: _count(below(j)), jnp.int32(0), jnp.int32(n), jnp.int32(0),
                                  n_ties, need, lambda c: c < need)
    j = jnp.where(exact, n, jnp.where(c_lo == need, j_lo, j_hi))
    return ((skeys > st) | below(j)) & (k > 0), t


def _select_sort(keys, valid, k, guess=None):
    """Reference: stable lexsort (valid first, then key descending, then flat index) and rank < k."""
    n = keys.size
    order = jnp.lexsort((~keys, ~valid))
    ranks = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    selected = valid & (ranks < k)
    return selected, jnp.where(jnp.any(selected), jnp.min(jnp.where(selected, keys, jnp.uint32(_TOP))), 1)


def _top_k(scores, k, valid, lowest, method, guess):
    """(flat mask, threshold key) of the selection :func:`top_k_mask` documents."""
    keys = order_key(scores)
    keys = ~keys if lowest else keys
    valid = jnp.ones(keys.shape, bool) if valid is None else jnp.ravel(valid).astype(bool)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, keys.size)
    if guess is not None:
        guess = order_key(jnp.asarray(guess, jnp.float32))[0]
        guess = ~guess if lowest else guess
    select = {"bisect": _select_bisect, "sort": _select_sort}[method]
    mask, threshold = select(keys, valid, k, guess)
    return mask.reshape(jnp.shape(scores)), threshold, k


@functools.partial(jax.jit, static_argnames=("lowest", "method"))
def top_k_mask(scores: jax.Array, k, valid: Optional[jax.Array] = None, *, lowest: bool = False,
               method: str = "bisect", guess=None) -> jax.Array:
    """Bool mask of the ``k`` highest (``lowest=True``: lowest) scores among ``valid`` entries.

    Exact: selects ``min(k, count(valid))`` entries; ties are broken by lower flat index. ``k`` may be
    traced (jit/vmap). NaN scores rank as -inf. ``method`` 'bisect' (default, fast) or 'sort'.
    ``guess``: optional score near the ``k``-th selected one; it changes only how many passes the
    search takes, never the mask. Jitted so eager calls hit the compilation cache (inside an outer jit
    it is simply inlined).
    """
    return _top_k(scores, k, valid, lowest, method, guess)[0]


_NEG_INF_KEY = 0x007FFFFF  # order_key(-inf): a threshold at or below it separates nothing


def _key_score(key: jax.Array) -> jax.Array:
    """The float32 score whose :func:`order_key` is ``key`` (its inverse on keys of real scores)."""
    bits = jnp.where((key >> 31) == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
    return lax.bitcast_convert_type(bits, jnp.float32)


@functools.partial(jax.jit, static_argnames="method")
def top_k_floor(scores: jax.Array, k, valid: Optional[jax.Array] = None, *, method: str = "bisect",
                guess=None):
    """``(top_k_mask(scores, k, valid, guess=guess), floor)``: the mask of the ``k`` highest scores and
    a score that separates it, ``floor <= every selected score`` and ``floor >= every unselected valid
    score``.

    The floor is the search's own threshold, so it costs nothing; it is what a caller keeps to guess the
    next search of a slowly changing array (DS's target prune) instead of reducing for one. It may be
    ``-inf`` when every valid entry is selected, and is ``+inf`` when ``k == 0``.
    """
    mask, threshold, k = _top_k(scores, k, valid, False, method, guess)
    floor = jnp.where(threshold <= jnp.uint32(_NEG_INF_KEY), -jnp.inf, _key_score(threshold))
    return mask, jnp.where(k > 0, floor, jnp.inf)


def density_count(density, size: int) -> jax.Array:
    """Exact count ``round(density * size)`` (float32, half to even) as int32; density may be traced."""
    return jnp.round(jnp.asarray(density, jnp.float32) * size).astype(jnp.int32)


# -------------------------------------------------------------------------------- initial masks
def _random_mask(key, shape, k):
    """Exactly ``k`` positions chosen uniformly: the first ``k`` entries of a random permutation."""
    size = math.prod(shape)
    perm = jax.random.permutation(key, size)
    flat = jnp.zeros(size, bool).at[perm].set(jnp.arange(size) < k)
    return flat.reshape(shape)


@functools.partial(jax.jit, static_argnames="method")
def init_masks(key: jax.Array, params, densities, method: str = "random"):
    """Initial masks with exactly ``round(d * size)`` active entries per sparse leaf.

    ``densities`` is a density tree (float / traced scalar at sparse leaves, ``None`` at dense).
    'random': uniform random subset (one key per leaf, so vmapped seeds differ); 'magnitude': top-|w|
    of the initial weights (RLx2), deterministic.
    """
    if method not in ("random", "magnitude"):
        raise ValueError(f"unknown mask init method {method!r}")
    keys = leaf_keys(key, densities)

    def leaf(d, p, k):
        count = density_count(d, p.size)
        if method == "random":
            return _random_mask(k, p.shape, count)
        return top_k_mask(jnp.abs(p), count)

    return map_sparse(leaf, densities, params, keys)
