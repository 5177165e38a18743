"""Many seeds in one command: every run of a sweep is the run that --seed trains alone, on 1 worker, on a LocalCluster
(where torch reports one GPU) and on a cluster that Dask's own CLI started; and so are the summary and the plot.
Stops and faults: Ctrl-C to the process group, SIGTERM to the launcher alone, a second signal, a signal while the
cluster starts, a closed pipe, a killed worker (retried, or past Dask's allowed failures), and a run that raises. Each
ends with one line at most, its exit status, no traceback and no process left; the local cluster listens on loopback
only. A stopped sweep resumes to end as one that never stopped."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

import distributed
import psutil
import pytest
import torch

from conftest import (PATIENCE, ROOT, RUNS, SWEEP, assert_equals_the_reference, curves, decoded_frames, history_rows,
                      lines_until, progress_lines, run_main, run_script, runs_in, script_command, script_env,
                      start_script, summary, sweep_outputs, tensorboard_scalars, trained_agent_score)

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

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
    assert [line.split()[:5] for line in summary(result.stdout)[1:]] == [["0.01", "0.99", "0", "of", "3"],
                                                                         ["0.02", "0.99", "0", "of", "3"]]


def test_a_sweep_says_what_it_trains_first_and_the_files_it_wrote_last(reference_sweep):
    result, history, plot = reference_sweep
    lines = result.stdout.splitlines()
    assert lines[0] == "Training 6 runs on this process" and lines[1].startswith("[1/6] ")
    record = f"{history}.jsonl (the record that --resume reads)"
    assert lines[-1] == f"Written: {record}, {history} (--history), {plot} (--plot)"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux shows what a terminal shows")
def test_a_sweep_in_a_terminal_shows_a_progress_bar_with_the_time_left(tmp_path):
    server = ["tmux", "-L", f"reinforce-cartpole-{os.getpid()}", "-f", os.devnull]
    command = " ".join(script_command(*SWEEP, "--workers", 2, "--history", tmp_path / "history.csv"))
    subprocess.run([*server, "new-session", "-d", "-x", "150", "-y", "40", f"cd {ROOT} && {command}; sleep 600"],
                   check=True, env=script_env({"TMUX": None}))
    try:
        deadline = time.monotonic() + PATIENCE
        screen = ""
        while "Written: " not in screen and time.monotonic() < deadline:
            time.sleep(0.2)  # polls the screen until the sweep has ended
            screen = subprocess.run([*server, "capture-pane", "-p"], capture_output=True, text=True).stdout
    finally:
        subprocess.run([*server, "kill-server"])
    lines = screen.splitlines()
    assert lines[0] == "Training 6 runs on 2 worker processes", screen
    bar = re.compile(r"100%\|█+\| 6/6 \[\d\d:\d\d<00:00, +[\d.]+(s/run|run/s)\]")  # the time taken<the time left
    assert any(bar.fullmatch(line.strip()) for line in lines), screen
    assert len(progress_lines("\n".join(lines))) == 6, "each run's line stays, above the bar"


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


def test_a_local_cluster_of_three_workers_where_torch_reports_one_gpu_equals_one_worker(reference_sweep, one_gpu,
                                                                                        tmp_path, capfd):
    three = run_main(*SWEEP, "--workers", 3, *sweep_outputs(tmp_path))
    assert three.stderr == "" and re.match(r"Training 6 runs on 3 worker processes(, more than the \d cores: each run "
                                           r"takes longer)?\n", three.stdout), three.stdout
    assert capfd.readouterr().err == "", "the workers and Dask are quiet"
    assert sorted(line[0] for line in progress_lines(three.stdout)) == ["1", "2", "3", "4", "5", "6"]
    assert_equals_the_reference(three, tmp_path, reference_sweep)


def dask_command(*args):
    """Dask's own command line, `dask ...`, as a user runs it from this environment."""
    return [shutil.which("dask", path=sysconfig.get_path("scripts")) or "dask", *map(str, args)]


