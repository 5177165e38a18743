"""Many seeds in one command: every run of a sweep is the run that --seed trains alone, whatever the number of
workers or the layout of torchrun's nodes, and so is the summary. Stops and faults give the right line and status on
every node: signals (during training and while the workers start), a closed pipe, a write that fails on another node,
a lost worker, a busy one that is not, and torchrun's restarts. The outputs of each run."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

import reinforce_cartpole as rc
from conftest import (ROOT, SCRIPT, decoded_frames, history_rows, leave_free, run_main, script_command, script_env,
                      tensorboard_scalars)

PATIENCE = 120  # seconds: a loaded 2-core machine may take a while
# A sweep that a test stops: 6 runs of 60 episodes, half a second or so each, so that the stop comes after the first
# run and before the last.
STOPPED = ("--seeds", "0-5", "--max-episodes", 60)
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")


def curves(path, **match):
    """Each run's (episode, length, return, running reward) in a --history file, keyed by (lr, gamma, seed)."""
    runs = {}
    for row in history_rows(path):
        if all(row[key] == str(value) for key, value in match.items()):
            run = runs.setdefault((row["lr"], row["gamma"], row["seed"]), [])
            run.append((row["episode"], row["length"], row["return"], row["running_reward"]))
    return runs


def progress_lines(output):
    return re.findall(r"^\[(\d+)/(\d+)\] lr (\S+), gamma (\S+), seed (\d+): (not )?solved in (\d+) episodes, "
                      r"trained agent ([\d.]+); about \d+ min \d+ s left$", output, re.M)


def summary(output):
    """The summary table: its header and a row per setting."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["lr", "gamma", "solved"])
    return lines[start:]


# A small sweep with two settings: 6 runs of 40 episodes. Each test compares its own way of running it with this
# sweep on 1 worker, in this process.
SWEEP = ("--seeds", "0-2", "--lr", "0.01,0.02", "--max-episodes", 40)


@pytest.fixture(scope="session")
def reference_sweep(tmp_path_factory):
    """SWEEP on 1 worker: what main() printed and returned, and its --history."""
    history = tmp_path_factory.mktemp("reference-sweep") / "history.csv"
    return run_main(*SWEEP, "--workers", 1, "--history", history), history


def test_every_run_of_a_sweep_is_its_solo_run(reference_sweep, tmp_path):
    result, history = reference_sweep
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Episode " not in result.stdout and "State:" not in result.stdout, "the tutorial's lines stay quiet"
    assert sorted(line[0] for line in progress_lines(result.stdout)) == ["1", "2", "3", "4", "5", "6"]
    assert len(curves(history)) == 6 and len(curves(history, lr=0.02)) == 3
    assert [line.split()[:3] for line in summary(result.stdout)[1:]] == [["0.01", "0.99", "0/3"],
                                                                         ["0.02", "0.99", "0/3"]]
    for lr, seed in ((0.01, 0), (0.02, 2)):
        solo = tmp_path / f"lr{lr}-seed{seed}.csv"
        solo_run = run_main("--no-render", "--seed", seed, "--lr", lr, "--max-episodes", 40, "--history", solo)
        assert solo_run.returncode == 1, solo_run.stderr
        assert curves(history, lr=lr, seed=seed) == curves(solo)
        assert f"lr {lr}, gamma 0.99, seed {seed}: not solved in 40 episodes" in result.stdout


def test_two_workers_equal_one_worker(reference_sweep, tmp_path, capfd):
    one, one_history = reference_sweep
    history = tmp_path / "history.csv"
    two = run_main(*SWEEP, "--workers", 2, "--history", history, "--plot", tmp_path / "runs.png")
    assert two.returncode == 0 and two.stderr == "" and capfd.readouterr().err == "", "the spawned worker is quiet too"
    assert sorted(line[0] for line in progress_lines(two.stdout)) == ["1", "2", "3", "4", "5", "6"]
    assert curves(history) == curves(one_history)
    assert summary(two.stdout) == summary(one.stdout)
    with Image.open(tmp_path / "runs.png") as image:
        assert image.format == "PNG" and image.size == (800, 450)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(port, *node_args, nnodes=2, options=("--nproc-per-node", "1")):
    """A torchrun per node on 127.0.0.1, as on as many machines, each in a process group of its own as a terminal runs
    a command; node_args[i] are node i's arguments to the script."""
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), *options,
                              "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                              str(SCRIPT), *map(str, args)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
             for rank, args in enumerate(node_args)]


def worker_statuses(torchrun_stderr):
    """The exit statuses that torchrun reports of its workers that failed."""
    return [int(status) for status in re.findall(r"^\s*exitcode\s*: (-?\d+)", torchrun_stderr, re.M)]


