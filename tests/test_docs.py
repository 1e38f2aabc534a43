"""docs/ARCHITECTURE.md tells the truth about the functions it names: every ``name(arg, ...)`` it lists
for a module exists there and takes those parameters, in that order."""
import importlib
import inspect
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
CALL = re.compile(r"`([A-Za-z_][\w.]*)\(([^`]*?)\)`?")


def documented():
    """(module, name, [parameter names]) for each call written in a module's row or section."""
    text = open(DOC).read()
    out = []
    for row in re.findall(r"^\| `([\w/.]+)\.py` \| (.*) \|$", text, re.M):
        module = "sparse_rl_jax." + ("sparsity." if "/" not in row[0] and row[0] != "../report" else "") + row[0]
        out += [(module.replace("../", ""), n, a) for n, a in CALL.findall(row[1])]
    section = text.split("## Replay (`sparse_rl_jax/replay.py`)", 1)[1].split("\n## ", 1)[0]
    out += [("sparse_rl_jax.replay", n, a) for n, a in CALL.findall(section)]
    cases = []
    for m, n, a in out:
        params = [p.split("=")[0].strip().lstrip("*") for p in a.split(",") if p.strip() and p.strip() != "..."]
        if all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in params):  # a call, not a formula
            cases.append((m, n, params))
    return cases


CASES = documented()


def test_the_document_names_calls():
    assert len(CASES) > 20


@pytest.mark.parametrize("module,name,params", CASES, ids=[f"{m}.{n}" for m, n, _ in CASES])
def test_signature(module, name, params):
    mod = importlib.import_module(module)
    # a method named in a class's sentence (``TopologySchedule(...)`` with ``event(update)``)
    owners = [mod] + [v for v in vars(mod).values() if inspect.isclass(v) and v.__module__ == mod.__name__]
    owner = next((o for o in owners if hasattr(o, name.split(".")[0])), None)
    assert owner is not None, f"{module} has no {name}"
    obj = owner
    for part in name.split("."):
        assert hasattr(obj, part), f"{module} has no {name}"
        obj = getattr(obj, part)
    if not params:
        return
    actual = [p for p in inspect.signature(obj).parameters if p != "self"]
    assert actual[:len(params)] == params, f"{module}.{name}{tuple(actual)}: the doc says {params}"
