#!/usr/bin/env bash
# One cell of the paper tier for a few minutes on whatever accelerator JAX finds; prints env steps/s and the
# evaluation returns last. Installs nothing from the network.
#
#   bash experiments/reproduce/gpu_check.sh [CELL] [SEEDS] [ENV_STEPS]
#   bash experiments/reproduce/gpu_check.sh halfcheetah/td3/rlx2@scaled 8 60000
#
# Defaults: RLx2-TD3 on halfcheetah (the paper tier's env: Gymnasium's HalfCheetah-v5) at its paper settings (sparsity 0.90/0.85, 25k random warm-up, topology
# every 10k actor updates, dynamic buffer up to the paper's 1M: the `@scaled` buffer at scale 1), 8 seeds
# vmapped in one program, cut to 60k env steps (the schedules follow the shorter budget; the paper runs 3M). The Python environment must already hold the
# project's requirements (a GPU jaxlib included). On a machine without them, pass a folder of wheels in
# WHEELS=DIR (`bash experiments/reproduce/gpu_wheels.sh DIR` fetches them where PyPI is reachable): they are
# installed from there alone (pip --no-index) into a temporary site directory.
# Outputs go under $OUT (or a temporary folder): the run directory and check.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
CELL=${1:-halfcheetah/td3/rlx2@scaled}
SEEDS=${2:-8}
STEPS=${3:-60000}
# the project venv when there is one (make venv), else the machine's python3 (e.g. a CUDA JAX image)
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
OUT=${OUT:-$(mktemp -d)}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/srj-site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/srj-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
"$PY" -c "import jax; print('jax', jax.__version__, 'devices:', jax.devices())"
WORK="$OUT/gpu_check_run"
rm -rf "$WORK"
start=$(date +%s)
"$PY" -m experiments.train --config="experiments/reproduce/config.py:paper,$CELL" --seeds "$SEEDS" \
  --workdir "$WORK" --noplots --config.total_env_steps="$STEPS" --config.eval_every=5000 --checkpoint_every=1000
"$PY" - "$WORK" "$OUT/check.json" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
import numpy as np
from sparse_rl_jax import run_logging
workdir, out, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
history = run_logging.read_history(workdir)
summary = run_logging.read_json(f"{workdir}/summary.json")
sps = [run_logging.mean_of(m["training/sps"]) for _, m in history[1:]]  # the first period compiles
seeds = summary["num_seeds"]
returns = [[s, [round(float(v), 1) for v in m[run_logging.RETURN_KEY]]] for s, m in history
           if m.get(run_logging.RETURN_KEY) is not None]
result = {"cell": summary["env"] + "/" + summary["algo"] + "/" + summary["method"], "seeds": seeds,
          "env_steps_per_s_per_seed": float(np.median(sps)) if sps else None,
          "env_steps_per_s_all_seeds": float(np.median(sps)) * seeds if sps else None,
          "wall_s_incl_compile": wall, "eval_returns": returns,
          "final_mean": summary["mean"]["final_return"]}
json.dump(result, open(out, "w"), indent=1)
print(f"\ncell {result['cell']}: {seeds} seeds vmapped, wall {wall:.0f} s incl. compile")
for s, r in returns:
    print(f"  env steps {s:>8,}: eval return mean {np.mean(r):8.1f}  per seed {r}")
if sps:
    print(f"env steps/s (median over periods after the first): {np.median(sps):,.0f} per seed, "
          f"{np.median(sps) * seeds:,.0f} over all {seeds} seeds")
EOF