def lines_until(process, prefix):
    """The lines of process's stdout up to the first that starts with prefix."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError("".join(lines) + process.stderr.read())


def without_torchrun_exit_barrier_race(stderr):
    """torchrun's stderr without its own report of a known race (pytorch/pytorch#69520): the agent of another node
    may still be in its exit barrier when the first node's agent, which hosts the store, exits. Its status stays 0."""
    race = re.search(r"^(E\d{4} [\d:.]+ +\d+ \S+/elastic/agent/server/api\.py:\d+\] )Error waiting on exit barrier",
                     stderr, re.M)
    return "".join(line for line in stderr.splitlines(keepends=True) if not (race and line.startswith(race[1])))


@POSIX
def test_two_torchrun_nodes_equal_one_worker(reference_sweep, tmp_path):
    """Two nodes of one process each, on 127.0.0.1: each a torchrun of its own, as on two machines."""
    one, one_history = reference_sweep
    nodes = torchrun(free_port(), *((*SWEEP, "--history", tmp_path / f"node{rank}.csv") for rank in (0, 1)))
    (out0, err0), (out1, err1) = (node.communicate(timeout=PATIENCE * 3) for node in nodes)
    assert [node.returncode for node in nodes] == [0, 0], (err0, err1)
    assert without_torchrun_exit_barrier_race(err0) == without_torchrun_exit_barrier_race(err1) == "", (err0, err1)
    assert out1 == "" and not (tmp_path / "node1.csv").exists(), "the first node reports, the other is quiet"
    assert curves(tmp_path / "node0.csv") == curves(one_history)
    assert summary(out0) == summary(one.stdout)
    assert len(progress_lines(out0)) == 6


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_clip_that_another_node_cannot_write_is_the_sweeps_status_on_every_node(small_disk, tmp_path):
    leave_free(small_disk, 0)
    nodes = torchrun(free_port(), ("--seeds", "0-3", "--max-episodes", 5),
                     ("--seeds", "0-3", "--max-episodes", 5, "--render", "--video-dir", small_disk))
    (out0, err0), (_, err1) = (node.communicate(timeout=PATIENCE * 3) for node in nodes)
    assert len(progress_lines(out0)) == 4 and "Stopped" not in out0, "every run finished"
    assert worker_statuses(err0) == worker_statuses(err1) == [3], (err0, err1)
    assert re.search(rf"^reinforce_cartpole\.py: cannot write {small_disk}/lr0\.01-gamma0\.99-seed\d/"
                     r"rl-video-episode-0\.mp4: No space left on device; no more clips are recorded$", err1, re.M)


@POSIX
@pytest.mark.parametrize("node", [0, 1])
def test_a_ctrl_c_on_either_torchrun_node_stops_the_sweep_for_its_reason(node, tmp_path):
    """A terminal's Ctrl-C reaches torchrun, which passes it on to its workers alone."""
    args = (*STOPPED, "--history", tmp_path / "history.csv")
    nodes = torchrun(free_port(), args, args)
    lines = lines_until(nodes[0], "[1/6]")
    os.killpg(nodes[node].pid, signal.SIGINT)
    (out0, err0), (out1, err1) = (process.communicate(timeout=PATIENCE) for process in nodes)
    assert_finished_runs_kept("".join(lines) + out0, tmp_path / "history.csv", "SIGINT")
    assert out1 == "" and "Stopped at once" not in out0
    # torchrun reports the status of the workers on the other node (the signalled one says it got the signal).
    assert worker_statuses((err0, err1)[1 - node]) == [130], (err0, err1)
    assert "reinforce_cartpole.py\", line" not in err0 + err1, "no traceback from the workers"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker in Linux's /proc")
def test_a_restarted_torchrun_sweep_starts_afresh(tmp_path):
    """torchrun --max-restarts starts the worker again with the store of the first attempt, and its keys. One worker:
    gloo in torch 2.13 cannot form a group of two again after a restart (its own connectFullMesh fails)."""
    history = tmp_path / "history.csv"
    [node] = torchrun(free_port(), ("--seeds", "0-2", "--max-episodes", 60, "--history", history), nnodes=1,
                      options=("--nproc-per-node", "1", "--max-restarts", "1"))
    lines_until(node, "[1/3]")
    [(worker, _)] = [child for child in children(node.pid) if b"reinforce_cartpole.py" in child[1]]
    os.kill(worker, signal.SIGKILL)
    out, err = node.communicate(timeout=PATIENCE * 2)
    assert node.returncode == 0, err
    assert [line[0] for line in progress_lines(out)] == ["1", "2", "3"], "the second attempt trains every run"
    assert [line.split()[2] for line in summary(out)[1:]] == ["0/3"]
    assert sorted(curves(history)) == [("0.01", "0.99", str(seed)) for seed in range(3)]


