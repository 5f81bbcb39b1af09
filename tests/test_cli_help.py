"""Help text on every command and argument, and shell completion scripts generated from the same parser.

The completion scripts are run by the real shells: bash always, zsh and fish when they are installed
(skipped with a reason otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_helpers import cli
from connector import cli as cli_module
from connector.completion import SHELLS, commands

PROG = "tiktok-connector"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli_module._parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


SUBCOMMANDS = _subcommands()
COMMANDS = commands(cli_module._parser())  # [top level, *subcommands], as completion sees them


def test_completion_sees_every_subcommand() -> None:
    assert [c.name for c in COMMANDS] == ["", *SUBCOMMANDS]
    assert {"init", "sync", "demo", "completion"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_help_describes_it_and_every_argument(capsys, name: str) -> None:
    code, out, err = cli(capsys, name, "--help")
    assert code == 0, err
    parser = SUBCOMMANDS[name]
    assert parser.description and parser.description.strip(), f"{name} has no description"
    assert " ".join(parser.description.split()) in " ".join(out.split())
    for action in parser._actions:
        label = "/".join(action.option_strings) or action.metavar or action.dest
        assert action.help and action.help.strip(), f"{name} {label} has no help text"
        assert " ".join(action.help.split()[:4]) in " ".join(out.split()), (name, label)


def test_top_level_help_has_every_option_described(capsys) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    parser = cli_module._parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings or action.dest
    for name in SUBCOMMANDS:
        assert name in out


def test_version_names_the_distribution_and_the_package_folder(capsys) -> None:
    from importlib.metadata import version
    code, out, _ = cli(capsys, "--version")
    package = Path(cli_module.__file__).resolve().parent
    assert code == 0
    assert out.strip() == f"{PROG} {version(PROG)} (distribution {PROG}, package at {package})"


# ---------------------------------------------------------------- completion scripts

def _script(capsys, shell: str) -> str:
    code, out, err = cli(capsys, "completion", shell)
    assert code == 0 and err == ""
    return out


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_script_names_every_subcommand_and_option(capsys, shell: str) -> None:
    script = _script(capsys, shell)
    for command in COMMANDS:
        assert command.name in script
        for option in command.options:
            for flag in option.flags:
                # fish spells flags as `-l name` / `-s n`, the other shells as written.
                spelled = (f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}") if shell == "fish" \
                    else flag
                assert spelled in script, (shell, command.name, flag)
            for choice in option.choices:
                assert choice in script, (shell, command.name, choice)


def test_completion_refuses_an_unknown_shell(capsys) -> None:
    code, _, err = cli(capsys, "completion", "powershell")
    assert code == 2 and "invalid choice" in err


def _bash_completions(script: str, lines: list[list[str]]) -> list[list[str]]:
    """COMPREPLY for each command line (the last word is the one being completed), in one bash."""
    driver = [script,
              't() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); '
              f'{"_tiktok_connector"}; printf "%s\\n" "${{COMPREPLY[*]}}"; }}']
    for words in lines:
        driver.append("t " + " ".join("'" + w.replace("'", "'\\''") + "'" for w in words))
    done = subprocess.run(["bash", "--norc", "--noprofile"], input="\n".join(driver) + "\n", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split("\n")[:len(lines)]
    return [line.split() for line in out]


def test_bash_completes_every_prefix_of_every_command_and_option(capsys) -> None:
    """Every prefix of every subcommand completes to exactly the subcommands it starts; every prefix of
    every option of every subcommand (after the subcommand and after a NAME) to exactly its options."""
    script = _script(capsys, "bash")
    top, subcommands = COMMANDS[0], COMMANDS[1:]
    names = [c.name for c in subcommands]
    lines, expected = [], []
    for name in names:
        for end in range(len(name) + 1):
            prefix = name[:end]
            lines.append([PROG, prefix])
            expected.append(sorted(n for n in names if n.startswith(prefix)))
            lines.append([PROG, "--project", "somewhere", "-v", prefix])  # options before the command
            expected.append(expected[-1])
    for command in subcommands:
        flags = [flag for option in command.options for flag in option.flags]
        for flag in flags:
            for end in range(1, len(flag) + 1):
                prefix = flag[:end]
                lines.append([PROG, command.name, "x", prefix])
                expected.append(sorted(f for f in flags if f.startswith(prefix)))
    top_flags = [flag for option in top.options for flag in option.flags]
    for flag in top_flags:
        lines.append([PROG, flag[:2]])
        expected.append(sorted(f for f in top_flags if f.startswith(flag[:2])))
    got = _bash_completions(script, lines)
    assert [sorted(g) for g in got] == expected


def test_bash_completes_option_values(capsys, tmp_path: Path) -> None:
    (tmp_path / "projects").mkdir()
    (tmp_path / "rejects.csv").write_text("")
    script = _script(capsys, "bash")
    got = _bash_completions(script, [
        [PROG, "--log-format", ""],
        [PROG, "rejects", "purchases", "--reason", "event_t"],
        [PROG, "completion", ""],
        [PROG, "sync", "--project", str(tmp_path / "pro")],
        [PROG, "rejects", "purchases", "--export", str(tmp_path / "rej")],
        [PROG, "init", str(tmp_path / "p")],
    ])
    assert got == [["text", "json"], ["event_too_old"], list(SHELLS), [str(tmp_path / "projects")],
                   [str(tmp_path / "rejects.csv")], [str(tmp_path / "projects")]]


def _require(shell: str) -> str:
    path = shutil.which(shell)
    if not path:
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")
    return path


def test_zsh_script_is_valid_zsh(capsys, tmp_path: Path) -> None:
    zsh = _require("zsh")
    script = tmp_path / "_tiktok-connector"
    script.write_text(_script(capsys, "zsh"))
    done = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # Sourced after compinit, it registers itself for the command.
    done = subprocess.run([zsh, "-f", "-c", f"autoload -U compinit; compinit -u -d {tmp_path}/zcd; "
                           f"source {script}; print -r -- $_comps[{PROG}]"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "_tiktok_connector", done.stderr


def test_fish_completes_commands_options_and_values(capsys, tmp_path: Path) -> None:
    fish = _require("fish")
    script = tmp_path / "tiktok-connector.fish"
    script.write_text(_script(capsys, "fish"))

    def complete(line: str) -> list[str]:
        done = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return sorted(row.split("\t")[0] for row in done.stdout.splitlines())

    assert complete(f"{PROG} re") == ["rejects", "reset", "retry"]
    assert complete(f"{PROG} sync --d") == ["--dry-run"]
    assert complete(f"{PROG} --log-format ") == ["json", "text"]
    assert complete(f"{PROG} rejects x --reason no_") == ["no_match_keys"]
    assert complete(f"{PROG} completion ") == sorted(SHELLS)
