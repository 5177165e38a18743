import contextlib
import csv
import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import imageio_ffmpeg
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reinforce_cartpole.py"
sys.path.insert(0, str(ROOT))
# As the script pins it when it runs, before torch loads: MKL's code path, for one run per seed on every x86-64 CPU.
# Tests compare the runs of main() in this process with those of the script in its own.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.", DeprecationWarning)  # torch's own modules call it as they import
    import reinforce_cartpole  # noqa: E402

# The tutorial's own seed, 543, solves CartPole-v0 in 748 episodes on x86-64 (about a minute on a 2-core
# machine). ARM machines take another path; 2000 episodes leave room for that and still end the run.
SOLVE_SEED = 543
SOLVE_MAX_EPISODES = 2000
PATIENCE = 120  # seconds that a process or an event may take at most: a loaded 2-core machine may take a while


def script_command(*args):
    return [sys.executable, str(SCRIPT), *map(str, args)]


def script_env(changes):
    """This environment with `changes`: a value sets a variable, None unsets it."""
    return {name: value for name, value in {**os.environ, **changes}.items() if value is not None}


def run_script(*args, timeout=300, env_changes=None):
    """The real entry point, as a user runs it."""
    return subprocess.run(script_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=script_env(env_changes or {}))


def start_script(*args, stdout=subprocess.PIPE, env_changes=None):
    """The real entry point in a process group of its own, as a terminal runs a command, without waiting for it."""
    return subprocess.Popen(script_command(*args), cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=script_env(env_changes or {}))


def lines_until(process, prefix):
    """The lines of process's stdout up to the first that starts with prefix."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return "".join(lines)
    raise AssertionError(f"no line starts with {prefix!r}: {''.join(lines)}{process.stderr.read()}")


def run_main(*args):
    """main() in this process, for a test that needs no process of its own: what run_script gives, without the cost
    of starting Python and importing torch again."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = reinforce_cartpole.main(list(map(str, args)))
    return subprocess.CompletedProcess(["main", *map(str, args)], status, out.getvalue(), err.getvalue())


def clip_folder(video_dir, seed=SOLVE_SEED, lr=0.01, gamma=0.99, env_id="CartPole-v0"):
    """The folder of a run's clips under --video-dir."""
    return Path(video_dir) / f"{env_id}-lr{lr:g}-gamma{gamma:g}-seed{seed}"


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
    """(episodes, mean, min, max) from the line that scores the trained agent."""
    match = re.search(r"^Trained agent, (\d+) episodes in eval mode: return ([\d.]+) ± [\d.]+ "
                      r"\(min ([\d.]+), max ([\d.]+)\)$", output, re.M)
    assert match, f"no line scores the trained agent: {output}"
    return int(match[1]), *map(float, match.groups()[1:])


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


# --- Runs shared by several tests, and the order that keeps both cores busy ---------------
# Under pytest-xdist a session fixture belongs to one worker process, so the tests that share a long run carry the
# same xdist_group mark: one worker runs them all, and trains the run once. Each worker trains the short reference
# sweep itself. The longest things come first: the train-until-solved run and the emulated CPU each keep a core busy
# while the other core runs the rest.
SOLVED_RUN, RECORDED_RUN = (pytest.mark.xdist_group(name) for name in ("solved_run", "recorded_run"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.filterwarnings(  # a mark, so that `-W default` does not bring it back
            "ignore:.*The environment CartPole-v0 is out of date"))  # gymnasium's, as the tests make the tutorial's env
    items.sort(key=lambda item: (xdist_group(item) != "solved_run", item.get_closest_marker("long") is None))


def xdist_group(item):
    mark = item.get_closest_marker("xdist_group")
    return mark and mark.args[0]


@pytest.fixture(scope="session")
def solved_run(tmp_path_factory):
    """(the finished process: its stdout, stderr and exit status; the folder of its outputs)."""
    out = tmp_path_factory.mktemp("solved-run")
    outputs = ("--history", out / "history.csv", "--plot", out / "curve.png", "--save-model", out / "policy.pt")
    result = run_script("--no-render", "--seed", SOLVE_SEED, "--max-episodes", SOLVE_MAX_EPISODES, *outputs,
                        timeout=600)
    return result, out


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory):
    """A 10-episode run with recording on (the default), through the real entry point: it and its clips' folder."""
    video_dir = tmp_path_factory.mktemp("recorded") / "video"
    result = run_script("--seed", 7, "--max-episodes", 10, "--log-interval", 1, "--video-dir", video_dir)
    return result, clip_folder(video_dir, seed=7)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A --save-model checkpoint of two episodes' training."""
    path = tmp_path_factory.mktemp("checkpoint") / "policy.pt"
    assert run_main("--no-render", "--max-episodes", 2, "--log-interval", 1, "--save-model", path).returncode == 1
    return path


