"""What `pip install .` (not editable) installs: every subpackage, the shipped search
spaces as package data, a console script per command."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# Every test here runs a command in a subprocess (seconds each): not in the fast tier.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = out.glob("tune_lm-*.whl")
    return zipfile.ZipFile(found)


def test_the_wheel_holds_every_module_and_the_shipped_spaces(wheel):
    names = set(wheel.namelist())
    modules = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tune_lm").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    spaces = {str(p.relative_to(REPO_ROOT))
              for p in (REPO_ROOT / "tune_lm" / "search_spaces").glob("*.yaml")}  # fmt: skip
    assert spaces and spaces <= names, sorted(spaces - names)


def test_the_wheel_declares_a_console_script_per_command(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for command in ("search", "train", "report", "generate", "evaluate"):
        assert f"tune-lm-{command} = tune_lm.{command}:cli" in text, text
