"""Checkpoints of a whole vmapped run (orbax): persistence only, below the runner.

A checkpoint is one orbax step directory ``<workdir>/checkpoints/<period>/``, named by the number of
evaluation periods done (orbax calls it a step), with two items:

* ``state``: the complete vmapped ``TrainState`` pytree (leading axis = seeds): every network's params,
  target params, optimizer state, masks (``None`` at dense leaves is kept as structure), densities and
  importance state, the replay ring, the Brax env state, all PRNG keys and counters, and the observation
  statistics (``obs_stats``; ``None`` unless ``env.normalize_observations``, so runs without it have the
  same leaves as before the option existed);
* ``meta`` (JSON): the periods done (``period``), the number of seeds, the resolved config and the metric history so
  far (``history_to_json`` form), so a resumed run writes exactly the metrics of an uninterrupted one.

Atomicity: orbax writes every checkpoint into ``<period>.orbax-checkpoint-tmp-*`` and renames it when complete;
unfinished tmp directories are never listed as checkpoints, so a process killed during a save leaves the
previous checkpoint as the newest usable one. ``keep`` bounds how many finalised checkpoints stay.

A checkpoint of an older format (``meta["format"]``) restores too: the state fields added since
(`ADDED_FIELDS`) are left out of the template and filled in, or the restore fails with a clear message
where they cannot be (observation statistics are never invented).

Restoring needs the exact pytree structure, which only the runner knows: the caller hands `restore` a
``template(config, num_seeds, data_shards)`` function returning the abstract states (`runs.template`
traces the trainer's init with ``jax.eval_shape``; nothing is computed or compiled), and orbax fills it
in. So this module imports neither the trainer nor the distributed runner; `sparse_rl_jax.runs` (above
them) restores a run and loads its policy in one call.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np

from sparse_rl_jax.run_logging import history_to_json

CHECKPOINT_DIR = "checkpoints"
# 2: every network's ``target_floor`` (DS's prune guess), absent from format 1; 3: the meta item names the
# periods done ``period`` (formats 1 and 2: ``step``; `read_meta` reads both)
FORMAT_VERSION = 3
# Fields added to the state since format 1, with how a restore fills them in when a checkpoint
# lacks them: None only when the run's template holds None there (obs_stats: the run does not normalise
# observations), or zeros of the template's shape (target_floor: a guess, so zeros only cost the first
# prune after the resume a longer search).
ADDED_FIELDS = (("target_floor", "zeros"), ("obs_stats", "none"))


class CheckpointError(RuntimeError):
    """A missing, unreadable or incompatible checkpoint; the message is one line naming the path."""


class Corrupted(CheckpointError):
    """One checkpoint's files cannot be read (an older one may still be: `restore_readable`)."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def _manager(workdir: str, keep: Optional[int] = None, read_only: bool = False):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, enable_async_checkpointing=False)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("state", "meta"))


def save(workdir: str, period: int, states: Any, history: List, config: Any, num_seeds: Optional[int] = None,
         keep: Optional[int] = 3, data_shards: int = 0) -> str:
    """Write checkpoint ``period`` (the number of evaluation periods done) atomically; keep the newest
    ``keep``.

    ``history`` may be in raw ``train()`` form or already in ``history_to_json`` form. ``data_shards``:
    the layout of a data-parallel run's states (``distributed``; 0 = the ordinary vmapped layout).
    Multi-process runs: every process calls this with the same host (numpy) states; orbax synchronises
    the processes and the primary one writes. Returns the checkpoint directory.
    """
    import jax
    import orbax.checkpoint as ocp

    from sparse_rl_jax import config as cfg_lib

    if num_seeds is None:
        num_seeds = int(jax.tree.leaves(states)[0].shape[0])
    meta = {
        "format": FORMAT_VERSION, "period": int(period), "num_seeds": int(num_seeds), "data_shards": int(data_shards),
        "config": cfg_lib.to_dict(config) if not isinstance(config, dict) else config,
        "history": history if _is_json_history(history) else history_to_json(history),
    }
    with _stderr_kept_aside() as report:
        mgr = _manager(workdir, keep=keep)
        try:
            mgr.save(int(period), args=ocp.args.Composite(state=ocp.args.StandardSave(_empty_as_none(states)),
                                                         meta=ocp.args.JsonSave(meta)), force=True)
            mgr.wait_until_finished()
        except Exception as err:
            err.add_note(f"{SAVE_REPORT_NOTE}{report}")
            _log_to(report, "asyncio")  # its unfinished write tasks are reported when they are collected
            raise
        finally:
            mgr.close()
    return os.path.join(checkpoint_dir(workdir), str(int(period)))


