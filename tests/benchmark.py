"""Benchmark: the port against the tutorial's code as written. Prints markdown tables.

    python tests/benchmark.py            # full run, several minutes
    python tests/benchmark.py --quick    # about a minute

A script, not a test: pytest collects only test_*.py. Contenders alternate on the same seeds
within one run, and every comparison is a ratio from that run, because these machines are
shared and noisy.
"""

import argparse
import contextlib
import csv
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributions import Categorical

from ignite.engine import Engine, Events

import gymnasium as gym
from gymnasium.wrappers import RecordVideo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reinforce_cartpole.py"
sys.path.insert(0, str(ROOT))
import reinforce_cartpole as rc  # noqa: E402


# --- The tutorial's code path, as written ----------------------------------------------
# Copied from the tutorial text with its lost lines restored. Only the port's two correctness
# fixes are kept: `done` includes `truncated`, and torch is seeded before the Policy is built.
# Everything else is as written: gym.make with its env checker, Categorical with argument
# validation, env.render() on every step when rendering, RecordVideo's defaults.


def run_as_written(seed=543, max_episodes=1000000, render=False, video_dir=None, log_interval=100):
    """Returns the per-episode rewards."""
    seed_val = seed
    gamma = 0.99

    env = gym.make("CartPole-v0", render_mode="rgb_array")
    if render:
        env = RecordVideo(env, video_dir, disable_logger=True)

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(128, 2)

            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    torch.manual_seed(seed_val)  # kept fix: seeding
    policy = Policy()
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()
    timesteps = range(10000)

    def run_single_timestep(engine, timestep):
        observation = engine.state.observation
        action = select_action(policy, observation)
        engine.state.observation, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated  # kept fix: truncation
        if render:
            env.render()
        policy.rewards.append(reward)
        engine.state.ep_reward += reward
        if done:
            engine.terminate_epoch()
            engine.state.timestep = timestep

    trainer = Engine(run_single_timestep)

    def select_action(policy, observation):
        state = torch.from_numpy(observation).float().unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    def finish_episode(policy, optimizer, gamma):
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        del policy.rewards[:]
        del policy.saved_log_probs[:]

    EPISODE_STARTED = Events.EPOCH_STARTED
    EPISODE_COMPLETED = Events.EPOCH_COMPLETED

    trainer.state.running_reward = 10
    episode_rewards = []

    @trainer.on(EPISODE_STARTED)
    def reset_environment_state():
        torch.manual_seed(seed_val + trainer.state.epoch)
        trainer.state.observation, _ = env.reset(seed=seed_val + trainer.state.epoch)
        trainer.state.ep_reward = 0

    @trainer.on(EPISODE_COMPLETED)
    def update_model():
        trainer.state.running_reward = 0.05 * trainer.state.ep_reward + (1 - 0.05) * trainer.state.running_reward
        finish_episode(policy, optimizer, gamma)
        episode_rewards.append(trainer.state.ep_reward)

    @trainer.on(EPISODE_COMPLETED(every=log_interval))
    def log_episode():
        i_episode = trainer.state.epoch
        print(
            f"Episode {i_episode}\tLast reward: {trainer.state.ep_reward:.2f}"
            f"\tAverage length: {trainer.state.running_reward:.2f}"
        )

    @trainer.on(EPISODE_COMPLETED)
    def should_finish_training():
        running_reward = trainer.state.running_reward
        if running_reward > env.spec.reward_threshold:
            print(
                f"Solved! Running reward is now {running_reward} and "
                f"the last episode runs to {trainer.state.timestep} time steps!"
            )
            trainer.should_terminate = True

    trainer.run(timesteps, max_epochs=max_episodes)
    env.close()
    return episode_rewards


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


def video_cost(seed, episodes, repeats):
    """Rendering on against off for the port, and the as-written path with rendering on."""
    runs = {"port, rendering off": [], "port, rendering on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            order = [("port, rendering off", False), ("port, rendering on", True)]
            if repeat % 2:
                order.reverse()
            for name, render in order:
                rewards, seconds = timed(run_port, seed=seed, max_episodes=episodes, render=render,
                                         video_dir=os.path.join(tmp, f"port-{repeat}"))
                steps = sum(rewards)
                runs[name].append((steps / rewards.training_seconds, steps / seconds))
        rewards, seconds = timed(run_as_written, seed=seed, max_episodes=episodes, render=True,
                                 video_dir=os.path.join(tmp, "as-written"))
        clips = len(os.listdir(os.path.join(tmp, "as-written")))
    as_written = sum(rewards) / seconds
    off_training, off_whole = (statistics.median(v) for v in zip(*runs["port, rendering off"]))
    on_training, on_whole = (statistics.median(v) for v in zip(*runs["port, rendering on"]))
    print(f"\n### 2. The cost of video (seed {seed}, {len(rewards)} episodes, {clips} training clips, "
          f"{repeats} runs each)\n")
    print("Training: env steps/s from the first episode to the end of the last (the port's --history).\n"
          "Whole run: from main() to its return, with the worker's start, the wait for the last clip\n"
          "and, with rendering on, the trained-agent episode and its clip.\n")
    print("| run | env steps/s, training | env steps/s, whole run | whole run vs port, rendering off |\n"
          "| --- | ---: | ---: | ---: |")
    print(f"| port, rendering off | {off_training:,.0f} | {off_whole:,.0f} | 1.00 |")
    print(f"| port, rendering on | {on_training:,.0f} | {on_whole:,.0f} | {on_whole / off_whole:.2f} |")
    print(f"| as written, rendering on | | {as_written:,.0f} | {as_written / off_whole:.2f} |")
    print(f"\nRendering on costs the port **{(1 - on_training / off_training) * 100:.1f} %** of its training "
          f"throughput and {(1 - on_whole / off_whole) * 100:.1f} % of its whole-run throughput. "
          f"The as-written path with rendering on is **{off_whole / as_written:.1f}x** slower than the port "
          f"with rendering off.")


def solve_run(seed, max_episodes):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-render", "--seed", str(seed),
         "--max-episodes", str(max_episodes), "--log-interval", str(10 ** 9)],
        capture_output=True, text=True,
    )
    episodes = int(result.stdout.split("\tepoch: ")[1].split()[0])
    return {"seed": seed, "solved": result.returncode == 0, "episodes": episodes,
            "seconds": time.perf_counter() - start}


