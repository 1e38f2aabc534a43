"""DS with importance-based drop and grow, SAC."""
from experiments.configs import common


def get_config():
    return common.preset_config("ds+importance", "sac")