SAVE_REPORT_NOTE = "orbax's own report of the failed save: "


def save_report(err: BaseException) -> Optional[str]:
    """The file that keeps what orbax and tensorstore printed during the failed save behind ``err``."""
    seen = set()
    while err is not None and id(err) not in seen:  # a later error (a cleanup's) may have come on top
        note = next((n for n in getattr(err, "__notes__", ()) if n.startswith(SAVE_REPORT_NOTE)), None)
        if note:
            return note[len(SAVE_REPORT_NOTE):]
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _is_empty(leaf: Any) -> bool:
    return 0 in tuple(getattr(leaf, "shape", ()))


def _empty_as_none(tree: Any) -> Any:
    """``tree`` with its zero-size arrays (orbax refuses them) as None, which orbax keeps as structure.
    They are part of some simulators' states: MJX's actuator activations of a model without any."""
    import jax

    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def _empty_refilled(template: Any, restored: Any) -> Any:
    """``restored`` (saved through `_empty_as_none`) with ``template``'s zero-size arrays put back."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(template)
    kept = iter(jax.tree.leaves(restored))
    return treedef.unflatten([np.zeros(x.shape, x.dtype) if _is_empty(x) else next(kept) for x in leaves])


def _log_to(path: str, name: str) -> None:
    """Send the ``name`` logger's records to ``path`` instead of stderr from now on."""
    import logging

    logger = logging.getLogger(name)
    logger.addHandler(logging.FileHandler(path))
    logger.propagate = False


@contextlib.contextmanager
def _stderr_kept_aside():
    """Route this process's stderr (file descriptor 2) to a temporary file during a save, and copy it back
    after a save that worked. A save that fails (disk full, permissions) makes orbax's and tensorstore's
    worker threads print dozens of tracebacks; the launcher reports such a failure in one line instead,
    and the file (its path is yielded) keeps what they printed."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    fd, path = tempfile.mkstemp(prefix="sparse_rl_jax-save-", suffix=".log")
    os.dup2(fd, 2)
    failed = True
    try:
        yield path
        failed = False
    finally:
        if failed:
            _settle(path)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        if not failed:
            with open(path, errors="replace") as f:
                text = f.read()
            os.remove(path)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def _settle(path: str, quiet_s: float = 1.0, limit_s: float = 10.0) -> None:
    """Wait until the report file of a failed save stops growing (``quiet_s`` without a new byte, at most
    ``limit_s``): tensorstore's threads go on reporting the failed writes (asyncio "Event loop is closed"
    tracebacks) for a while after orbax has given up, later still on a loaded machine, and those lines
    belong in the report, not on the user's screen."""
    import gc
    import time

    gc.collect()  # pending futures whose callbacks report the closed loop
    start = last_change = time.monotonic()
    size = os.path.getsize(path)
    while time.monotonic() - last_change < quiet_s and time.monotonic() - start < limit_s:
        time.sleep(0.1)
        now = os.path.getsize(path)
        if now != size:
            size, last_change = now, time.monotonic()


def _is_json_history(history: List) -> bool:
    return all(isinstance(entry, list) for entry in history)


def all_periods(workdir: str) -> List[int]:
    """The finalised checkpoints (by periods done), oldest first.

    The folder is listed rather than orbax's manager asked: a manager synchronises the processes, and
    after one of them has died (the moment a stopped run wants to name its last good checkpoint) it would
    wait for it. A work dir is local (`launch.local_path`), where orbax finalises a checkpoint by renaming
    its temporary directory to the period's number, so the numbered directories are the finalised ones."""
    folder = checkpoint_dir(workdir)
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def latest_period(workdir: str) -> Optional[int]:
    periods = all_periods(workdir)
    return periods[-1] if periods else None


