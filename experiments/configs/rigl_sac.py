"""RigL (Evci et al. 2020; Graesser et al. 2022 settings), SAC."""
from experiments.configs import common


def get_config():
    return common.preset_config("rigl", "sac")
