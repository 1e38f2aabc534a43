"""Static sparse (masks fixed at init), TD3."""
from experiments.configs import common


def get_config():
    return common.preset_config("static", "td3")
