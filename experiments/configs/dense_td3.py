"""Dense baseline, TD3."""
from experiments.configs import common


def get_config():
    return common.preset_config("dense", "td3")
