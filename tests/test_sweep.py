"""Many seeds in one command: every run of a sweep is the run that --seed trains alone, whatever the number of
workers, the layout of torchrun's nodes or the GPUs that torch reports, and so is the summary. Stops and faults give
the right line and status on every node: signals (during training and while the workers start), a closed pipe, a
write that fails on another node, a lost worker (killed, raising, or silent under torchrun), and a busy one that is
not. A stopped sweep resumes, with --resume or torchrun's restart, to end as one that never stopped."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import reinforce_cartpole as rc
from conftest import (PATIENCE, REFERENCE_SWEEP, ROOT, SCRIPT, decoded_frames, history_rows, leave_free, lines_until,
                      run_main, script_env, start_script, tensorboard_scalars, trained_agent_score)

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in Linux's /proc")

# A small sweep with two settings: 6 runs of 40 episodes, half a second or so each. Each test compares its own way of
# running it, or of stopping and resuming it, with this sweep on 1 worker, in this process.
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
                      r"trained agent ([\d.]+); about \d+ min \d+ s left$", output, re.M)


def runs_in(output):
    """The (lr, gamma, seed) of each progress line."""
    return [line[2:5] for line in progress_lines(output)]


def summary(output):
    """The summary table: its header and a row per setting."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["lr", "gamma", "solved"])
    return lines[start:]


@pytest.fixture(scope="session")
def reference_sweep(tmp_path_factory):
    """SWEEP on 1 worker: what main() printed and returned, its --history and its --plot."""
    folder = tmp_path_factory.mktemp("reference-sweep")
    result = run_main(*SWEEP, "--workers", 1, "--history", folder / "history.csv", "--plot", folder / "runs.png")
    return result, folder / "history.csv", folder / "runs.png"


@REFERENCE_SWEEP
def test_every_run_of_a_sweep_is_its_solo_run(reference_sweep, tmp_path):
    result, history, _ = reference_sweep
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Episode " not in result.stdout and "State:" not in result.stdout, "the tutorial's lines stay quiet"
    assert sorted(line[0] for line in progress_lines(result.stdout)) == ["1", "2", "3", "4", "5", "6"]
    assert sorted(curves(history)) == sorted(RUNS)
    for (lr, gamma, seed), (line,) in zip(RUNS, ([line for line in progress_lines(result.stdout)
                                                   if line[2:5] == run] for run in RUNS)):
        solo = tmp_path / f"lr{lr}-seed{seed}.csv"
        solo_run = run_main("--no-render", "--seed", seed, "--lr", lr, "--max-episodes", 40, "--history", solo)
        assert solo_run.returncode == 1, solo_run.stderr
        assert curves(solo) == {(lr, gamma, seed): curves(history)[(lr, gamma, seed)]}
        assert line[5:7] == ("not ", "40") and line[7] == f"{trained_agent_score(solo_run.stdout)[1]:.1f}"
    assert [line.split()[:3] for line in summary(result.stdout)[1:]] == [["0.01", "0.99", "0/3"],
                                                                         ["0.02", "0.99", "0/3"]]


def python_startup(folder, code):
    """An environment whose Python processes run `code` as they start (a sitecustomize module on PYTHONPATH)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


# As torch's CUDA build on a machine with one GPU: a device ordinal past the first fails, as it does there.
ONE_GPU = """
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
def set_device(device):
    if (device if isinstance(device, int) else torch.device(device).index or 0) >= 1:
        raise RuntimeError("CUDA error: invalid device ordinal")
