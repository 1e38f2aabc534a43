"""`make demo`: train the demo preset (sparse RLx2-TD3 on inverted_pendulum, 2 seeds) through the same code
path as `experiments.train`, then print where the plots and the summary are.

    python -m experiments.demo [--workdir runs/demo] [--seeds 2]

Running it again on the same work dir resumes (a finished run just reprints its summary); delete the work
dir to start over. Config: ``experiments/configs/demo.py``.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import flags

from experiments import train
from sparse_rl_jax import cli

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.py")


def main(argv: Sequence[str]) -> int:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", "runs/demo", "Work directory.", flag_values=fv)
    flags.DEFINE_integer("seeds", 2, "Seeds, vmapped in one program.", flag_values=fv)
    if not cli.parse(fv, argv, "demo"):
        return cli.USAGE_ERROR
    workdir = fv["workdir"].value
    args = [argv[0], f"--config={CONFIG}", f"--workdir={workdir}", f"--seeds={fv['seeds'].value}"]
    if os.path.isfile(os.path.join(workdir, "config.json")):
        print(f"demo: {workdir} already holds a demo run; resuming it (delete the directory to start over)")
        args.append("--resume")
    status = train.main(args)
    if status == 0:
        plots = os.path.join(workdir, "plots")
        print(f"\ndemo done. learning curve: {os.path.join(plots, 'learning_curve.png')}\n"
              f"all plots: {plots}/\nsummary: {os.path.join(workdir, 'summary.json')}\n"
              f"evaluate again: python -m experiments.evaluate --workdir {workdir}")
    return status


if __name__ == "__main__":
    cli.run(main)
