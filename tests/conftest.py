import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import imageio_ffmpeg
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reinforce_cartpole.py"
sys.path.insert(0, str(ROOT))
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.", DeprecationWarning)  # torch's own modules call it as they import
    import reinforce_cartpole  # noqa: E402, F401  (pins MKL's branch in this process before any test runs torch)

# The tutorial's own seed, 543, solves CartPole-v0 in 748 episodes on x86-64 (about a minute on a 2-core
# machine). ARM machines take another path; 2000 episodes leave room for that and still end the run.
SOLVE_SEED = 543
SOLVE_MAX_EPISODES = 2000


def script_command(*args):
    return [sys.executable, str(SCRIPT), *map(str, args)]


def script_env(changes):
    """This environment with `changes`: a value sets a variable, None unsets it."""
    return {name: value for name, value in {**os.environ, **changes}.items() if value is not None}


def run_script(*args, timeout=300, env_changes=None):
    """The real entry point, as a user runs it."""
    return subprocess.run(script_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=script_env(env_changes or {}))


def history_rows(path):
    """The rows of a --history CSV, as dicts keyed by its header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def decoded_frames(path):
    """(ffmpeg's metadata, the number of frames that decode) of a video file."""
    with warnings.catch_warnings():
        # imageio-ffmpeg leaves the pipes of an ffmpeg that has finished for the garbage collector to close.
        warnings.simplefilter("ignore", ResourceWarning)
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        frames = sum(1 for _ in reader)
        del reader
    return meta, frames


def trained_agent_score(output):
    """(episodes, mean, min, max) from the line that scores the trained agent, or None."""
    match = re.search(r"^Trained agent, (\d+) episodes in eval mode: return ([\d.]+) ± [\d.]+ "
                      r"\(min ([\d.]+), max ([\d.]+)\)$", output, re.M)
    return match and (int(match[1]), *map(float, match.groups()[1:]))


def tensorboard_scalars(folder):
    """{tag: [(step, value), ...]} of a TensorBoard run, read with tensorboard's event-processing API."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def episode_lines(output):
    return [line for line in output.splitlines() if line.startswith("Episode ")]


# --- A small disk that fills (Linux, as root) ----------------------------------------
PAGE = 4096  # tmpfs counts whole pages


@pytest.fixture
def small_disk(tmp_path):
    """A filesystem of 4 pages that the test fills as it needs."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={4 * PAGE}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def leave_free(disk, pages):
    """Fills the disk but for `pages` pages."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - pages * PAGE))
    assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize == pages * PAGE


# --- One train-until-solved run, shared by the tests that read what it leaves --------------
# It is the longest thing the suite does, so it starts in the background as soon as the tests
# are collected, and the tests that need it run last.

SOLVED_RUN = pytest.StashKey()


def pytest_collection_modifyitems(config, items):
    for item in items:  # a mark, so that `-W default` does not bring it back
        item.add_marker(pytest.mark.filterwarnings(
            "ignore:.*The environment CartPole-v0 is out of date"))  # gymnasium's, as the tests make the tutorial's env
    needing = [item for item in items if "solved_run" in item.fixturenames]
    if needing:
        out = Path(tempfile.mkdtemp(prefix="solved-run-"))
        command = script_command("--no-render", "--seed", SOLVE_SEED, "--max-episodes", SOLVE_MAX_EPISODES,
                                 "--save-model", out / "policy.pt", "--history", out / "history.csv",
                                 "--plot", out / "curve.png")
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        config.stash[SOLVED_RUN] = process, out
        items[:] = [item for item in items if item not in needing] + needing


def pytest_unconfigure(config):
    if SOLVED_RUN in config.stash:
        process, out = config.stash[SOLVED_RUN]
        if process.poll() is None:  # the tests that needed it did not run
            process.kill()
            process.communicate()
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def solved_run(pytestconfig):
    """(the finished process's stdout, stderr and exit status; the folder of its outputs)."""
    process, out = pytestconfig.stash[SOLVED_RUN]
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), out


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory):
    """A 10-episode run with recording on (the default), through the real entry point."""
    video_dir = tmp_path_factory.mktemp("recorded") / "clips"
    return run_script("--seed", 7, "--max-episodes", 10, "--log-interval", 1, "--video-dir", video_dir), video_dir
