"""ml_collections config files, one per preset: ``--config=experiments/configs/<method>_<algo>.py``."""
