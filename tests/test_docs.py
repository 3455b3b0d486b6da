"""README stays true: every config option is documented and CI runs README's test command."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GROUPS = ["model", "data", "task", "trainer", "logger", "callbacks", "experiment", "hparams_search",
          "task/optimizer", "task/scheduler"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_option_is_in_the_readme(group):
    names = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert names
    missing = [n for n in names if f"`{n}`" not in README and f"{n}|" not in README and f"|{n}`" not in README]
    assert not missing, f"conf/{group} options not documented in README.md: {missing}"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("python train.py")
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[1] in ci.splitlines()
