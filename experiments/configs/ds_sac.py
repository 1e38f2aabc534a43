"""DS (Sokar et al. 2022): SET-style drop/random grow, SAC."""
from experiments.configs import common


def get_config():
    return common.preset_config("ds", "sac")