# --- A small sweep, and what its runs leave -----------------------------------------------
# Two settings: 6 runs of 40 episodes, half a second or so each. Each sweep test compares its own way of running it,
# or of stopping and resuming it, with this sweep on 1 worker, in its own process.
SWEEP = ("--seeds", "0-2", "--lr", "0.01,0.02", "--max-episodes", 40)
RUNS = [(lr, "0.99", str(seed)) for lr in ("0.01", "0.02") for seed in range(3)]


def curves(path, seconds=False):
    """Each run's rows in a --history file, keyed by (lr, gamma, seed); with `seconds`, their times too."""
    runs = {}
    for row in history_rows(path):
        fields = ("episode", "length", "return", "running_reward", *(("seconds",) if seconds else ()))
        runs.setdefault((row["lr"], row["gamma"], row["seed"]), []).append(tuple(row[field] for field in fields))
    return runs


def progress_lines(output):
    return re.findall(r"^\[(\d+)/(\d+)\] lr (\S+), gamma (\S+), seed (\d+): (not )?solved in (\d+) episodes, "
                      r"trained agent \(eval mode\) ([\d.]+); about \d+ min \d+ s left$", output, re.M)


def runs_in(output):
    """The (lr, gamma, seed) of each progress line."""
    return [line[2:5] for line in progress_lines(output)]


def summary_start(lines):
    """The index of the summary table's header."""
    return next(i for i, line in enumerate(lines) if line.split()[:3] == ["lr", "gamma", "solved"])


def summary(output):
    """The summary table of SWEEP: its header and a row per setting."""
    lines = output.splitlines()
    start = summary_start(lines)
    return lines[start:start + 3]


def whole_summary(output):
    """All that a sweep prints after its last run but the files it wrote, which are each test's own: a partial one's
    label, the table, the line under it and the verdicts."""
    lines = output.splitlines()
    start = summary_start(lines)
    after = lines[start - lines[start - 1].startswith("Partial:"):]
    return [line for line in after if not line.startswith("Written: ")]


def sweep_outputs(folder):
    return "--history", folder / "history.csv", "--plot", folder / "runs.png"


@pytest.fixture(scope="session")
def reference_sweep(tmp_path_factory):
    """SWEEP on 1 worker: what main() printed and returned, its --history and its --plot."""
    folder = tmp_path_factory.mktemp("reference-sweep")
    result = run_main(*SWEEP, "--workers", 1, *sweep_outputs(folder))
    return result, folder / "history.csv", folder / "runs.png"


def assert_equals_the_reference(result, folder, reference_sweep):
    """A sweep that ended as the one on 1 worker: its status, its history (every row but `seconds`), its summary and
    its plot's bytes."""
    one, one_history, one_plot = reference_sweep
    assert result.returncode == one.returncode == 0, result.stderr
    assert curves(folder / "history.csv") == curves(one_history)
    assert whole_summary(result.stdout) == whole_summary(one.stdout)
    assert (folder / "runs.png").read_bytes() == one_plot.read_bytes()