@pytest.fixture
def dask_cli_cluster(tmp_path):
    """A `dask scheduler` on 127.0.0.1: (its address, start_worker(env_changes), which returns once the worker has
    joined, and its process). Every process it started is ended at the end, however the test or the fixture fails."""
    started = [subprocess.Popen(dask_command("scheduler", "--host", "127.0.0.1", "--port", 0, "--no-dashboard",
                                             "--scheduler-file", tmp_path / "scheduler.json"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        with distributed.Client(scheduler_file=str(tmp_path / "scheduler.json"), timeout=PATIENCE) as client:

            def start_worker(env_changes=None):
                started.append(subprocess.Popen(dask_command("worker", client.scheduler.address, "--nthreads", 1),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                env=script_env(env_changes or {})))
                client.wait_for_workers(len(started) - 1, timeout=PATIENCE)

            yield client.scheduler.address, start_worker, started[0]
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=PATIENCE)


def test_a_cluster_started_with_dasks_cli_trains_each_run_as_one_worker(reference_sweep, dask_cli_cluster, tmp_path):
    address, start_worker, _ = dask_cli_cluster
    for _ in range(2):
        start_worker()  # as the README says: MKL_CBWR=COMPATIBLE (conftest sets it) dask worker ADDRESS --nthreads 1
    result = run_script(*SWEEP, "--scheduler", address, *sweep_outputs(tmp_path))
    assert result.stderr == ""
    assert_equals_the_reference(result, tmp_path, reference_sweep)
    start_worker({"MKL_CBWR": None})  # a worker whose MKL picks its code by CPU, so its runs may differ
    refused = run_script(*SWEEP, "--scheduler", address, *sweep_outputs(tmp_path / "refused"))
    assert refused.returncode == 2 and refused.stdout == ""
    assert re.fullmatch(rf"reinforce_cartpole\.py: error: --scheduler {address}: worker tcp://127\.0\.0\.1:\d+ has "
                        r"MKL_CBWR None \(here COMPATIBLE\)\n", refused.stderr), refused.stderr
    assert not (tmp_path / "refused").exists()


def test_an_unreachable_scheduler_is_one_line_and_creates_nothing(tmp_path):
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run_script(*SWEEP, "--scheduler", f"tcp://127.0.0.1:{port}", *sweep_outputs(tmp_path / "out"),
                        env_changes={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})  # Dask's own waits 30 s
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(rf"reinforce_cartpole\.py: error: --scheduler tcp://127\.0\.0\.1:{port}: .+\n", result.stderr)
    assert not (tmp_path / "out").exists()


def start_sweep(folder, *args, workers=2, env_changes=None):
    """SWEEP (with `args`, which may override its own) on `workers` workers in a process group of its own, as a terminal runs a command; returns once a run has
    finished, with what it printed so far, and the processes of its cluster then."""
    child = start_script(*SWEEP, "--workers", workers, *sweep_outputs(folder), *args, env_changes=env_changes)
    lines = lines_until(child, "[1/6]")
    return child, lines, descendants(child.pid)


def descendants(pid):
    """The processes that `pid` started, and theirs, each with its command line: {process: command line}."""
    processes = {}
    for process in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that has ended meanwhile
            processes[process] = " ".join(process.cmdline())
    return processes


def workers_of(processes):
    return [process for process, command in processes.items() if "spawn_main" in command]


def alive(process):
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # a zombie has ended, and waits for its parent to read that
    except psutil.NoSuchProcess:
        return False


def being_killed(process):
    """Whether the process is ending (Linux): a SIGKILL is pending, as until it is next scheduled, or it is exiting
    (PF_EXITING, 0x4, in /proc's flags), as after that. Read in this order, a process that moves on is not missed."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            pending = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
        with open(f"/proc/{process.pid}/stat") as stat:
            flags = int(stat.read().rsplit(")", 1)[1].split()[6])
    except OSError:  # it has ended
        return True
    return any(mask >> (signal.SIGKILL - 1) & 1 for mask in pending) or bool(flags & 0x4)


def assert_none_outlives(processes):
    """Once the launcher has exited, no worker of its cluster is left but one that a SIGKILL is ending; then none at
    all: multiprocessing's resource tracker, which the launcher started too, ends as it reads that it has gone."""
    assert not [worker for worker in workers_of(processes) if alive(worker) and not being_killed(worker)]
    deadline = time.monotonic() + PATIENCE
    while any(map(alive, processes)):
        assert time.monotonic() < deadline, [command for process, command in processes.items() if alive(process)]
        time.sleep(0.01)


def assert_finished_runs_kept(before, after, history, cause, workers=2):
    """The partial summary counts the finished runs, and the history holds their every episode, row by row. The stop
    came after the lines `before`: each worker then finishes no more than the run that it may have finished unseen,
    and the one that it trains until it looks at the sweep's Event."""
    out = before + after
    done = int(re.search(rf"^Stopped by {cause}: (\d+) of 6 runs finished$", out, re.M).group(1))
    assert 1 <= done <= len(progress_lines(before)) + 2 * workers and len(progress_lines(out)) == done
    assert f"\nPartial: the statistics of the {done} finished runs of 6\n" in out
    runs = curves(history)
    for _, _, lr, gamma, seed, _, episodes, _ in progress_lines(out):
        assert [int(row[0]) for row in runs[(lr, gamma, seed)]] == list(range(1, int(episodes) + 1))
    assert len(runs) == done and history.read_text().endswith("\n")


def assert_resumes_as_if_never_stopped(stopped_out, folder, reference_sweep, workers):
    """The same command with --resume trains only the runs that did not finish, and ends with the history, summary,
    plot and exit status of the sweep on 1 worker that never stopped."""
    finished = runs_in(stopped_out)
    kept = {run: rows for run, rows in curves(folder / "history.csv", seconds=True).items() if run in finished}
    resumed = run_main(*SWEEP, "--workers", workers, *sweep_outputs(folder), "--resume")
    assert resumed.stderr == ""
    assert f"{len(finished)} of 6 runs finished before, and are not trained again" in resumed.stdout
    assert sorted(runs_in(resumed.stdout)) == sorted(set(RUNS) - set(finished))
    assert curves(folder / "history.csv", seconds=True).items() >= kept.items(), "their rows as they were written"
    assert_equals_the_reference(resumed, folder, reference_sweep)


@POSIX
def test_ctrl_c_stops_every_worker_keeps_the_finished_runs_and_resume_ends_the_sweep(reference_sweep, tmp_path):
    child, lines, processes = start_sweep(tmp_path)
    os.killpg(child.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process of the cluster
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and err == "" and "Stopped at once" not in out, err
    assert_none_outlives(processes)
    assert_finished_runs_kept(lines, out, tmp_path / "history.csv", "SIGINT")
    assert_resumes_as_if_never_stopped(lines + out, tmp_path, reference_sweep, workers=2)


@POSIX
def test_sigterm_to_the_launcher_alone_stops_every_worker_of_a_cluster_that_listens_on_loopback_only(tmp_path):
    child, lines, processes = start_sweep(tmp_path)
    listening = [(process.pid, connection.laddr) for process in [psutil.Process(child.pid), *workers_of(processes)]
                 for connection in process.net_connections(kind="inet") if connection.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3 and {address.ip for _, address in listening} == {"127.0.0.1"}, listening
    child.send_signal(signal.SIGTERM)  # as a process manager stops a command: its workers hear of it from it
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 143 and err == "", err
    assert_none_outlives(processes)
    assert_finished_runs_kept(lines, out, tmp_path / "history.csv", "SIGTERM")


@POSIX
def test_a_second_signal_exits_at_once_with_every_process_of_the_cluster(tmp_path):
    child, lines, processes = start_sweep(tmp_path)
    child.send_signal(signal.SIGINT)
    lines += lines_until(child, "      lr  gamma")  # the partial summary: the first stop is under way
    child.send_signal(signal.SIGINT)  # as the cluster closes
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and err == "" and out.endswith("Stopped at once by a second SIGINT\n"), (out, err)
    assert_none_outlives(processes)
    assert not [path for path in tmp_path.iterdir() if ".tmp" in path.name], "a temporary file is left"
    if (tmp_path / "history.csv").exists():  # whole, or not yet written as the second signal came
        assert curves(tmp_path / "history.csv").keys() <= {tuple(run) for run in runs_in(lines + out)}


@POSIX
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_cluster_starts_stops_at_once_once_it_has(signum, tmp_path):
    """The signal comes once both workers' processes are up, before they train: a Ctrl-C to the process group reaches
    them too, and they ignore it from the script's first lines. The cluster starts whole, then closes: no run trains."""
    child = start_script(*SWEEP, "--workers", 2, "--history", tmp_path / "history.csv")
    deadline = time.monotonic() + PATIENCE
    while True:
        processes = descendants(child.pid)
        if len([worker for worker in workers_of(processes) if ignores_sigint(worker)]) >= 2:
            break
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.005)
    if signum == signal.SIGINT:
        os.killpg(child.pid, signum)  # a terminal's Ctrl-C
    else:
        child.send_signal(signum)  # a process manager's stop, to the launcher alone
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signum and err == "", err
    assert re.fullmatch(rf"Training 6 runs on 2 worker processes.*\nStopped at once by {signum.name}\n", out), "no run"
    assert_none_outlives(processes)


def ignores_sigint(process):
    """Whether a process ignores SIGINT (Linux's /proc; elsewhere taken as so once it exists)."""
    try:
        with open(f"/proc/{process.pid}/status") as f:
            ignored = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", f.read(), re.M)[1], 16)
    except OSError:
        return not sys.platform.startswith("linux")
    return bool(ignored & 1 << (signal.SIGINT - 1))


def test_a_closed_pipe_stops_the_sweep_quietly_and_keeps_the_finished_runs(tmp_path):
    # As `... --seeds 0-2 --lr 0.01,0.02 | head -2` does: the line that says what the sweep trains, and the first run's.
    child = start_script(*SWEEP, "--workers", 2, *sweep_outputs(tmp_path))
    first = child.stdout.readline() + child.stdout.readline()
    child.stdout.close()
    assert child.wait(timeout=PATIENCE) == 141
    with child.stderr:
        assert child.stderr.read() == "", "quiet, as Unix tools are"
    [(lr, gamma, seed)] = runs_in(first)
    episodes = int(progress_lines(first)[0][6])
    assert [int(row[0]) for row in curves(tmp_path / "history.csv")[(lr, gamma, seed)]] == list(range(1, episodes + 1))
    assert (tmp_path / "runs.png").read_bytes().startswith(b"\x89PNG")


def runs_training(folder):
    """The runs of a sweep into `folder` that have started and not finished."""
    started = len(os.listdir(folder / "tb")) if (folder / "tb").exists() else 0
    record = folder / "history.csv.jsonl"
    return started - (len(record.read_text().splitlines()) - 1 if record.exists() else 0)


@POSIX
def test_a_worker_killed_mid_run_is_retried_and_the_sweep_loses_nothing(reference_sweep, tmp_path):
    """Killed while both workers train, each a run whose start Dask has logged: a run makes its TensorBoard folder once
    its start is logged, and the record gains a line as it finishes."""
    child = start_script(*SWEEP, "--workers", 2, *sweep_outputs(tmp_path), "--tensorboard", tmp_path / "tb")
    deadline = time.monotonic() + PATIENCE
    while runs_training(tmp_path) < 2:
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.005)
    processes = descendants(child.pid)
    workers_of(processes)[0].kill()
    out, err = child.communicate(timeout=PATIENCE)
    assert re.fullmatch(r"reinforce_cartpole\.py: the worker of lr 0\.0[12], gamma 0\.99, seed \d was lost: the run is "
                        r"retried\n", err), err
    result = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    assert sorted(runs_in(result.stdout)) == sorted(RUNS)
    assert_equals_the_reference(result, tmp_path, reference_sweep)
    assert_none_outlives(processes)


@POSIX
def test_a_run_whose_workers_die_more_than_dask_allows_stops_the_sweep_and_resume_ends_it(reference_sweep, tmp_path):
    child, lines, processes = start_sweep(tmp_path, env_changes={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    workers_of(processes)[0].kill()
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 4, err
    assert re.fullmatch(r"reinforce_cartpole\.py: lr 0\.0[12], gamma 0\.99, seed \d could not finish: KilledWorker: "
                        r".+\n", err), err
    assert "Stopped by" not in out and re.search(r"^Partial: the statistics of the \d finished runs of 6$", out, re.M)
    assert_none_outlives(processes)
    assert_resumes_as_if_never_stopped(lines + out, tmp_path, reference_sweep, workers=1)


# A Python process that starts with this fails, as a CUDA error does, when it builds a run's optimizer with lr 0.02.
FAILING_OPTIMIZER = """
import torch.optim
class Adam(torch.optim.Adam):
    def __init__(self, params, lr, **options):
        if lr == 0.02:
            raise RuntimeError("CUDA error: invalid device ordinal\\nCUDA kernel errors might be reported later")
        super().__init__(params, lr=lr, **options)
torch.optim.Adam = Adam
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_that_raises_is_one_line_the_finished_runs_stay_and_resume_ends_the_sweep(workers, reference_sweep,
                                                                                        tmp_path, monkeypatch, capfd):
    startup = python_startup(tmp_path / "failing", FAILING_OPTIMIZER)
    with monkeypatch.context() as failing:
        for name, value in startup.items():  # for the workers that this process starts
            failing.setenv(name, value)
        failing.setattr(torch.optim, "Adam", torch.optim.Adam)  # so that it is restored on leaving
        exec(FAILING_OPTIMIZER, {})  # and for this process, which trains the runs on 1 worker
        result = run_main(*SWEEP, "--workers", workers, *sweep_outputs(tmp_path))
    assert result.returncode == 4 and capfd.readouterr().err == "", "the worker prints nothing itself"
    assert re.fullmatch(r"reinforce_cartpole\.py: lr 0\.02, gamma 0\.99, seed \d could not finish: RuntimeError: "
                        r"CUDA error: invalid device ordinal\n", result.stderr), result.stderr
    assert all(lr == "0.01" for lr, _, _ in runs_in(result.stdout))
    assert_resumes_as_if_never_stopped(result.stdout, tmp_path, reference_sweep, workers=workers)


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
        assert f"seed {seed}: not solved in 2 episodes, trained agent (eval mode) {mean:.1f};" in result.stdout
    assert sorted(os.listdir(tmp_path / "video")) == folders
    assert result.stdout.splitlines()[-1] == (f"Written: {tmp_path / 'video'} (the runs' clips, a folder each), "
                                              f"{tmp_path / 'tb'} (--tensorboard, a folder each), {history}.jsonl "
                                              f"(the record that --resume reads), {history} (--history)")
    for folder in os.listdir(tmp_path / "video"):
        names = sorted(os.listdir(tmp_path / "video" / folder))
        assert names == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4", "trained-agent-episode-0.mp4"]
        assert all(decoded_frames(tmp_path / "video" / folder / name)[1] > 0 for name in names)


def test_values_that_print_alike_with_g_keep_their_own_labels_and_folders(tmp_path):
    result = run_main("--seeds", "0", "--lr", "0.0100001,0.01000012", "--workers", 1, "--max-episodes", 1,
                      "--eval-episodes", 1, "--render", "--video-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["CartPole-v0-lr0.0100001-gamma0.99-seed0",
                                            "CartPole-v0-lr0.01000012-gamma0.99-seed0"]
    assert [line.split()[0] for line in summary(result.stdout)[1:]] == ["0.0100001", "0.01000012"]


@POSIX
def test_a_local_cluster_lets_in_no_client_without_its_credentials(tmp_path):
    """Another local user reaches 127.0.0.1 too: neither a plain client nor one with TLS credentials of its own may
    connect to the launcher's scheduler, where it could run code as the user who started the sweep."""
    child = start_script("--seeds", "0,1", "--lr", "0.0001", "--max-episodes", 100000, "--workers", 2, "--no-render")
    processes = {}
    try:
        deadline = time.monotonic() + PATIENCE
        while len(workers_of(processes := descendants(child.pid))) < 2 or not (ports := listening_ports(child.pid)):
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.05)
        for port in ports:
            for address, security in ((f"tcp://127.0.0.1:{port}", None),
                                      (f"tls://127.0.0.1:{port}", distributed.Security.temporary())):
                with pytest.raises((OSError, TimeoutError)):
                    distributed.Client(address, security=security, timeout=3)
    finally:
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=PATIENCE)
    assert child.returncode == 143
    assert_none_outlives(processes)


def listening_ports(pid):
    """The ports on which `pid` listens for Dask's protocol: not the scheduler's HTTP server, which answers HTTP."""
    ports = [connection.laddr.port for connection in psutil.Process(pid).net_connections(kind="inet")
             if connection.status == psutil.CONN_LISTEN]
    return [port for port in ports if not answers_http(port)]


def answers_http(port):
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:
        connection.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        connection.settimeout(1)  # Dask's own protocol says nothing to a request it cannot read, or hangs up
        try:
            return connection.recv(5) == b"HTTP/"
        except OSError:
            return False


def test_two_sweeps_on_one_record_keep_it_whole(reference_sweep, tmp_path):
    """Started together: one trains, and the other is refused with one line, whether it finds the record held or
    already holding finished runs. The record and the history end as the sweep on 1 worker's."""
    sweeps = [start_script(*SWEEP, "--workers", 1, *sweep_outputs(tmp_path)) for _ in range(2)]
    results = [subprocess.CompletedProcess(child.args, None, *child.communicate(timeout=PATIENCE)) for child in sweeps]
    for result, child in zip(results, sweeps):
        result.returncode = child.returncode
    refused, trained = sorted(results, key=lambda result: -result.returncode)
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    record = tmp_path / "history.csv.jsonl"
    assert refused.stderr in (f"reinforce_cartpole.py: error: {record} is in use by another sweep\n",
                              f"reinforce_cartpole.py: error: {record} holds finished runs: add --resume to go on "
                              f"with them, or remove the file to start afresh\n")
    assert_equals_the_reference(trained, tmp_path, reference_sweep)
    assert len(record.read_text().splitlines()) == 7, "the settings, and a line for each run"
    assert sorted(os.listdir(tmp_path)) == ["history.csv", "history.csv.jsonl", "runs.png"], "no lock file is left"


@pytest.mark.parametrize("address", ["", "foo", "tcp://", "inproc://x", "ucx://127.0.0.1:1", "ws://127.0.0.1:1",
                                     "tcp://127.0.0.1:port"])
def test_a_bad_scheduler_address_is_one_line(address, tmp_path):
    result = run_main(*SWEEP, "--scheduler", address, "--history", tmp_path / "out" / "history.csv")
    assert (result.returncode, result.stdout) == (2, "")
    assert re.fullmatch(rf"reinforce_cartpole\.py: error: argument --scheduler: expected tcp://HOST:PORT or "
                        rf"tls://HOST:PORT, not '{re.escape(address)}' \(see --help\)\n", result.stderr), result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("address,config", [
    ("tls://127.0.0.1:{port}", {}),  # without TLS settings
    ("tcp://127.0.0.1:{port}", {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}),
])
def test_a_scheduler_address_that_dask_cannot_use_is_one_line(address, config, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        address = address.format(port=server.getsockname()[1])
        result = run_script(*SWEEP, "--scheduler", address, "--history", tmp_path / "out" / "history.csv",
                            env_changes=config)
    assert (result.returncode, result.stdout) == (2, "")
    assert re.fullmatch(rf"reinforce_cartpole\.py: error: --scheduler {address}: .+\n", result.stderr), result.stderr
    assert os.listdir(tmp_path) == []


def stopped_within(child, seconds):
    """SIGTERM, then the process's (stdout, stderr) once it has ended, which it must within `seconds`."""
    child.send_signal(signal.SIGTERM)
    try:
        return child.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError(f"still running {seconds} s after a SIGTERM: {child.communicate()}") from None


@POSIX
def test_a_scheduler_that_never_answers_is_stopped_by_one_sigterm(tmp_path):
    with socket.socket() as silent:  # accepts a connection, then says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        child = start_script(*SWEEP, "--scheduler", f"tcp://127.0.0.1:{silent.getsockname()[1]}",
                             *sweep_outputs(tmp_path / "out"))
        connection, _ = silent.accept()
        with connection:
            out, err = stopped_within(child, 5)
    assert (child.returncode, out, err) == (143, "Stopped at once by SIGTERM\n", "")
    assert not (tmp_path / "out").exists()


@POSIX
def test_a_cluster_without_workers_says_so_and_is_stopped_by_one_sigterm(dask_cli_cluster, tmp_path):
    address, _, _ = dask_cli_cluster
    child = start_script(*SWEEP, "--scheduler", address, *sweep_outputs(tmp_path))
    line = child.stderr.readline()
    assert line == "reinforce_cartpole.py: the cluster has no worker: the sweep waits for one\n"
    out, err = stopped_within(child, 5)
    assert (child.returncode, err) == (143, ""), err
    assert "Partial: the statistics of the 0 finished runs of 6\n" in out
    assert out.splitlines()[-2] == "Stopped by SIGTERM: 0 of 6 runs finished"
    assert out.splitlines()[-1].startswith("Written: ")


def test_a_scheduler_that_never_answers_is_one_line_once_its_wait_is_over(tmp_path):
    """Dask waits for a scheduler's first answer without a bound: the launcher waits 10 s for it."""
    with socket.socket() as silent:  # connections queue up, and nothing ever answers them
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        result = run_script(*SWEEP, "--scheduler", address, *sweep_outputs(tmp_path / "out"), timeout=PATIENCE)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"reinforce_cartpole.py: error: --scheduler {address}: no answer in 10 s\n"
    assert not (tmp_path / "out").exists()


@POSIX
def test_a_local_cluster_has_no_more_workers_than_runs(tmp_path):
    child = start_script("--seeds", "0,1", "--max-episodes", 40, "--workers", 8, "--history", tmp_path / "history.csv")
    most = 0
    while child.poll() is None:  # the workers that the launcher has started, at every look until it ends
        most = max(most, len([worker for worker in workers_of(descendants(child.pid)) if alive(worker)]))
        time.sleep(0.02)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 0 and err == "", err
    assert most == 2 and len(progress_lines(out)) == 2


@POSIX
def test_a_lost_scheduler_is_one_line_and_the_record_keeps_the_finished_runs(dask_cli_cluster, tmp_path):
    address, start_worker, scheduler = dask_cli_cluster
    for _ in range(2):
        start_worker()
    child = start_script(*SWEEP, "--max-episodes", 300, "--scheduler", address, *sweep_outputs(tmp_path))
    lines = lines_until(child, "[1/6]")
    scheduler.kill()
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 4
    assert re.fullmatch(r"reinforce_cartpole\.py: the sweep's cluster was lost: .+\n", err), err
    finished = len(progress_lines(lines + out))
    record = (tmp_path / "history.csv.jsonl").read_text()
    assert record.endswith("\n") and len(record.splitlines()) == 1 + finished >= 2
    assert len(curves(tmp_path / "history.csv")) == finished
