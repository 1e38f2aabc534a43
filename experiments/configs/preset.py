"""Any preset by name: ``--config=experiments/configs/preset.py:<method>,<algo>`` (e.g. ``rlx2+importance,sac``)."""
from experiments.configs import common


def get_config(arg: str = "dense,td3"):
    method, _, algo = arg.partition(",")
    return common.preset_config(method.strip(), algo.strip() or "td3")