def newest_path(workdir: str) -> Optional[str]:
    """The newest finalised checkpoint's directory, None before the first."""
    period = latest_period(workdir)
    return None if period is None else os.path.join(checkpoint_dir(workdir), str(period))


def _resolve_period(workdir: str, period: Optional[int]) -> int:
    periods = all_periods(workdir)
    if not periods:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}: nothing to resume or evaluate "
                              "(a run stopped before its first checkpoint leaves none: start it again in a new "
                              "or emptied work dir)")
    if period is None:
        return periods[-1]
    if period not in periods:
        raise CheckpointError(f"checkpoint {period} not in {checkpoint_dir(workdir)}; available: {periods}")
    return period


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(err).__name__


def read_meta(workdir: str, period: Optional[int] = None) -> Dict[str, Any]:
    """The JSON ``meta`` item of a checkpoint (newest by default): period, num_seeds, config, history."""
    import orbax.checkpoint as ocp

    period = _resolve_period(workdir, period)
    path = os.path.join(checkpoint_dir(workdir), str(period))
    mgr = _manager(workdir, read_only=True)
    try:
        meta = mgr.restore(period, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as err:  # orbax raises many types for damaged files
        raise Corrupted(f"checkpoint {path} is corrupted or unreadable ({_one_line(err)})") from None
    finally:
        mgr.close()
    if isinstance(meta, dict) and "step" in meta and "period" not in meta:  # formats 1 and 2 said "step"
        meta["period"] = meta.pop("step")
    if not isinstance(meta, dict) or {"period", "num_seeds", "config", "history"} - set(meta):
        raise Corrupted(f"checkpoint {path} is corrupted: its meta item lacks period/num_seeds/config/history")
    return meta


class Restored(NamedTuple):
    config: Dict[str, Any]  # the resolved config as a plain dict (`config.from_dict` turns it back)
    states: Any  # vmapped TrainState, leading axis = seeds
    history: List[list]  # `history_to_json` form
    period: int  # evaluation periods done
    num_seeds: int
    data_shards: int = 0  # > 0: data-parallel layout (agent ``[seeds]``, every other field ``[seeds, D]``)
    skipped: tuple = ()  # (period, reason) of each newer checkpoint passed over as unreadable


def restore_readable(workdir: str, template: "Template") -> Restored:
    """The newest checkpoint that restores, passing over unreadable newer ones (their periods and
    reasons in ``skipped``). `CheckpointError` when none restores, naming each one tried."""
    periods = all_periods(workdir)
    if not periods:
        _resolve_period(workdir, None)  # raises the "no checkpoint" error
    skipped = []
    for period in reversed(periods):
        try:
            return restore(workdir, template, period)._replace(skipped=tuple(skipped))
        except Corrupted as err:
            skipped.append((period, str(err)))
    raise CheckpointError(f"no readable checkpoint in {checkpoint_dir(workdir)}: "
                          + "; ".join(reason for _, reason in skipped))


def set_aside(workdir: str, period: int) -> str:
    """Move an unreadable checkpoint out of the way of the run's next save (never deleted: its files may
    still matter to whoever looks into why); returns where it went."""
    import time

    src = os.path.join(checkpoint_dir(workdir), str(period))
    dst = os.path.join(os.path.abspath(workdir), "checkpoints_unreadable",
                       f"{period}-{time.strftime('%Y%m%dT%H%M%S')}")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)
    return dst


# (config, num_seeds, data_shards) -> abstract states (``jax.ShapeDtypeStruct`` pytree) of that layout
Template = Callable[[Any, int, int], Any]