def quantile90(values):
    return statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]


def episodes_to_solve(seeds, max_episodes):
    """Each seed in its own process, two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda seed: solve_run(seed, max_episodes), seeds))
    solved = [run for run in runs if run["solved"]]
    print(f"\n### 3. Episodes and seconds to solve CartPole-v0 (seeds {seeds[0]}-{seeds[-1]}, "
          f"at most {max_episodes} episodes, two processes at a time)\n")
    print(f"Solved: **{len(solved)}/{len(runs)}**"
          + (f" (not solved: seeds {', '.join(str(r['seed']) for r in runs if not r['solved'])})"
             if len(solved) < len(runs) else ""))
    if solved:
        print("\n| | median | 90th percentile | min | max |\n| --- | ---: | ---: | ---: | ---: |")
        for key, fmt in (("episodes", "{:,.0f}"), ("seconds", "{:.1f}")):
            values = [run[key] for run in solved]
            cells = [statistics.median(values), quantile90(values), min(values), max(values)]
            print(f"| {key} | " + " | ".join(fmt.format(v) for v in cells) + " |")
    print("\n| seed | " + " | ".join(str(r["seed"]) for r in runs) + " |")
    print("| --- | " + " | ".join("---:" for _ in runs) + " |")
    print("| episodes | " + " | ".join(f"{r['episodes']}{'' if r['solved'] else '*'}" for r in runs) + " |")


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_memory(max_episodes):
    """Peak resident set of one training run: the largest of its processes (ru_maxrss)."""
    print(f"\n### 4. Peak resident memory of one training run (seed 543, at most {max_episodes} episodes)\n")
    print("| run | peak RSS |\n| --- | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in (("rendering off", ["--no-render"]), ("rendering on", ["--video-dir", tmp])):
            out = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, str(SCRIPT),
                                  "--max-episodes", str(max_episodes), *flags],
                                 capture_output=True, text=True, check=True).stdout
            print(f"| {name} | {int(out.split()[-1]) / 1024:.0f} MiB |")


def reproducibility(episodes):
    runs = {}
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        runs.setdefault(threads, []).append(timed(run_port, seed=543, max_episodes=episodes)[0])
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"\n### 5. Reproducibility (seed 543, {episodes} episodes)\n")
    print(f"- same seed, two runs, 1 torch thread: identical per-episode rewards: "
          f"**{'yes' if runs[1][0] == runs[1][1] else 'NO'}**")
    print(f"- 1 against 2 torch threads: identical: **{'yes' if runs[1][0] == runs[2][0] else 'NO'}**")


def machine():
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), gymnasium {gym.__version__}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmark the port against the tutorial's code as written.")
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute (default: full run)")
    args = p.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import warnings

    warnings.filterwarnings("ignore", message=".*is out of date. You should consider upgrading")
    warnings.filterwarnings("ignore", message=".*Overwriting existing videos at")

    started = time.perf_counter()
    print(f"## Benchmark{' (--quick)' if args.quick else ''}\n\n{machine()}")
    if args.quick:
        training_throughput(seeds=[543, 1], episodes=100, repeats=1)
        video_cost(seed=VIDEO_SEED, episodes=150, repeats=1)
        episodes_to_solve(seeds=list(range(4)), max_episodes=400)
        peak_memory(max_episodes=50)
        reproducibility(episodes=50)
    else:
        training_throughput(seeds=[543, 1, 2], episodes=300, repeats=3)
        video_cost(seed=VIDEO_SEED, episodes=500, repeats=3)
        episodes_to_solve(seeds=list(range(20)), max_episodes=3000)
        peak_memory(max_episodes=1000)
        reproducibility(episodes=400)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


# A seed that does not solve CartPole-v0 within 500 episodes, so that the video comparison
# runs all 500 (and records episodes 0, 1, 8, 27, 64, 125, 216 and 343).
VIDEO_SEED = 0

if __name__ == "__main__":
    main()