torch.cuda.set_device = set_device
"""


@pytest.fixture
def one_gpu(tmp_path, monkeypatch):
    """torch reports one CUDA device, in this process and in every Python process that it starts."""
    for name, value in python_startup(tmp_path / "one-gpu", ONE_GPU).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@REFERENCE_SWEEP
def test_three_workers_where_torch_reports_one_gpu_equal_one_worker(reference_sweep, one_gpu, tmp_path, capfd):
    one, one_history, one_plot = reference_sweep
    history = tmp_path / "history.csv"
    three = run_main(*SWEEP, "--workers", 3, "--history", history, "--plot", tmp_path / "runs.png")
    assert three.returncode == 0 and three.stderr == "" and capfd.readouterr().err == "", "the others are quiet too"
    assert sorted(line[0] for line in progress_lines(three.stdout)) == ["1", "2", "3", "4", "5", "6"]
    assert curves(history) == curves(one_history)
    assert summary(three.stdout) == summary(one.stdout)
    assert (tmp_path / "runs.png").read_bytes() == one_plot.read_bytes()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(port, *node_args, nnodes=2, options=("--nproc-per-node", "1"), env_changes=None):
    """A torchrun per node on 127.0.0.1, as on as many machines, each in a process group of its own as a terminal runs
    a command; node_args[i] are node i's arguments to the script. OMP_NUM_THREADS is set, as torchrun prints a banner
    when it sets it itself."""
    env = script_env({"OMP_NUM_THREADS": "1", **(env_changes or {})})
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), *options,
                              "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                              str(SCRIPT), *map(str, args)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=env)
             for rank, args in enumerate(node_args)]


def worker_statuses(torchrun_stderr):
    """The exit statuses that torchrun reports of its workers that failed."""
    return [int(status) for status in re.findall(r"^\s*exitcode\s*: (-?\d+)", torchrun_stderr, re.M)]


def without_torchrun_exit_barrier_race(stderr):
    """torchrun's stderr without its agent's report of a known race (pytorch/pytorch#69520), which ends it: the agent
    of another node may still be in its exit barrier when the first node's agent, which hosts the store, exits. The
    report is c10's warning that the store's connection closed, with its C++ stack, then the agent's error and its
    traceback. The agent's status stays 0, and its workers have all exited before it."""
    lines = stderr.splitlines(keepends=True)
    error = r"E\d{4} [\d:.]+ +\d+ \S+/elastic/agent/server/api\.py:\d+\] Error waiting on exit barrier"
    race = next((i for i, line in enumerate(lines) if re.match(error, line)), None)
    if race is None:
        return stderr
    start = race
    c10_warning = r"\[W\d{4} .*TCPStore\.cpp:\d+\]|Exception raised from|frame #\d+:|\s*$"
    while start and re.match(c10_warning, lines[start - 1]):
        start -= 1
    return "".join(lines[:start])


@REFERENCE_SWEEP
@POSIX
def test_two_torchrun_nodes_of_two_workers_where_torch_reports_one_gpu_equal_one_worker(reference_sweep, one_gpu,
                                                                                        tmp_path):
    """Each node a torchrun of its own on 127.0.0.1, as on two machines; local rank 1 exists on each."""
    one, one_history, _ = reference_sweep
    nodes = torchrun(free_port(), *((*SWEEP, "--history", tmp_path / f"node{rank}.csv") for rank in (0, 1)),
                     options=("--nproc-per-node", "2"))
    (out0, err0), (out1, err1) = (node.communicate(timeout=PATIENCE * 3) for node in nodes)
    print(f"node 0's stderr:\n{err0}\nnode 1's stderr:\n{err1}")  # whole, where a failure shows it
    assert [node.returncode for node in nodes] == [0, 0]
    assert without_torchrun_exit_barrier_race(err0) == without_torchrun_exit_barrier_race(err1) == ""
    assert out1 == "" and not (tmp_path / "node1.csv").exists(), "the first node reports, the other is quiet"
    assert curves(tmp_path / "node0.csv") == curves(one_history)
    assert summary(out0) == summary(one.stdout)
    assert len(progress_lines(out0)) == 6


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_clip_that_another_node_cannot_write_fails_its_worker_and_the_sweep(small_disk, tmp_path):
    """Node 1's worker exits 3 of its own failure, without waiting on a store that node 0's agent may close first;
    the first worker hears of it in the goodbye, and the sweep's status is 3 too."""
    leave_free(small_disk, 0)
    nodes = torchrun(free_port(), ("--seeds", "0-3", "--max-episodes", 5),
                     ("--seeds", "0-3", "--max-episodes", 5, "--render", "--video-dir", small_disk))
    (out0, err0), (_, err1) = (node.communicate(timeout=PATIENCE * 3) for node in nodes)
    assert len(progress_lines(out0)) == 4 and "Stopped" not in out0, "every run finished"
    assert worker_statuses(err0) == worker_statuses(err1) == [3], (err0, err1)
    assert re.search(rf"^reinforce_cartpole\.py: cannot write {small_disk}/CartPole-v0-lr0\.01-gamma0\.99-seed\d/"
                     r"rl-video-episode-0\.mp4: No space left on device; no more clips are recorded$", err1, re.M)
    assert "lost" not in err0 + err1


@POSIX
@pytest.mark.parametrize("node", [0, 1])
def test_a_ctrl_c_on_either_torchrun_node_stops_the_sweep_for_its_reason(node, tmp_path):
    """A terminal's Ctrl-C reaches torchrun, which passes it on to its workers alone."""
    args = (*SWEEP, "--history", tmp_path / "history.csv")
    nodes = torchrun(free_port(), args, args)
    first_lines = lines_until(nodes[0], "[1/6]")
    os.killpg(nodes[node].pid, signal.SIGINT)
    (out0, err0), (out1, err1) = (process.communicate(timeout=PATIENCE) for process in nodes)
    assert_finished_runs_kept(first_lines, out0, tmp_path / "history.csv", "SIGINT")
    assert out1 == "" and "Stopped at once" not in out0
    # torchrun reports the status of the workers on the other node (the signalled one says it got the signal).
    assert worker_statuses((err0, err1)[1 - node]) == [130], (err0, err1)
    assert "reinforce_cartpole.py\", line" not in err0 + err1, "no traceback from the workers"


def process_environment(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry)


@REFERENCE_SWEEP
@LINUX
def test_a_restarted_torchrun_sweep_of_two_workers_resumes_where_it_stopped(reference_sweep, tmp_path):
    """torchrun --max-restarts starts the workers again, with the store of the first attempt: the runs finished then
    are not trained again, and the sweep ends as one that never stopped."""
    one, one_history, _ = reference_sweep
    history = tmp_path / "history.csv"
    [node] = torchrun(free_port(), (*SWEEP, "--history", history), nnodes=1,
                      options=("--nproc-per-node", "2", "--max-restarts", "1"))
    first_attempt = lines_until(node, "[1/6]")
    [first_worker] = [pid for pid, cmdline in children(node.pid)
                      if b"reinforce_cartpole.py" in cmdline and process_environment(pid)[b"RANK"] == b"0"]
    os.kill(first_worker, signal.SIGKILL)
    out, err = node.communicate(timeout=PATIENCE * 2)
    assert node.returncode == 0, err
    finished_before = int(re.search(r"^(\d) of 6 runs finished before, and are not trained again$", out, re.M)[1])
    assert 1 <= len(runs_in(first_attempt)) <= finished_before < 6
    assert len(runs_in(out)) == 6 - finished_before and not set(runs_in(out)) & set(runs_in(first_attempt))
    assert curves(history) == curves(one_history)
    assert summary(out) == summary(one.stdout)


def test_each_run_of_a_sweep_records_its_own_clips_and_tensorboard_run(tmp_path):
    history = tmp_path / "history.csv"
    result = run_main("--seeds", "0,1", "--workers", 1, "--max-episodes", 2, "--render", "--eval-episodes", 2,
                      "--video-dir", tmp_path / "video", "--tensorboard", tmp_path / "tb", "--history", history)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    folders = ["CartPole-v0-lr0.01-gamma0.99-seed0", "CartPole-v0-lr0.01-gamma0.99-seed1"]
    assert sorted(os.listdir(tmp_path / "tb")) == folders
    for seed in (0, 1):
        scalars = tensorboard_scalars(tmp_path / "tb" / folders[seed])
        rows = [row for row in history_rows(history) if row["seed"] == str(seed)]
        assert scalars["episode/return"] == [(int(row["episode"]), float(row["return"])) for row in rows]
        [(_, mean)] = scalars["trained_agent/mean_return"]
        assert f"seed {seed}: not solved in 2 episodes, trained agent {mean:.1f};" in result.stdout
    assert sorted(os.listdir(tmp_path / "video")) == folders
    assert f"such as {tmp_path / 'video' / folders[0]}" in result.stdout, "the sweep says where its clips go"
    for folder in os.listdir(tmp_path / "video"):
        names = sorted(os.listdir(tmp_path / "video" / folder))
        assert names == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4", "trained-agent-episode-0.mp4"]
        assert all(decoded_frames(tmp_path / "video" / folder / name)[1] > 0 for name in names)


def start_sweep(tmp_path, *args, workers=2):
    """SWEEP on `workers` workers in a process group of its own, as a terminal runs a command; returns once a run has
    finished, with what it printed so far."""
    child = start_script(*SWEEP, "--workers", workers, *sweep_outputs(tmp_path), *args)
    return child, lines_until(child, "[1/6]")


def sweep_outputs(tmp_path):
    return "--history", tmp_path / "history.csv", "--plot", tmp_path / "runs.png"


def assert_finished_runs_kept(before, after, history, cause, workers=2):
    """The partial summary counts the finished runs, and the history holds their every episode, row by row. The stop
    came after the lines `before`: each worker then finishes no more than the run that it may have finished unseen,
    and the one that it trains until it looks at the store (the stop reaches it there)."""
    out = before + after
    assert f"Stopped by {cause}: " in out
    done = int(re.search(r"^Stopped by .*: (\d+) of 6 runs finished$", out, re.M).group(1))
    assert 1 <= done <= len(progress_lines(before)) + 2 * (workers - 1) and len(progress_lines(out)) == done
    runs = curves(history)
    for _, _, lr, gamma, seed, _, episodes, _ in progress_lines(out):
        assert [int(row[0]) for row in runs[(lr, gamma, seed)]] == list(range(1, int(episodes) + 1))
    assert history.read_text().endswith("\n")


def assert_resumes_as_if_never_stopped(stopped_out, tmp_path, reference_sweep, workers):
    """The same command with --resume trains only the runs that did not finish, and ends with the history, summary,
    plot and exit status of the sweep on 1 worker that never stopped."""
    one, one_history, one_plot = reference_sweep
    finished = runs_in(stopped_out)
    kept = {run: rows for run, rows in curves(tmp_path / "history.csv", seconds=True).items() if run in finished}
    resumed = run_main(*SWEEP, "--workers", workers, *sweep_outputs(tmp_path), "--resume")
    assert resumed.returncode == one.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert f"{len(finished)} of 6 runs finished before, and are not trained again" in resumed.stdout
    assert sorted(runs_in(resumed.stdout)) == sorted(set(RUNS) - set(finished))
    assert curves(tmp_path / "history.csv") == curves(one_history)
    assert curves(tmp_path / "history.csv", seconds=True).items() >= kept.items(), "their rows as they were written"
    assert summary(resumed.stdout) == summary(one.stdout)
    assert (tmp_path / "runs.png").read_bytes() == one_plot.read_bytes()


@REFERENCE_SWEEP
@POSIX
def test_ctrl_c_stops_every_worker_keeps_the_finished_runs_and_resume_ends_the_sweep(reference_sweep, tmp_path):
    child, lines = start_sweep(tmp_path)
    os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every worker
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and err == "" and "Stopped at once" not in out, err
    assert_finished_runs_kept(lines, out, tmp_path / "history.csv", "SIGINT")
    assert_resumes_as_if_never_stopped(lines + out, tmp_path, reference_sweep, workers=2)


@POSIX
def test_sigterm_to_the_launcher_alone_stops_every_worker(tmp_path):
    child, lines = start_sweep(tmp_path)
    child.send_signal(signal.SIGTERM)  # as a process manager stops a command: its workers hear of it from it
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 143 and err == "", err
    assert_finished_runs_kept(lines, out, tmp_path / "history.csv", "SIGTERM")


def children(pid):
    """The processes whose parent is pid, oldest first (Linux's /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append((int(fields[19]), int(entry), f.read()))
        except (OSError, ValueError):  # not a process, or one that has ended meanwhile
            pass
    return [(child, cmdline) for _, child, cmdline in sorted(found)]


def spawned_workers(pid):
    return [child for child, cmdline in children(pid) if b"spawn_main" in cmdline]


@REFERENCE_SWEEP
@LINUX
def test_a_killed_worker_is_one_line_the_others_none_and_resume_ends_the_sweep(reference_sweep, tmp_path):
    child, lines = start_sweep(tmp_path, workers=3)
    worker = spawned_workers(child.pid)[0]  # the launcher is worker 0, and the first that it started worker 1
    os.kill(worker, signal.SIGKILL)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 4
    assert re.fullmatch(r"reinforce_cartpole\.py: worker 1 was lost \(ended by SIGKILL\)( while it trained "
                        r"lr 0\.0[12], gamma 0\.99, seed \d: that run is lost)?; the sweep stops\n", err), err
    assert_finished_runs_kept(lines, out, tmp_path / "history.csv", "a lost worker", workers=3)
    assert_resumes_as_if_never_stopped(lines + out, tmp_path, reference_sweep, workers=1)


# A Python process that starts with this fails, as a CUDA error does, when it makes its first env.
FAILING_ENV = """
import gymnasium
def make(*args, **kwargs):
    raise RuntimeError("CUDA error: invalid device ordinal\\nCUDA kernel errors might be asynchronously reported")
gymnasium.make = make
"""


def test_a_worker_that_raises_is_named_with_its_exception_and_run_in_one_line(tmp_path, monkeypatch, capfd):
    for name, value in python_startup(tmp_path / "failing", FAILING_ENV).items():  # the workers that this starts
        monkeypatch.setenv(name, value)
    result = run_main(*SWEEP, "--workers", 3, "--no-render")
    assert result.returncode == 4 and capfd.readouterr().err == "", "the worker prints nothing itself"
    assert re.fullmatch(r"reinforce_cartpole\.py: worker [12] was lost \(it raised RuntimeError: CUDA error: invalid "
                        r"device ordinal\) while it trained lr 0\.0[12], gamma 0\.99, seed \d: that run is lost; "
                        r"the sweep stops\n", result.stderr), result.stderr
    assert re.search(r"^Stopped by a lost worker: \d of 6 runs finished$", result.stdout, re.M)


@LINUX
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_workers_start_is_one_like_any_other(signum, tmp_path):
    child = start_script("--seeds", "0-3", "--workers", 2, "--max-episodes", 50, "--no-render")
    deadline = time.monotonic() + PATIENCE
    while not spawned_workers(child.pid):  # it imports torch for a second or more yet
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.005)
    os.killpg(child.pid, signum)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signum and err == "", err
    assert re.search(rf"^Stopped by {signum.name}: \d of 4 runs finished$", out, re.M), out


def test_a_closed_pipe_stops_the_sweep_quietly_and_keeps_the_finished_runs(tmp_path):
    # As `... --seeds 0-3 | head -1` does.
    history = tmp_path / "history.csv"
    child = start_script("--seeds", "0-3", "--workers", 2, "--max-episodes", 20, "--no-render", "--history", history,
                         "--plot", tmp_path / "runs.png")
    first = child.stdout.readline()
    child.stdout.close()
    assert child.wait(timeout=PATIENCE) == 141
    with child.stderr:
        assert child.stderr.read() == "", "quiet, as Unix tools are"
    [(lr, gamma, seed)] = runs_in(first)
    episodes = int(progress_lines(first)[0][6])
    assert [int(row[0]) for row in curves(history)[(lr, gamma, seed)]] == list(range(1, episodes + 1))
    assert (tmp_path / "runs.png").read_bytes().startswith(b"\x89PNG")


def test_under_torchrun_a_worker_that_stops_looking_is_lost_but_a_busy_one_never(monkeypatch, capsys):
    """Workers 1 and 2 each take a run and say nothing more. Worker 1 is busy with it: it looks at the store where it
    checks for a stop, as at every step. Worker 2 is gone."""
    monkeypatch.setattr(rc, "LOST_AFTER", 2)
    store = rc.dist.HashStore()
    args = rc.parse_args([*map(str, SWEEP), "--env-id", "CartPole-v0"])
    first, busy = (rc.SweepWorker(args, store, store, rank, 3, rc.Outcome()) for rank in (0, 1))
    first.heartbeats = busy.heartbeats = {}
    store.set("holds 1", "1")
    store.set("holds 2", "2")
    started = time.monotonic()
    while first.outcome.cause is None:
        assert time.monotonic() - started < PATIENCE, "worker 2 was never lost"
        busy.outcome.stopped()  # a step of its run
        first.poll()
        time.sleep(0.05)
    assert time.monotonic() - started > rc.LOST_AFTER and first.gone == {2}, "worker 1, busy, is not lost"
    assert first.outcome.cause is rc.Cause.LOST_WORKER and store.get("stop") == b"LOST_WORKER"
    assert capsys.readouterr().err == ("reinforce_cartpole.py: worker 2 was lost (silent for 2 s) while it trained lr "
                                       "0.01, gamma 0.99, seed 2: that run is lost; the sweep stops\n")


class StoreThatRemembers(rc.dist.HashStore):
    """A HashStore that remembers, for each key set, whether "stop" was set by then."""

    def __init__(self):
        super().__init__()
        self.stop_before = {}

    def set(self, key, value):
        self.stop_before[key] = self.check(["stop"])
        super().set(key, value)


def test_a_worker_tells_its_stop_before_its_goodbye():
    """A second signal may end the worker right after its goodbye: the first worker must know why it stopped by then.
    The signal comes after the worker's last look at the store, so that only the stop before the goodbye tells it."""
    outcome = rc.Outcome()
    outcome.signum, outcome.next_poll = signal.SIGINT, float("inf")
    store = StoreThatRemembers()
    store.set("ready", "")
    args = rc.parse_args([*map(str, SWEEP), "--env-id", "CartPole-v0"])
    assert rc.SweepWorker(args, store, store, 1, 2, outcome).take_part() == 130
    assert store.stop_before["bye 1"] and store.get("stop") == b"SIGINT"
    assert not store.check(["holds 1"]), "it took no run"


def test_a_median_that_the_runs_only_bound_from_below_is_shown_as_that_bound():
    """Of 244, 345, >600 and >600 episodes the median is above (345 + 600) / 2, which is all that the runs show."""
    runs = [rc.Run(0.01, 0.99, seed) for seed in range(4)]
    results = {i: {"episodes": episodes, "solved": episodes < 600, "score": 200.0}
               for i, episodes in enumerate((244, 345, 600, 600))}
    [_, line] = rc.summary_lines(runs, results, 600)
    assert line.split()[2:] == ["2/4", ">472.5", "[244,", ">600]", "244", "to", ">600", "200.0"], line
    results[3] = {"episodes": 500, "solved": True, "score": 200.0}
    assert rc.summary_lines(runs, results, 600)[1].split()[3] == "422.5", "244, 345, 500, >600: exact"


def test_the_time_left_reads_as_minutes_and_seconds():
    assert rc.time_left(100) == "about 1 min 40 s left"
    assert rc.time_left(59.6) == "about 1 min 00 s left"
    assert rc.time_left(0) == "about 0 min 00 s left"


def resume_with(tmp_path, reference_sweep, *args, tamper=lambda record: record):
    """--resume of a copy of the reference's --history and its record, with `args` changed, and the record's lines
    (settings, then a run each) changed by `tamper`."""
    _, one_history, _ = reference_sweep
    history = tmp_path / "history.csv"
    history.write_text(one_history.read_text())
    with open(rc.record_path(one_history)) as f:
        record = tamper([json.loads(line) for line in f])
    with open(rc.record_path(history), "w") as f:
        f.write("".join(json.dumps(line) + "\n" for line in record))
    return run_main(*SWEEP, "--history", history, "--plot", tmp_path / "new" / "runs.png", "--resume", *args)


def add_a_run(record):
    return [*record, {**record[1], "gamma": 0.9}]


def cut_short(record):
    return [*record[:-1], "not a run"]


@REFERENCE_SWEEP
@pytest.mark.parametrize("args,tamper,words", [
    (("--max-episodes", 50), None, "the runs in {record} had --max-episodes 40, not 50"),
    (("--eval-episodes", 5), None, "the runs in {record} had --eval-episodes 10, not 5"),
    (("--env-id", "Acrobot-v1"), None, "the runs in {record} had --env-id CartPole-v0, not Acrobot-v1"),
    (("--lr", "0.01"), None, "{record} has a run that this sweep does not: lr 0.02, gamma 0.99, seed 0"),
    ((), add_a_run, "{record} has a run that this sweep does not: lr 0.01, gamma 0.9, seed 0"),
    ((), cut_short, "{record} is not the record of a sweep's runs"),
], ids=["max-episodes", "eval-episodes", "env", "lr", "gamma", "not a record"])
def test_resume_refuses_runs_of_other_settings_and_creates_nothing(reference_sweep, tmp_path, args, tamper, words):
    result = resume_with(tmp_path, reference_sweep, *args, **({"tamper": tamper} if tamper else {}))
    expected = words.format(record=rc.record_path(tmp_path / "history.csv"))
    assert (result.returncode, result.stderr) == (2, f"reinforce_cartpole.py: error: --resume: {expected}\n")
    assert result.stdout == "" and not (tmp_path / "new").exists()
    assert (tmp_path / "history.csv").read_text() == reference_sweep[1].read_text()


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    result = run_main(*SWEEP, "--history", tmp_path / "history.csv", "--resume")
    assert (result.returncode, result.stderr) == (2, f"reinforce_cartpole.py: error: --resume: cannot read "
                                                     f"{tmp_path / 'history.csv.jsonl'} (No such file or directory): "
                                                     f"no run of this sweep finished\n")
    assert os.listdir(tmp_path) == []