def restore(workdir: str, template: Template, period: Optional[int] = None) -> Restored:
    """Restore a checkpoint (the newest by default) into ``template(config, num_seeds, data_shards)``'s
    structure (`runs.template`). Raises `CheckpointError` with a one-line message."""
    import orbax.checkpoint as ocp

    from sparse_rl_jax import config as cfg_lib

    period = _resolve_period(workdir, period)
    meta = read_meta(workdir, period)
    path = os.path.join(checkpoint_dir(workdir), str(period))
    try:
        config = cfg_lib.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} holds a config this version cannot read "
                              f"({_one_line(err)})") from None
    shards = int(meta.get("data_shards", 0))  # absent in checkpoints written before data parallelism
    abstract = template(config, int(meta["num_seeds"]), shards)
    mgr = _manager(workdir, read_only=True)

    def restore_state(item):
        got = mgr.restore(period, args=ocp.args.Composite(state=ocp.args.StandardRestore(_empty_as_none(item))))
        return _empty_refilled(item, got["state"])

    try:
        try:
            states = restore_state(abstract)
        except Exception as err:
            states = _restore_older(restore_state, abstract)
            if states is None:
                raise Corrupted(f"checkpoint {path} is corrupted or unreadable ({_one_line(err)})") from None
    finally:
        mgr.close()
    return Restored(meta["config"], _uncommitted(states), meta["history"], int(meta["period"]),
                    int(meta["num_seeds"]), shards)


def _restore_older(restore_state, abstract: Any) -> Any:
    """Restore a checkpoint that lacks some of `ADDED_FIELDS` (orbax records even a ``None`` field as a
    key, so the template must leave them out): try every set of them, smallest first (a few fields, so a
    few tries), and fill the left-out fields as `ADDED_FIELDS` says. Returns None when no such template
    restores (or its fields cannot be filled: normalisation statistics are never invented)."""
    import itertools

    for n in range(1, len(ADDED_FIELDS) + 1):
        for fields in itertools.combinations(ADDED_FIELDS, n):
            fill = dict(fields)
            stripped = _strip(abstract, fill)
            if stripped is _CANNOT:
                continue
            try:
                return _refill(abstract, restore_state(stripped), fill)
            except Exception:
                continue
    return None


_CANNOT = object()  # `_strip`'s answer when a left-out field cannot be filled


def _strip(abstract: Any, fill: Dict[str, str]) -> Any:
    """``abstract`` with every dataclass turned into a dict of its fields less those in ``fill``
    (`_CANNOT` if one of them cannot be filled: "none" where the template holds a value)."""
    import dataclasses

    if dataclasses.is_dataclass(abstract):
        out = {}
        for f in dataclasses.fields(abstract):
            value = getattr(abstract, f.name)
            if f.name in fill:
                if fill[f.name] == "none" and value is not None:
                    return _CANNOT
                continue
            out[f.name] = _strip(value, fill)
        return _CANNOT if any(v is _CANNOT for v in out.values()) else out
    if isinstance(abstract, (list, tuple, dict)):
        items = abstract.items() if isinstance(abstract, dict) else enumerate(abstract)
        parts = {k: _strip(v, fill) for k, v in items}
        if any(v is _CANNOT for v in parts.values()):
            return _CANNOT
        return parts if isinstance(abstract, dict) else _rebuild(abstract, list(parts.values()))
    return abstract


def _refill(abstract: Any, restored: Any, fill: Dict[str, str]) -> Any:
    """Rebuild ``abstract``'s dataclasses from the dicts `_strip` made, the left-out fields filled."""
    import dataclasses

    if dataclasses.is_dataclass(abstract):
        values = {}
        for f in dataclasses.fields(abstract):
            value = getattr(abstract, f.name)
            if f.name in fill:
                values[f.name] = _zeros(value)
            else:
                values[f.name] = _refill(value, restored[f.name], fill)
        return type(abstract)(**values)
    if isinstance(abstract, dict):
        return {k: _refill(v, restored[k], fill) for k, v in abstract.items()}
    if isinstance(abstract, (list, tuple)):
        return _rebuild(abstract, [_refill(a, r, fill) for a, r in zip(abstract, restored)])
    return restored


def _rebuild(like, parts):
    """A list / tuple / NamedTuple of ``like``'s type from ``parts``."""
    return type(like)(*parts) if hasattr(like, "_fields") else type(like)(parts)


def _zeros(abstract: Any) -> Any:
    import jax

    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)


def _uncommitted(tree: Any) -> Any:
    """Orbax returns arrays committed to a device, while fresh `init_states` outputs are uncommitted; jit
    keys its cache on that, so without this a resumed run would compile the training chunk a second time."""
    import jax
    import jax.numpy as jnp

    def leaf(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jnp.asarray(np.asarray(x))

    return jax.tree.map(leaf, tree)
