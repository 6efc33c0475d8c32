"""The `beamjobs` command's own surface: usage errors exit 2, completion scripts, and no colour
when the output is not a terminal (no server is reached here)."""

from click.testing import CliRunner

from beamjobs.cli.main import cli


def test_a_usage_error_exits_with_2_and_says_why():
    result = CliRunner().invoke(cli, ["jobs", "list", "--state", "SLEEPING"])
    assert result.exit_code == 2
    assert "SLEEPING" in result.output


def test_completion_scripts_are_printed_for_each_shell():
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        result = CliRunner().invoke(cli, ["completion", shell])
        assert result.exit_code == 0
        assert "_BEAMJOBS_COMPLETE" in result.output and marker in result.output


def test_completion_offers_the_jobs_commands(monkeypatch):
    monkeypatch.setenv("_BEAMJOBS_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "beamjobs jobs ")
    monkeypatch.setenv("COMP_CWORD", "2")
    result = CliRunner().invoke(cli, [], prog_name="beamjobs")
    offered = {line.split(",")[-1] for line in result.output.splitlines()}
    assert {"list", "describe", "cancel", "drain", "logs", "metrics", "graph"} <= offered