def test_each_run_of_a_sweep_records_its_own_clips_and_tensorboard_run(tmp_path):
    history = tmp_path / "history.csv"
    result = run_main("--seeds", "0,1", "--workers", 1, "--max-episodes", 2, "--render", "--eval-episodes", 2,
                      "--video-dir", tmp_path / "video", "--tensorboard", tmp_path / "tb", "--history", history)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert sorted(os.listdir(tmp_path / "tb")) == ["lr0.01-gamma0.99-seed0", "lr0.01-gamma0.99-seed1"]
    for seed in (0, 1):
        scalars = tensorboard_scalars(tmp_path / "tb" / f"lr0.01-gamma0.99-seed{seed}")
        rows = [row for row in history_rows(history) if row["seed"] == str(seed)]
        assert scalars["episode/return"] == [(int(row["episode"]), float(row["return"])) for row in rows]
        [(_, mean)] = scalars["trained_agent/mean_return"]
        assert f"seed {seed}: not solved in 2 episodes, trained agent {mean:.1f};" in result.stdout
    assert sorted(os.listdir(tmp_path / "video")) == ["lr0.01-gamma0.99-seed0", "lr0.01-gamma0.99-seed1"]
    for folder in os.listdir(tmp_path / "video"):
        names = sorted(os.listdir(tmp_path / "video" / folder))
        assert names == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4", "trained-agent-episode-0.mp4"]
        assert all(decoded_frames(tmp_path / "video" / folder / name)[1] > 0 for name in names)


def start_sweep(tmp_path, *args):
    """A sweep of 2 workers in a process group of its own, as a terminal runs a command; returns once a run has
    finished."""
    child = subprocess.Popen(script_command(*STOPPED, "--workers", 2, "--history", tmp_path / "history.csv",
                                            "--plot", tmp_path / "runs.png", *args),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=script_env({}))
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("[1/6]"):
            return child, lines
    raise AssertionError("".join(lines) + child.stderr.read())


def assert_finished_runs_kept(out, history, cause):
    """The partial summary counts the finished runs, and the history holds their every episode, row by row."""
    assert f"Stopped by {cause}: " in out
    done = int(re.search(r"^Stopped by .*: (\d+) of 6 runs finished$", out, re.M).group(1))
    assert 1 <= done < 6 and len(progress_lines(out)) == done
    runs = curves(history)
    for _, _, lr, gamma, seed, _, episodes, _ in progress_lines(out):
        assert [int(row[0]) for row in runs[(lr, gamma, seed)]] == list(range(1, int(episodes) + 1))
    assert history.read_text().endswith("\n")


@POSIX
def test_ctrl_c_stops_every_worker_and_keeps_the_finished_runs(tmp_path):
    child, lines = start_sweep(tmp_path)
    os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every worker
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and err == "" and "Stopped at once" not in out, err
    assert_finished_runs_kept("".join(lines) + out, tmp_path / "history.csv", "SIGINT")
    with Image.open(tmp_path / "runs.png") as image:
        assert image.format == "PNG"


@POSIX
def test_sigterm_to_the_launcher_alone_stops_every_worker(tmp_path):
    child, lines = start_sweep(tmp_path)
    child.send_signal(signal.SIGTERM)  # as a process manager stops a command: its workers hear of it from it
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 143 and err == "", err
    assert_finished_runs_kept("".join(lines) + out, tmp_path / "history.csv", "SIGTERM")


