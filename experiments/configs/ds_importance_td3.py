"""DS with importance-based drop and grow, TD3."""
from experiments.configs import common


def get_config():
    return common.preset_config("ds+importance", "td3")
