"""The Makefile finds the tested interpreter by itself, and says what to install when it cannot."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIND = os.path.join(ROOT, "tools", "find_python.sh")
WANT = "%d.%d" % sys.version_info[:2]  # the suite runs on the tested interpreter


def _find(env, version=WANT):
    return subprocess.run(["sh", FIND, version], env=env, capture_output=True, text=True, timeout=60)


def _bare_env(tmp_path, path_dirs=()):
    """No python on PATH but ``path_dirs`` and the basic tools; pyenv's root in ``tmp_path/pyenv``."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for name in ("sort", "ls", "sh"):
        target = shutil.which(name)
        if target and not (tools / name).exists():
            (tools / name).symlink_to(target)
    return {"PATH": os.pathsep.join([*map(str, path_dirs), str(tools)]), "HOME": str(tmp_path),
            "PYENV_ROOT": str(tmp_path / "pyenv")}


def test_pyenv_version_found_when_not_on_path(tmp_path):
    bin_dir = tmp_path / "pyenv" / "versions" / f"{WANT}.99" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / f"python{WANT}").symlink_to(sys.executable)
    # a pyenv shim on PATH for a version that is not active fails when run: it must be skipped
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / f"python{WANT}"
    shim.write_text("#!/bin/sh\necho 'pyenv: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    proc = _find(_bare_env(tmp_path, [shims]))
    assert proc.returncode == 0, proc.stderr
    assert os.path.realpath(proc.stdout.strip()) == os.path.realpath(sys.executable)


def test_nothing_found_is_empty_and_nonzero(tmp_path):
    proc = _find(_bare_env(tmp_path), "3.99")
    assert proc.returncode == 1 and proc.stdout == ""


@pytest.fixture
def project_copy(tmp_path):
    """The Makefile and its helper in an empty folder: its venv rule is tried without touching .venv."""
    for name in ("Makefile", "requirements.txt", "setup.cfg", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    shutil.copytree(os.path.join(ROOT, "tools"), tmp_path / "tools")
    return tmp_path


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_names_what_to_install_when_no_interpreter(project_copy):
    proc = subprocess.run(["make", "venv", "PYTHON="], cwd=project_copy, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert f"no Python {WANT} found" in proc.stderr and "pyenv install" in proc.stderr
    assert not (project_copy / ".venv").exists()


def _other_python():
    """An interpreter of another version than the suite's (python3 on PATH is one on the dev machines)."""
    for name in ("python3", "python3.11", "python3.13"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", f"import sys; sys.exit('%d.%d' % sys.version_info[:2] == '{WANT}')"],
                                   capture_output=True).returncode == 0:
            return path
    return None


@pytest.mark.skipif(shutil.which("make") is None or _other_python() is None, reason="needs make and another Python")
def test_make_refuses_another_python_version(project_copy):
    proc = subprocess.run(["make", "venv", f"PYTHON={_other_python()}"], cwd=project_copy, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and f"the pinned set (requirements.txt) is for Python {WANT}" in proc.stderr
    assert not (project_copy / ".venv").exists()