def children(pid):
    """The processes whose parent is pid, oldest first (Linux's /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):  # it has ended meanwhile
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append((int(fields[19]), int(entry), f.read()))
    return [(child, cmdline) for _, child, cmdline in sorted(found)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in Linux's /proc")
def test_a_killed_worker_ends_the_sweep_within_seconds_and_keeps_the_finished_runs(tmp_path):
    child, lines = start_sweep(tmp_path)
    [worker] = spawned_workers(child.pid)  # the launcher is worker 0, and spawned worker 1
    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    out, err = child.communicate(timeout=PATIENCE)
    assert time.monotonic() - killed < 60, "not gloo's 30-minute timeout"
    assert child.returncode == 4
    assert re.fullmatch(r"reinforce_cartpole\.py: worker 1 was lost \(ended by SIGKILL\)( while it trained lr 0\.01, "
                        r"gamma 0\.99, seed \d: that run is lost)?; the sweep stops\n", err), err
    assert_finished_runs_kept("".join(lines) + out, tmp_path / "history.csv", "a lost worker")


def spawned_workers(pid):
    return [child for child, cmdline in children(pid) if b"spawn_main" in cmdline]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in Linux's /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_workers_start_is_one_like_any_other(signum, tmp_path):
    child = subprocess.Popen(script_command("--seeds", "0-3", "--workers", 2, "--max-episodes", 50, "--no-render"),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + PATIENCE
    while not spawned_workers(child.pid):  # it imports torch and joins the group for a second or more yet
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.005)
    os.killpg(child.pid, signum)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signum and err == "", err
    assert re.search(rf"^Stopped by {signum.name}: \d of 4 runs finished$", out, re.M), out


def test_a_worker_busy_for_longer_than_a_heartbeat_may_stop_is_not_lost(monkeypatch):
    """A worker that says nothing while it scores its trained agent for three times LOST_AFTER: the work is not the
    heartbeat, and nothing else is judged by time."""
    monkeypatch.setattr(rc, "LOST_AFTER", 1)
    evaluate = rc.evaluate

    def slow_evaluate(*args):
        time.sleep(3 * rc.LOST_AFTER)
        return evaluate(*args)

    monkeypatch.setattr(rc, "evaluate", slow_evaluate)
    result = run_main("--seeds", 0, "--workers", 1, "--max-episodes", 3, "--no-render")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(progress_lines(result.stdout)) == 1 and "Stopped" not in result.stdout


def test_a_closed_pipe_stops_the_sweep_with_one_line_and_keeps_the_finished_runs(tmp_path):
    # As `... --seeds 0-3 | head -1` does.
    history = tmp_path / "history.csv"
    child = subprocess.Popen(script_command("--seeds", "0-3", "--workers", 2, "--max-episodes", 20, "--no-render",
                                            "--history", history, "--plot", tmp_path / "runs.png"),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = child.stdout.readline()
    child.stdout.close()
    assert child.wait(timeout=PATIENCE) == 141
    with child.stderr:
        assert child.stderr.read() == "reinforce_cartpole.py: the output was closed, as `| head` closes it: stopping\n"
    [(_, _, lr, gamma, seed, _, episodes, _)] = progress_lines(first)
    assert [int(row[0]) for row in curves(history)[(lr, gamma, seed)]] == list(range(1, int(episodes) + 1))
    with Image.open(tmp_path / "runs.png") as image:
        assert image.format == "PNG"


def test_under_torchrun_a_worker_whose_heartbeat_stops_is_lost_but_a_busy_one_never(monkeypatch, capsys):
    """The first worker's account, in this process, of workers 1 (busy, its heartbeat going) and 2 (silent)."""
    monkeypatch.setattr(rc, "LOST_AFTER", 2)
    args = rc.parse_args(["--seeds", "0-2", "--env-id", "CartPole-v0"])
    store, outcome = rc.dist.HashStore(), rc.Outcome(rc.Stop())
    hubs = [rc.Hub(store, rank, 3) for rank in range(3)]
    report = rc.SweepReport(args, [rc.Run(0.01, 0.99, seed) for seed in range(3)], hubs[0], outcome,
                            watch_heartbeats=True)
    done = threading.Event()
    contact = threading.Thread(target=rc.keep_in_touch, args=(hubs[1], rc.Outcome(rc.Stop()), done), daemon=True)
    contact.start()
    hubs[1].tell(start=1)
    hubs[2].tell(start=2)
    time.sleep(2 * rc.LOST_AFTER + 1)  # worker 1 says nothing all this time
    hubs[0].tell(bye=[])
    hubs[1].tell(bye=[])
    assert report.finish() == 4 and outcome.reason == "a lost worker"
    done.set()  # as take_part ends it
    contact.join()
    assert capsys.readouterr().err == ("reinforce_cartpole.py: worker 2 was lost (no heartbeat for 2 s) while it "
                                       "trained lr 0.01, gamma 0.99, seed 2: that run is lost; the sweep stops\n")


def test_a_worker_tells_its_stop_before_its_goodbye(monkeypatch):
    """A second signal may end the worker right after its goodbye: the first worker must know why it stopped by then,
    with no help from the thread that keeps in touch. A double Ctrl-C on another torchrun node did this."""
    monkeypatch.setattr(rc, "keep_in_touch", lambda hub, outcome, done: None)
    stop = rc.Stop()
    stop.signum = signal.SIGINT
    store = rc.dist.HashStore()
    args = rc.parse_args(["--seeds", "0", "--env-id", "CartPole-v0"])
    assert rc.take_part(args, [rc.Run(0.01, 0.99, 0)], rc.Hub(store, 1, 2), rc.Outcome(stop)) == 0
    assert store.check(["stop"]) and store.get("stop") == b"SIGINT"
    assert json.loads(store.queue_pop("messages")) == {"rank": 1, "bye": []}


def test_the_time_left_reads_as_minutes_and_seconds():
    assert rc.time_left(100) == "about 1 min 40 s left"
    assert rc.time_left(59.6) == "about 1 min 00 s left"
    assert rc.time_left(0) == "about 0 min 00 s left"
