"""Every command's ``--help`` prints its usage and exits 0: the first thing a new user
runs (``evaluate --help`` once crashed on a bare % in a help text, which argparse
expands)."""

import importlib

import pytest
import tomllib
from conftest import REPO_ROOT

SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_prints_the_usage_of_every_flag(script, capsys):
    module_name = SCRIPTS[script].split(":")[0]
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module_name}") and "--help" in out
