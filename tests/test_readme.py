"""The README stays true: its two commands, its settings table."""

import re

from conftest import REPO

from petdream.settings import Settings

README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", README.split("## ")[0])


def test_readme_opens_with_exactly_two_commands():
    install_and_run, install_and_test = readme_commands()
    assert install_and_run.endswith("python app.py")
    assert install_and_test.endswith(" tests") and "-m pytest" in install_and_test


def test_ci_runs_the_readmes_test_command():
    test_command = readme_commands()[1]
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_settings_table_lists_every_variable():
    for variable in Settings.ENV_VARS:
        assert f"| `{variable}` |" in README
