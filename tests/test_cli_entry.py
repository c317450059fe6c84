"""What every command does before and after its own work: ``--help`` prints the usage
and exits 0 (``evaluate --help`` once crashed on a bare % in a help text, which argparse
expands), and a Ctrl-C that the command does not handle itself (start-up, the last
clean-up) ends it with one line and exit 130, not a traceback."""

import importlib

import pytest
import tomllib
from conftest import REPO_ROOT

from tune_lm.cli import run_main

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


def test_a_ctrl_c_the_command_leaves_to_its_caller_exits_130_in_one_line(capsys):
    def starting_up(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        run_main(starting_up, [])
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"
