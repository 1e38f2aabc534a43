#!/usr/bin/env bash
# Download (on a machine that reaches PyPI) the wheels a GPU machine without Brax needs for gpu_check.sh:
# the packages of requirements.txt that a stock CUDA JAX image lacks, for CPython 3.12 on x86-64 Linux
# (Gymnasium among them: the paper tier runs the papers' Gymnasium tasks).
#
#   bash experiments/reproduce/gpu_wheels.sh [DIR]        # default DIR: .whl
#   # then, on the GPU machine (no network needed):
#   WHEELS=.whl bash experiments/reproduce/gpu_check.sh
#
# Versions are the ones requirements.txt pins; jax, flax, optax, chex, orbax, numpy and scipy are taken
# from the GPU machine's own environment (its CUDA JAX must not be replaced).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
pin() { grep -i "^$1==" requirements.txt | head -1; }
PKGS="$(pin brax) $(pin mujoco) $(pin mujoco-core) $(pin mujoco-studio) $(pin mujoco-mjx) $(pin ml_collections)
      $(pin tensorboardX) $(pin trimesh) $(pin jaxopt) $(pin glfw) $(pin PyOpenGL)
      $(pin gymnasium) $(pin cloudpickle) $(pin Farama-Notifications) $(pin ImageIO) $(pin pillow)"
PLATFORMS=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS="$PLATFORMS --platform $p"
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  $PLATFORMS --platform any -d "$DIR" $PKGS
ls -la "$DIR"
