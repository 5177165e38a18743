import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reinforce_cartpole.py"
sys.path.insert(0, str(ROOT))


def run_script(*args, timeout=300, **kwargs):
    """The real entry point, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=kwargs.pop("cwd", ROOT), **kwargs,
    )


@pytest.fixture
def run():
    return run_script
