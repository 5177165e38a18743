"""Benchmark: the port against the tutorial's code as written. Prints markdown tables.

    python tests/benchmark.py            # full run, about 13 minutes on a 2-core machine
    python tests/benchmark.py --quick    # about a minute
    python tests/benchmark.py --only solving --seeds-figure video/seeds.png   # the README's figure
    python tests/benchmark.py --only sweep --baseline old.py   # 8 seeds x 400 and 6 x 200 episodes, on 1 worker
                                              # and on 2, beside an earlier script (git show REV:reinforce_cartpole.py)
    python tests/benchmark.py --only start-up --only summary --only budgets --only profiler
    python tests/benchmark.py --only suite    # the test suite's time in solve runs, 3 pairs

A script, not a test: pytest collects only test_*.py. Contenders alternate on the same seeds
within one run, and every comparison is a ratio from that run, because these machines are
shared and noisy.
"""

import argparse
import ast
import contextlib
import csv
import io
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # as the script pins it, for the runs of main() in this process

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reinforce_cartpole.py"
sys.path.insert(0, str(ROOT))
import reinforce_cartpole as rc  # noqa: E402
from as_written import run_as_written  # noqa: E402


# --- The port, through its real entry point --------------------------------------------


class PortRun(list):
    """The per-episode rewards, plus the seconds from the first episode to the end of the last."""

    training_seconds = None


def run_port(seed=543, max_episodes=1000000, render=False, video_dir=None, log_interval=100):
    """Returns the per-episode rewards, read back from the port's --history CSV."""
    with tempfile.TemporaryDirectory() as tmp:
        history = os.path.join(tmp, "history.csv")
        argv = ["--seed", str(seed), "--max-episodes", str(max_episodes), "--log-interval", str(log_interval),
                "--history", history]
        argv += ["--video-dir", str(video_dir)] if render else ["--no-render"]
        rc.main(argv)
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
    run = PortRun(float(row["return"]) for row in rows)
    run.training_seconds = float(rows[-1]["seconds"])
    return run


# --- Measurements ----------------------------------------------------------------------


def timed(fn, **kwargs):
    """(per-episode rewards, seconds). On CartPole the reward is 1 a step, so the rewards
    add up to the env steps."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rewards = fn(**kwargs)
    return rewards, time.perf_counter() - start


def training_throughput(seeds, episodes, repeats):
    """The port against the as-written path, rendering off, alternating on the same seeds."""
    for fn in (run_as_written, run_port):  # warm-up: first-call costs are not the paths' own
        timed(fn, seed=0, max_episodes=20)
    speeds = {"as written": [], "port": []}
    ratios, identical = [], True
    for repeat in range(repeats):
        for seed in seeds:
            order = [("as written", run_as_written), ("port", run_port)]
            if (repeat + seed) % 2:
                order.reverse()
            results = {}
            for name, fn in order:
                rewards, seconds = timed(fn, seed=seed, max_episodes=episodes)
                results[name] = rewards
                speeds[name].append(sum(rewards) / seconds)
            identical &= results["port"] == results["as written"]
            ratios.append(speeds["port"][-1] / speeds["as written"][-1])
    print(f"\n### 1. Training throughput, rendering off ({len(seeds)} seeds x {repeats}, "
          f"{episodes} episodes each)\n")
    print("| path | env steps/s (median) |\n| --- | ---: |")
    for name, values in speeds.items():
        print(f"| {name} | {statistics.median(values):,.0f} |")
    print(f"\nPort / as written: **{statistics.median(ratios):.2f}x** (median of {len(ratios)} paired runs, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}). Same per-episode rewards on every seed: "
          f"**{'yes' if identical else 'NO'}**.")


def port_with_gc_after_each_clip(**kwargs):
    """The port, but with RecordVideo's default gc_trigger: a gc.collect() after every clip."""
    wrap_env = rc.wrap_env
    rc.wrap_env = lambda env, folder, **options: rc.ClipRecorder(env, folder, disable_logger=True, **options)
    try:
        return run_port(**kwargs)
    finally:
        rc.wrap_env = wrap_env


