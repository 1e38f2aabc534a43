"""RLx2 (Tan et al. 2023): RigL + delayed 3-step target + dynamic buffer, TD3."""
from experiments.configs import common


def get_config():
    return common.preset_config("rlx2", "td3")
