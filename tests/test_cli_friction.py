"""What a new user met first: the help text, option names, --debug's place, where reports went,
where the Triton venv is looked for, and what the README's commands leave in a clone."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.cli.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]


def _help(command: str) -> str:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_what_options_take_and_shows_examples(command):
    text = _help(command)
    assert "<bool>" not in text and "list[" not in text, text
    assert "Examples" in text
    for line in EXAMPLES[command]:
        assert line in " ".join(text.split()), f"{command} --help lacks the example {line!r}"


def test_repeatable_options_show_one_element():
    text = _help("verify")
    row = next(line for line in text.splitlines() if "--artifact " in line and "-a" in line)
    assert "<path>" in row, row


@pytest.mark.parametrize("command", COMMANDS)
def test_every_example_parses_with_the_commands_own_parser(command):
    """Examples are checked, not just printed: a renamed or removed option fails here."""
    cmd = GROUP.commands[command]  # type: ignore[attr-defined]
    for line in EXAMPLES[command]:
        words = shlex.split(line)
        assert words[:2] == ["policy-export", command], line
        with cmd.make_context(command, words[2:]) as ctx:  # raises a UsageError on a bad example
            assert ctx.params is not None


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    missing = str(tmp_path / "missing")
    plain = runner.invoke(app, ["inspect", "--checkpoint", missing])
    assert plain.exit_code == 2 and plain.output.count("\n") == 1, plain.output
    after = runner.invoke(app, ["inspect", "--checkpoint", missing, "--debug"])
    before = runner.invoke(app, ["--debug", "inspect", "--checkpoint", missing])
    for res in (after, before):  # --debug lets the error's traceback through
        assert res.exception is not None and type(res.exception).__name__ == "BadInputError", res.output
    # and the next command without it is one line again
    again = runner.invoke(app, ["inspect", "--checkpoint", missing])
    assert again.exit_code == 2 and again.output.count("\n") == 1, again.output


def test_one_name_per_thing_with_the_old_names_kept_hidden(tmp_path):
    assert "--model" in _help("triton-repo") and "--name" not in _help("triton-repo")
    assert "--triton-url" in _help("bench-fleet") and "--url " not in _help("bench-fleet")
    for option in ("--model", "--name"):  # both spellings reach the same check, which names the canonical one
        res = runner.invoke(
            app, ["triton-repo", "-a", str(tmp_path / "x.onnx"), "--repo", str(tmp_path), option, "a/b"]
        )
        assert res.exit_code == 2 and "--model 'a/b'" in res.output, res.output
    for args in (["--triton-url", " "], ["--url", " "], ["--url= "]):
        res = runner.invoke(app, ["bench-fleet", "--model", "act", *args])
        assert res.exit_code == 2 and res.output.startswith("error: --triton-url"), res.output


def test_verify_prints_where_it_wrote_its_reports(small_ckpt, small_onnx, tmp_path):
    report, junit = tmp_path / "parity.json", tmp_path / "parity.xml"
    args = ["verify", "-c", str(small_ckpt), "-a", str(small_onnx), "--batch-sizes", "1", "--samples", "1"]
    res = runner.invoke(app, [*args, "--report", str(report), "--junit", str(junit)], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert f"wrote {report} (JSON report)" in res.output and f"wrote {junit} (JUnit report)" in res.output
    assert json.loads(report.read_text())["status"] == "passed" and junit.is_file()


def test_triton_venv_search_order(tmp_path, monkeypatch):
    from policy_export.triton import install

    monkeypatch.delenv(install.VENV_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    candidates = install.venv_candidates()
    assert candidates[0] == tmp_path / ".venv-triton"
    assert (ROOT / ".venv-triton").absolute() in candidates  # the project's folder, wherever the cwd is
    fake = tmp_path / ".venv-triton" / "bin"
    fake.mkdir(parents=True)
    (fake / "python").write_text("")
    assert install.default_venv() == tmp_path / ".venv-triton"  # the current folder comes first
    monkeypatch.setenv(install.VENV_ENV, str(tmp_path / "elsewhere"))
    assert install.venv_candidates() == [tmp_path / "elsewhere"]  # the variable, when set, is the only place


@pytest.mark.skipif(
    not (ROOT / ".venv-triton" / "bin" / "python").exists(), reason="no .venv-triton (make triton-venv)"
)
def test_serve_finds_the_projects_triton_venv_from_another_folder(tmp_path, monkeypatch):
    """Run outside the clone, ``serve`` gets past the venv lookup to the repository check."""
    from policy_export.triton import install

    monkeypatch.delenv(install.VENV_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["serve", "--repo", str(tmp_path / "no-repo")])
    assert res.exit_code == 2 and "model repository folder does not exist" in res.output, res.output


OUTPUT_OPTIONS = ("--output", "-o", "--out-dir", "--report", "--junit", "--json", "--plot", "--repo", "--timing-cache")


def _readme_commands() -> list[list[str]]:
    """Every ``policy-export`` command line in the README's code blocks and the help examples."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += [line for examples in EXAMPLES.values() for line in examples]
    commands = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("policy-export "):
            commands.append(shlex.split(line.replace("[", " ").replace("]", " ")))
    return commands


def _outputs(words: list[str]) -> set[str]:
    found = set()
    for option, value in itertools.pairwise(words):
        # An object-storage URL is not a file in the clone (s3://bucket/prefix).
        if option in OUTPUT_OPTIONS and not value.startswith("-") and value.upper() != value and "://" not in value:
            found.add(value + "/" if option in ("--out-dir", "--repo") else value)  # folders: as git sees them
    return found


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_what_the_readme_commands_write_is_git_ignored():
    outputs = set().union(*(_outputs(words) for words in _readme_commands()))
    assert {"parity.json", "model_repository/", "policy.pt", "artifacts/"} <= outputs, outputs
    # check-ignore --no-index: as for a new file, even where one of these names happens to be tracked
    res = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--verbose", "--non-matching", *sorted(outputs)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    not_ignored = [line.split("\t", 1)[1] for line in res.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, f"README/help commands write files git would offer to commit: {not_ignored}"