def video_cost(seed, episodes, repeats):
    """Recording against not recording, for the port, paired within each repeat; and the
    as-written path, which renders every step and keeps RecordVideo's defaults."""
    contenders = {"port, rendering off": (run_port, False), "port, rendering on": (run_port, True),
                  "port, rendering on, gc.collect() after each clip": (port_with_gc_after_each_clip, True)}
    speeds = {name: [] for name in contenders}  # (training, whole run) env steps/s, one pair a repeat
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            order = list(contenders.items())
            if repeat % 2:
                order.reverse()
            for name, (fn, render) in order:
                video_dir = os.path.join(tmp, f"{repeat}-{list(contenders).index(name)}")
                rewards, seconds = timed(fn, seed=seed, max_episodes=episodes, render=render, video_dir=video_dir)
                steps = sum(rewards)
                speeds[name].append((steps / rewards.training_seconds, steps / seconds))
        rewards, seconds = timed(run_as_written, seed=seed, max_episodes=episodes, render=True,
                                 video_dir=os.path.join(tmp, "as-written"))
        clips = len(os.listdir(os.path.join(tmp, "as-written")))
    off = speeds["port, rendering off"]
    print(f"\n### 2. The cost of video (seed {seed}, {len(rewards)} episodes, {clips} training clips, "
          f"{repeats} runs each)\n")
    print("Extra time against the port with rendering off in the same repeat: median (range) over the repeats.\n"
          "Training runs from the first episode to the end of the last (the port's --history); the whole run\n"
          "is main() from start to return, with the trained-agent episode and its clip when recording.\n")
    print("| run | extra time, training | extra time, whole run |\n| --- | ---: | ---: |")
    for name in list(contenders)[1:]:
        cells = []
        for part in (0, 1):
            extra = [(base[part] / run[part] - 1) * 100 for base, run in zip(off, speeds[name])]
            cells.append(f"{statistics.median(extra):+.1f} % ({min(extra):+.1f} to {max(extra):+.1f})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    as_written = sum(rewards) / seconds
    off_whole = statistics.median(whole for _, whole in off)
    print(f"| as written, rendering on (one run) | | {(off_whole / as_written - 1) * 100:+.0f} % |")
    print(f"\nThe port with rendering off ran at {statistics.median(t for t, _ in off):,.0f} env steps/s in training.")


def run_in_its_own_process(seed, episodes, env_changes=None, busy=False):
    """The port through its real entry point, in a process of its own, with rendering off: (whether it
    solved the task, its --history rows, wall seconds). With busy=True it runs beside a CPU-bound
    process that keeps one core occupied."""
    env = {**os.environ, **(env_changes or {})}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            history = os.path.join(tmp, "history.csv")
            start = time.perf_counter()
            result = subprocess.run([sys.executable, str(SCRIPT), "--no-render", "--seed", str(seed), "--max-episodes",
                                     str(episodes), "--log-interval", str(10 ** 9), "--history", history],
                                    env=env, capture_output=True, check=False)
            seconds = time.perf_counter() - start
            with open(history, newline="") as f:
                return result.returncode == 0, list(csv.DictReader(f)), seconds
    finally:
        if hog:
            hog.kill()
            hog.wait()


def sweep_command(seeds, max_episodes, *flags, script=SCRIPT):
    return [sys.executable, str(script), "--seeds", seeds, "--max-episodes", str(max_episodes), "--no-render", *flags]


def episodes_to_solve(seeds, max_episodes, figure):
    """The README's comparison of lr 0.01 and 0.005: its summary and figure, drawn by the user-facing sweep command
    on every core, with its history in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = ["--lr", "0.01,0.005", "--history", os.path.join(tmp, "runs.csv"),
                 "--plot", figure or os.path.join(tmp, "seeds.png")]
        start = time.perf_counter()
        result = subprocess.run(sweep_command(seeds, max_episodes, *flags), capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    print(f"\n### 3. Episodes to solve CartPole-v0 (seeds {seeds}, lr 0.01 and 0.005, at most {max_episodes} "
          f"episodes)\n")
    print(f"`reinforce_cartpole.py --seeds {seeds} --lr 0.01,0.005 --max-episodes {max_episodes} --no-render "
          f"--history ... --plot ...` took **{seconds:.0f} s** on {os.cpu_count()} workers"
          + (f", and drew {figure}" if figure else "") + ":\n")
    print("```\n" + result.stdout.rstrip() + "\n```")


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss(command):
    """The largest peak resident set of the command's processes, in MiB (ru_maxrss, in KiB on Linux)."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def run_seconds(history):
    """Each run's training time in a --history CSV, its last row's seconds, by (lr, gamma, seed): the queue's order
    when the sweep has one setting, as every sweep here has."""
    with open(history, newline="") as f:
        last = {(float(row["lr"]), float(row["gamma"]), int(row["seed"])): float(row["seconds"])
                for row in csv.DictReader(f)}
    return [last[run] for run in sorted(last)]


def queue_makespan(seconds, workers):
    """When the last run ends if the workers, all there from the start, take the runs in order as each gets free."""
    free = [0.0] * workers
    for run in seconds:
        free[free.index(min(free))] += run
    return max(free)


def sweep_scale(seeds, max_episodes, repeats, baseline=None):
    """The same sweep on 1 worker and on 2, by this script and by `baseline` (an earlier one) if given, in an order
    that turns around at each repeat: wall time, including the workers' start; the largest peak memory of one process;
    and where the time beyond ideal scaling goes."""
    scripts = {"this": SCRIPT, **({"baseline": baseline} if baseline else {})}
    contenders = [(name, workers) for name in scripts for workers in (1, 2)]
    times, trained = {c: [] for c in contenders}, {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name, workers in contenders if repeat % 2 == 0 else contenders[::-1]:
                history = os.path.join(tmp, f"{name}-{workers}-{repeat}.csv")  # a sweep of its own, not a --resume
                start = time.perf_counter()
                subprocess.run(sweep_command(seeds, max_episodes, "--workers", str(workers), "--history", history,
                                             script=scripts[name]), capture_output=True, check=True)
                times[name, workers].append(time.perf_counter() - start)
                trained[name, workers].append(run_seconds(history))
    print(f"\n### 8. A sweep on 1 and on 2 workers (seeds {seeds}, at most {max_episodes} episodes, {repeats} "
          f"repeats)\n")
    print("| script | workers | wall time (median) | training, summed over runs | peak memory of one process |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for name, workers in contenders:
        command = sweep_command(seeds, max_episodes, "--workers", str(workers), script=scripts[name])
        memory = peak_rss(command) if sys.platform == "linux" else 0
        summed = statistics.median(map(sum, trained[name, workers]))
        print(f"| {name} | {workers} | {statistics.median(times[name, workers]):.1f} s | {summed:.1f} s "
              f"| {memory:.0f} MiB |")
    for name in scripts:
        ratios = [two / one for one, two in zip(times[name, 1], times[name, 2])]
        print(f"\n{name}: 2 workers / 1 worker: **{statistics.median(ratios):.2f}x** the time "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}).")
    if baseline:
        for workers in (1, 2):
            ratios = [new / old for new, old in zip(times["this", workers], times["baseline", workers])]
            print(f"\nthis / baseline on {workers} worker{'s' * (workers > 1)}: **{statistics.median(ratios):.2f}x** "
                  f"the time (range {min(ratios):.2f}-{max(ratios):.2f}).")
    one, two = trained["this", 1], trained["this", 2]
    one_by_one = [queue_makespan(seconds, 2) / sum(seconds) for seconds in one]
    slower = [sum(b) / sum(a) for a, b in zip(one, two)]
    beyond = [wall - queue_makespan(seconds, 2) for wall, seconds in zip(times["this", 2], two)]
    outside = [wall - sum(seconds) for wall, seconds in zip(times["this", 1], one)]
    print(f"\nWhere this script's time goes (medians): the queue alone, at 1 worker's speed, would give "
          f"{statistics.median(one_by_one):.2f}x; each run trains {statistics.median(slower):.2f}x as long beside "
          f"another; on 2 workers the sweep took {statistics.median(beyond):.1f} s beyond its runs' training laid out "
          f"in queue order, against {statistics.median(outside):.1f} s outside training on 1 worker "
          f"(start-up, scoring the trained agents, the summary).")


def worker_start_up(seeds, max_episodes, workers):
    """main() in this process, with a LocalCluster of `workers`: the seconds from the launch until the cluster is up,
    and until each worker has started its first run, as the scheduler's RUN_STARTED events time them."""
    launched, up, starts = time.time(), [], []
    cluster_runs = rc.cluster_runs

    def timed_cluster_runs(client, *args):
        up.append(time.time())
        yield from cluster_runs(client, *args)
        starts.extend(sorted(stamp for stamp, _ in client.get_events(rc.RUN_STARTED))[:workers])

    rc.cluster_runs = timed_cluster_runs
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            rc.main(["--seeds", seeds, "--max-episodes", str(max_episodes), "--no-render", "--workers", str(workers)])
    finally:
        rc.cluster_runs = cluster_runs
    print(f"\n### 10. The workers' start-up ({workers} workers, seeds {seeds})\n")
    print(f"From the launch: the LocalCluster is up after {up[0] - launched:.2f} s; the workers start their first "
          f"runs after " + ", ".join(f"{stamp - launched:.2f} s" for stamp in starts) + ".")


def summary_speed(runs_per_setting, settings, repeats):
    """The summary of a sweep (its table, and every pair of settings by the permutation test) of made-up results."""
    rng = np.random.default_rng(0)
    runs = [rc.Run(0.01 * (1 + s), 0.99, seed) for s in range(settings) for seed in range(runs_per_setting)]
    results = {i: {"episodes": int(e), "solved": e < 1000, "score": 200.0}
               for i, e in enumerate(np.minimum(rng.integers(150, 1100, len(runs)), 1000))}
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        rc.summary_lines(runs, results)
        seconds.append(time.perf_counter() - start)
    print(f"\n### 12. The summary of {settings} settings of {runs_per_setting} runs each ({repeats} repeats)\n")
    print(f"Median **{statistics.median(seconds):.2f} s** (range {min(seconds):.2f}-{max(seconds):.2f}; the first "
          f"imports scipy.stats).")


def simulated_episodes(rng, seeds, settings, faster):
    """A sweep's episodes to solve by setting, lognormal around 500 (setting 0 around 500 x `faster`), with the same
    share of unsolved runs for all, drawn from 0 to 30 % (inf: not solved)."""
    unsolved = rng.uniform(0, 0.3)
    return {setting: np.where(rng.random(seeds) < unsolved, np.inf,
                              np.round(rng.lognormal(np.log(500 * (faster if setting == 0 else 1)), 0.5, seeds)))
            for setting in range(settings)}


def verdict_rates(sweeps, seed_counts, setting_counts, faster=0.6):
    """The summary's verdicts on simulated sweeps, with the sweep's own 9999 permutations a comparison: the share of
    sweeps whose settings do not differ that hold any clear difference (false verdicts), and where setting 0 solves
    in `faster` times the episodes, the share that say it clearly faster than every other (power)."""
    print(f"\n### 14. The verdicts of {sweeps} simulated sweeps each (episodes to solve lognormal, sigma 0.5, "
          f"0-30 % unsolved; power: one setting's median {faster:g} x the others')\n")
    print("| seeds a setting | settings | false verdicts (any, null) | power (the faster one told apart from all) |")
    print("| --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for seeds in seed_counts:
        for settings in setting_counts:
            labels = {setting: f"lr {setting}" for setting in range(settings)}
            false = sum(any(": a clear difference" in line for line in rc.verdicts(
                simulated_episodes(rng, seeds, settings, 1), labels)) for _ in range(sweeps))
            told = sum(sum(line.startswith("lr 0 solved") and ": a clear difference" in line for line in rc.verdicts(
                simulated_episodes(rng, seeds, settings, faster), labels)) == settings - 1 for _ in range(sweeps))
            print(f"| {seeds} | {settings} | {false / sweeps:.1%} | {told / sweeps:.1%} |")


def timed_run_on_worker(args, run, stop_name):
    start = time.perf_counter()
    rc.train_on_worker(args, run, stop_name)
    return time.perf_counter() - start


def worker_profiler(max_episodes, repeats):
    """One run's seconds on the only worker of a LocalCluster, with Dask's profiler on (Dask's default) and off (the
    script's choice), alternating; and in this process, as --workers 1 trains."""
    import dask
    import distributed
    args = rc.parse_args(["--seeds", "0", "--max-episodes", str(max_episodes), "--no-render"])
    run, seconds = rc.Run(0.01, 0.99, 0), {"profiler on": [], "profiler off": [], "in this process": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as main() sets it, and a worker's run
    for _ in range(repeats):
        for name, enabled in (("profiler on", True), ("profiler off", False)):
            with dask.config.set({"distributed.worker.profile.enabled": enabled}), distributed.LocalCluster(
                    n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                    silence_logs=logging.CRITICAL) as cluster, distributed.Client(cluster) as client:
                distributed.Event("stop", client)
                client.submit(timed_run_on_worker, args, run, "stop", pure=False).result()  # its imports, once
                seconds[name] += [client.submit(timed_run_on_worker, args, run, "stop", pure=False).result()
                                  for _ in range(2)]
        for _ in range(2):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rc.train_run(args, rc.RunOutputs(args, run), rc.Stop())
            seconds["in this process"].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    print(f"\n### 13. One run on a LocalCluster's worker (seed 0, {max_episodes} episodes, {repeats} rounds)\n")
    print("| where | seconds (median) | ratio |\n| --- | ---: | ---: |")
    alone = statistics.median(seconds["in this process"])
    for name, times in seconds.items():
        print(f"| {name} | {statistics.median(times):.2f} s | {statistics.median(times) / alone:.2f} |")


def two_statement_lines(source):
    """The lines that hold more than one statement, such as `if x: y` or `a; b`."""
    starts = Counter(node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.stmt))
    return sorted(line for line, count in starts.items() if count > 1)


def budgets():
    """The module's size: its lines, its longest line and its lines of more than one statement."""
    source = SCRIPT.read_text()
    lines = source.splitlines()
    print("\n### 11. The module's size\n")
    print(f"reinforce_cartpole.py: **{len(lines)} lines**, the longest {max(map(len, lines))} characters, "
          f"{len(two_statement_lines(source))} lines of more than one statement.")


def peak_memory(max_episodes):
    """Peak resident set of one training run (Linux only)."""
    print(f"\n### 4. Peak resident memory of one training run (seed 543, at most {max_episodes} episodes)\n")
    if sys.platform != "linux":
        print("Measured on Linux only.")
        return
    print("| run | peak RSS |\n| --- | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in (("rendering off", ["--no-render"]), ("rendering on", ["--video-dir", tmp])):
            memory = peak_rss([sys.executable, str(SCRIPT), "--max-episodes", str(max_episodes), *flags])
            print(f"| {name} | {memory:.0f} MiB |")


def history_of_a_run(seed, episodes, env_changes=None, busy=False):
    """(per-episode returns, training seconds) of run_in_its_own_process."""
    _, rows, _ = run_in_its_own_process(seed, episodes, env_changes, busy)
    return [float(row["return"]) for row in rows], float(rows[-1]["seconds"])


def alternated(repeats, first, second):
    """history_of_a_run with each of two settings (its keyword arguments) once a repeat, the order
    alternating: the two lists of (returns, training seconds)."""
    runs = ([], [])
    for repeat in range(repeats):
        for side in (0, 1) if repeat % 2 == 0 else (1, 0):
            runs[side].append(history_of_a_run(**(first, second)[side]))
    return runs


def busy_machine(seed, episodes, repeats):
    """The same run alone and beside a CPU-bound process, paired and alternated within each repeat."""
    alone, busy = alternated(repeats, dict(seed=seed, episodes=episodes), dict(seed=seed, episodes=episodes, busy=True))
    ratios = [busy_seconds / alone_seconds for (_, alone_seconds), (_, busy_seconds) in zip(alone, busy)]
    print(f"\n### 6. A busy machine (seed {seed}, {episodes} episodes, training time, {repeats} pairs)\n")
    print("| run | env steps/s (median) |\n| --- | ---: |")
    for name, runs in (("alone", alone), ("beside a busy process", busy)):
        print(f"| {name} | {statistics.median(sum(returns) / seconds for returns, seconds in runs):,.0f} |")
    print(f"\nBeside a busy process / alone: **{statistics.median(ratios):.2f}x** the time "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}).")


# Limits that each change the run of an unpinned torch on some CPU (see the README), and one that is
# expected to change it: ATen's scalar kernels, which a CPU without AVX2 runs.
LIMITS = {
    "none": {},
    "MKL_ENABLE_INSTRUCTIONS=SSE4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "OMP_NUM_THREADS=3": {"OMP_NUM_THREADS": "3"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default (no AVX2)": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR unset (the port pins COMPATIBLE)": {"MKL_CBWR": ""},
}


def reproducibility(episodes):
    """Seed 543 under each limit, against the run with none: identical returns, episode by episode?"""
    print(f"\n### 5. Reproducibility (seed 543, {episodes} episodes, each in its own process)\n")
    print("| limit | same returns as with none | first episode that differs |\n| --- | :-: | ---: |")
    reference = None
    for name, changes in LIMITS.items():
        returns, _ = history_of_a_run(543, episodes, changes)
        reference = reference or returns
        differ = next((i + 1 for i, (a, b) in enumerate(zip(returns, reference)) if a != b), None)
        same = differ is None and len(returns) == len(reference)
        print(f"| {name} | {'yes' if same else 'NO'} | {differ or ''} |")


def cost_of_the_pin(repeats):
    """MKL's COMPATIBLE branch against MKL's own choice, on the first 100 episodes of seed 543, which
    both take alike (their runs part at episode 129), paired and alternated."""
    pinned, unpinned = alternated(repeats, dict(seed=543, episodes=100),
                                  dict(seed=543, episodes=100, env_changes={"MKL_CBWR": ""}))
    ratios = [pinned_seconds / unpinned_seconds for (_, pinned_seconds), (_, unpinned_seconds) in zip(pinned, unpinned)]
    steps = int(sum(pinned[0][0]))
    print(f"\n### 7. What pinning MKL's branch costs (seed 543, its first 100 episodes: {steps:,} steps, "
          f"{repeats} pairs)\n")
    print(f"Training time with MKL_CBWR=COMPATIBLE / without: **{statistics.median(ratios):.2f}x** "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}).")


def suite_in_solve_runs(repeats):
    """The README's test command against the README's first command, one after the other, alternating: the suite's
    time in default solve runs (recording on, into a temporary folder)."""
    print(f"\n### 9. The test suite in solve runs ({repeats} pairs)\n")
    print("| pair | `python reinforce_cartpole.py` | `python -m pytest tests` | ratio |\n| ---: | ---: | ---: | ---: |")
    ratios = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            commands = {"solve": [sys.executable, str(SCRIPT), "--video-dir", tmp],
                        "suite": [sys.executable, "-m", "pytest", "tests"]}
            seconds = {}
            for name in ("solve", "suite") if repeat % 2 == 0 else ("suite", "solve"):
                start = time.perf_counter()
                subprocess.run(commands[name], cwd=ROOT, capture_output=True, check=True)
                seconds[name] = time.perf_counter() - start
        ratios.append(seconds["suite"] / seconds["solve"])
        print(f"| {repeat + 1} | {seconds['solve']:.1f} s | {seconds['suite']:.1f} s | {ratios[-1]:.2f} |")
    print(f"\nThe suite takes **{statistics.median(ratios):.2f}** solve runs (median; range {min(ratios):.2f}-"
          f"{max(ratios):.2f}).")


def machine():
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"gymnasium {gym.__version__}")


SECTIONS = {  # name: (quick sizes, full sizes)
    "throughput": (lambda a: training_throughput(seeds=[543, 1], episodes=100, repeats=1),
                   lambda a: training_throughput(seeds=[543, 1, 2], episodes=300, repeats=3)),
    "video": (lambda a: video_cost(seed=VIDEO_SEED, episodes=150, repeats=2),
              lambda a: video_cost(seed=VIDEO_SEED, episodes=500, repeats=5)),
    "solving": (lambda a: episodes_to_solve(seeds="0-3", max_episodes=400, figure=a.seeds_figure),
                lambda a: episodes_to_solve(seeds="0-19", max_episodes=3000, figure=a.seeds_figure)),
    "memory": (lambda a: peak_memory(max_episodes=50), lambda a: peak_memory(max_episodes=1000)),
    "reproducibility": (lambda a: reproducibility(episodes=150), lambda a: reproducibility(episodes=400)),
    "busy": (lambda a: busy_machine(seed=543, episodes=60, repeats=1), lambda a: busy_machine(543, 300, 5)),
    "pin": (lambda a: cost_of_the_pin(repeats=2), lambda a: cost_of_the_pin(repeats=8)),
    "sweep": (lambda a: sweep_scale(seeds="0-3", max_episodes=100, repeats=1, baseline=a.baseline),
              lambda a: (sweep_scale(seeds="0-7", max_episodes=400, repeats=3, baseline=a.baseline),
                         sweep_scale(seeds="0-5", max_episodes=200, repeats=3, baseline=a.baseline))),
    "start-up": (lambda a: worker_start_up(seeds="0-3", max_episodes=50, workers=2),
                 lambda a: worker_start_up(seeds="0-7", max_episodes=100, workers=os.cpu_count())),
    "suite": (lambda a: suite_in_solve_runs(repeats=1), lambda a: suite_in_solve_runs(repeats=3)),
    "budgets": (lambda a: budgets(), lambda a: budgets()),
    "summary": (lambda a: summary_speed(100, 2, repeats=3), lambda a: summary_speed(100, 2, repeats=5)),
    "profiler": (lambda a: worker_profiler(max_episodes=50, repeats=1), lambda a: worker_profiler(150, repeats=5)),
    "verdicts": (lambda a: verdict_rates(20, (6, 10), (2, 3)), lambda a: verdict_rates(200, (6, 10, 20), (2, 3, 5))),
}


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmark the port against the tutorial's code as written.")
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute (default: full run)")
    p.add_argument("--only", choices=SECTIONS, action="append", help="run this section (default: all)")
    p.add_argument("--seeds-figure", metavar="PNG", help="where the solving section's sweep draws its figure "
                   "(default: a temporary file)")
    p.add_argument("--baseline", metavar="SCRIPT", help="an earlier reinforce_cartpole.py that the sweep section "
                   "times beside this one, such as one written by git show REV:reinforce_cartpole.py (default: none)")
    args = p.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    rc.quiet_known_warnings()

    started = time.perf_counter()
    print(f"## Benchmark{' (--quick)' if args.quick else ''}\n\n{machine()}")
    for name, (quick, full) in SECTIONS.items():
        if not args.only or name in args.only:
            (quick if args.quick else full)(args)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


# A seed that does not solve CartPole-v0 within 500 episodes, so that the video comparison
# runs all 500 (and records episodes 0, 1, 8, 27, 64, 125, 216 and 343).
VIDEO_SEED = 0

if __name__ == "__main__":
    main()
