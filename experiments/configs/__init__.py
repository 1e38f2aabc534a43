"""ml_collections config files: ``preset.py:<method>,<algo>[,<task>]`` (every preset) and ``demo.py``."""
