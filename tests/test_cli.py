"""Tests of agc_core.cli: subcommands are registered, user errors become one line, exit 2."""

from __future__ import annotations

import pytest

from agc_core.cli import build_parser, main


def test_all_subcommands_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"generate", "run", "train", "bench"} <= set(sub.choices)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_user_error_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    rc = main(["-q", "run", "--fileset", str(missing), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(missing) in err[0] and "Traceback" not in err[0]


def test_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "analysis.yaml"
    bad.write_text("luminosity_pb: [\n")
    rc = main(["-q", "run", "--config", str(bad), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(bad) in err[0]


@pytest.mark.parametrize("command", ["generate", "run", "train", "bench"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_main_module_exits_with_the_code_and_all_output(tmp_path):
    """``python -m agc_core`` skips the interpreter's teardown (agc_core.__main__.exit_now)
    but not the exit code or the flushed output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "agc_core", "run", "--fileset",
                           str(tmp_path / "none.json"), "--output-dir", str(tmp_path / "o")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("fileset file not found")
    assert not list((tmp_path / "o").glob(".warmup*"))


def test_a_known_command_builds_only_its_parser():
    """``python -m agc_core run`` does not import the other stages' modules for its parser."""
    import subprocess
    import sys

    code = ("import sys; from agc_core.cli import build_parser; p = build_parser('run'); "
            "sub = next(a for a in p._actions if a.dest == 'command'); "
            "print(sorted(sub.choices), [m for m in ('agc_core.inference', 'agc_core.bench', "
            "'agc_core.models.train') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "['run'] []"
