"""Static sparse (masks fixed at init), SAC."""
from experiments.configs import common


def get_config():
    return common.preset_config("static", "sac")
