"""The README's "add a method" example runs as written, and its method really evolves both networks."""
import os
import re

import numpy as np

from sparse_rl_jax import methods

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_method_example_trains_end_to_end():
    text = open(README).read()
    block = re.search(r"<!-- example:begin -->\s*```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    try:
        exec(compile(block, "README.md", "exec"), scope)
        result = scope["result"]
        assert "set_gdrop" in methods.method_names() and "set_gdrop+importance" in methods.method_names()
        events = {net: sum(int(np.sum(m[f"topology/{net}/events"])) for _, m in result.history)
                  for net in ("actor", "critic")}
        assert events["actor"] > 0 and events["critic"] > 0, events
        agent = result.trainer.agent
        assert type(agent.critic_method).__name__ == "GradientDropSET" and agent.critic_method.dense_grad_on_events
    finally:
        methods.REGISTRY.pop("set_gdrop", None)
