"""README's CLI reference stays true: every command and option of `ibau` is documented there."""
from pathlib import Path

import typer

from ibau.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_command_and_option_is_in_the_readme():
    group = typer.main.get_command(app)
    checked = 0
    assert "--debug" in README
    for name, cmd in group.commands.items():
        assert f"ibau {name}" in README, name
        for param in cmd.params:
            if type(param).__name__.endswith("Option"):  # typer vendors click in recent releases
                assert any(opt in README for opt in param.opts), (name, param.opts)
            checked += 1
    assert checked >= 7
