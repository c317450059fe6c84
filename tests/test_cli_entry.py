"""What every command does before and after its own work: ``--help`` prints the usage
and exits 0 (``evaluate --help`` once crashed on a bare % in a help text, which argparse
expands), and a Ctrl-C that the command does not handle itself (start-up, the last
clean-up) ends it with one line and exit 130, not a traceback."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO_ROOT

from tune_lm.cli import parse_args, run_main

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


EXITING = """
import atexit, logging, sys, tempfile, threading, time
from pathlib import Path
from tune_lm.cli import parse_args, run_main

out = Path(sys.argv[1])

def main(argv):
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    logging.getLogger("t").addHandler(logging.FileHandler(out / "log.txt"))
    logging.getLogger("t").warning("logged")
    kept = tempfile.TemporaryDirectory(dir=out)  # cleaned up by its finaliser, at exit
    (out / "tempdir").write_text(kept.name)
    if argv:  # a thread still working when main returns: the exit waits for it
        threading.Thread(target=lambda: (time.sleep(0.5),
                                         (out / "thread").write_text("done"))).start()
    sys.stdout.write("no newline, still buffered")
    return 3

run_main(main, sys.argv[2:], whole_process=True)
"""


@pytest.mark.parametrize("thread", [False, True])
def test_a_command_ends_with_its_exit_handlers_run_and_its_output_flushed(tmp_path, thread):
    """Commands skip the interpreter's slow teardown of loaded modules (os._exit); what the
    normal exit does that matters must still happen: exit code, the console's last bytes,
    log files, exit handlers, temporary folders, and threads still working."""
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), *(["t"] if thread else [])],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline, still buffered"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "logged\n"
    assert not Path((tmp_path / "tempdir").read_text()).exists()
    assert (tmp_path / "thread").exists() == thread


def test_a_value_beginning_with_a_dash_belongs_to_the_flag_before_it():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--budget")
    parser.add_argument("--name")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("rest", nargs="*")
    args = parse_args(parser, ["--budget", "-5m", "--name", "-x", "--", "--name", "-y"])
    assert (args.budget, args.name, args.rest) == ("-5m", "-x", ["--name", "-y"])
    assert parse_args(parser, ["--budget=-1", "--resume"]).budget == "-1"
    with pytest.raises(SystemExit):  # a known flag is not a value: still a missing value
        parse_args(parser, ["--name", "--resume"])
    with pytest.raises(SystemExit):
        parse_args(parser, ["--name", "--budget=3"])
