import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
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


def decoded_frames(path):
    """(ffmpeg's metadata, the number of frames that decode) of a video file."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


def episode_lines(output):
    return [line for line in output.splitlines() if line.startswith("Episode ")]
