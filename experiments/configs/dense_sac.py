"""Dense baseline, SAC."""
from experiments.configs import common


def get_config():
    return common.preset_config("dense", "sac")
