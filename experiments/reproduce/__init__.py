"""The reproduction study: the papers' claims on Brax locomotion, tier by tier (see `__main__`)."""
