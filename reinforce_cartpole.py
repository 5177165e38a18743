"""REINFORCE on CartPole: a runnable port of the PyTorch-Ignite tutorial "Reinforcement Learning with Ignite".

The first part is the tutorial, section by section, with its names; "Tutorial fix" marks where it is
wrong. The second part is what a script needs beyond a notebook: input checks, outputs, evaluation, many
seeds on ignite.distributed, and signals.
"""

import os
import signal
import sys

# One run per seed on every x86-64 CPU: MKL does torch's matrix products and logarithms there, and picks
# its code by CPU unless its COMPATIBLE branch is pinned. MKL reads this at its first call.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

if __name__ == "__main__":
    # torch takes a second or two to import. A Ctrl-C meanwhile, or after main() has returned, ends
    # the process as SIGINT does by default (a shell reports status 130), not with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from collections import deque
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributions import Categorical

from ignite.engine import Engine, Events

import gymnasium as gym
from gymnasium.wrappers import RecordVideo

import argparse
import contextlib
import errno
import importlib.util
import io
import itertools
import json
import logging
import multiprocessing
import re
import socket
import tempfile
import threading
import time
import warnings
from collections import Counter, namedtuple
from types import SimpleNamespace

import ignite.distributed as idist
import torch.distributed as dist
from gymnasium.wrappers import HumanRendering
from ignite.handlers import Checkpoint
from ignite.utils import setup_logger
from torch.multiprocessing import ProcessExitedException

PROG = "reinforce_cartpole.py"

# ======== The tutorial, section by section ===========================================
# --- Configurable Parameters ---------------------------------------------------------
def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description="REINFORCE on CartPole, trained by a PyTorch-Ignite Engine.",
                       epilog="Exit status: 0 solved, --play done, or every run of --seeds finished; 1 not solved "
                              "within --max-episodes; 2 bad usage; 3 an output could not be written; 4 a worker of "
                              "--seeds was lost; 130 / 143 stopped by SIGINT / SIGTERM (a second one stops at once).")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default: 543)")
    p.add_argument("--gamma", type=numbers(float), default=[0.99], metavar="G",
                   help="discount factor, in (0, 1]; several, comma-separated, with --seeds (default: 0.99)")
    p.add_argument("--log-interval", type=int, default=100, metavar="N", help="episodes between logs (default: 100)")
    p.add_argument("--max-episodes", type=int, default=1000000, metavar="N", help="episodes at most (default: 1000000)")
    p.add_argument("--render", action=argparse.BooleanOptionalAction,
                   help="record videos (default: on, and off with --seeds)")
    # Beyond the tutorial's parameters:
    p.add_argument("--lr", type=numbers(float), default=[0.01], metavar="LR",
                   help="Adam's learning rate; several, comma-separated, with --seeds (default: 0.01)")
    p.add_argument("--env-id", metavar="ID",
                   help="a gymnasium env with a flat Box observation and Discrete actions (default: CartPole-v0)")
    p.add_argument("--seeds", type=seed_list, metavar="LIST",
                   help="train every one of these seeds, such as 0-19 or 1,5,9, with every --lr and --gamma, "
                        "and summarize (default: one run, of --seed)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes for --seeds (default: the cores this process may use, at most one per run)")
    p.add_argument("--video-dir", default="video", metavar="DIR", help="where recordings go (default: video)")
    p.add_argument("--save-model", metavar="PATH", help="save the policy when training ends or is stopped")
    p.add_argument("--play", metavar="PATH", help="play a --save-model checkpoint instead of training")
    p.add_argument("--eval-episodes", type=int, default=10, metavar="N",
                   help="episodes that score the trained agent, or that --play runs (default: 10)")
    p.add_argument("--history", metavar="PATH", help="write one CSV row per episode")
    p.add_argument("--plot", metavar="PATH", help="draw the learning curve, or with --seeds every run's, as a PNG")
    p.add_argument("--tensorboard", metavar="DIR", help="log each run's curves for TensorBoard under DIR")
    p.add_argument("--watch", action="store_true", help="show the trained agent, or --play, in a window (default: off)")
    return p.parse_args(argv)


# --- Setting up the Environment ------------------------------------------------------
def make_env(env_id):
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as e:
        raise UsageError(f"--env-id {env_id}: {str(e).splitlines()[0]}") from None
    check_spaces(env_id, env)
    return env


def wrap_env(env, video_folder, stop, **kwargs):
    # gc_trigger=None: skips the gc.collect() that RecordVideo runs after every clip by default.
    return ClipRecorder(env, video_folder, stop, disable_logger=True, gc_trigger=None, **kwargs)


# --- Policy --------------------------------------------------------------------------
class Policy(nn.Module):
    # The tutorial hard-codes 4 observations and 2 actions; create_model takes them from the env.
    def __init__(self, observation_size=4, n_actions=2):
        super(Policy, self).__init__()
        self.affine1 = nn.Linear(observation_size, 128)
        self.dropout = nn.Dropout(p=0.6)
        self.affine2 = nn.Linear(128, n_actions)

        self.saved_log_probs = []
        self.rewards = []

    def forward(self, x):
        x = self.affine1(x)
        x = self.dropout(x)
        x = F.relu(x)
        action_scores = self.affine2(x)
        return F.softmax(action_scores, dim=1)


# --- Model, optimizer, epsilon and timesteps -----------------------------------------
def create_model(env, seed, lr):
    # Tutorial fix: it never seeds before building the Policy, so no run could be repeated.
    torch.manual_seed(seed)
    policy = Policy(env.observation_space.shape[0], int(env.action_space.n))
    # The port's own choice, for one run per seed on every x86-64 CPU: fused=True. Adam's default step takes square
    # roots with MKL's vector math, which starts from an estimate that Intel and AMD CPUs make differently; the fused
    # step takes exact square roots.
    optimizer = optim.Adam(policy.parameters(), lr=lr, fused=True)
    return policy, optimizer


eps = np.finfo(np.float32).eps.item()
timesteps = range(10000)


# --- Create Trainer ------------------------------------------------------------------
def create_trainer(env, policy):
    """An iteration is a timestep, an epoch is an episode."""

    def run_single_timestep(engine, timestep):
        observation = engine.state.observation
        action = select_action(policy, observation)
        engine.state.observation, reward, terminated, truncated, _ = env.step(action)
        # Tutorial fix: its `done` ignores `truncated`, so episodes ran past the time limit.
        done = terminated or truncated
        # Tutorial fix: no env.render() here: RecordVideo renders what it records, and a frame costs more than a step.
        policy.rewards.append(reward)
        engine.state.ep_reward += reward

        if done:
            engine.terminate_epoch()
            engine.state.timestep = timestep

    return Engine(run_single_timestep)


def select_action(policy, observation):
    state = torch.from_numpy(observation).float().unsqueeze(0)
    probs = policy(state)
    # validate_args=False: the check costs more than the sampling and cannot change the sample.
    m = Categorical(probs, validate_args=False)
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


# --- Attach handlers to run on specific events ---------------------------------------
EPISODE_STARTED = Events.EPOCH_STARTED
EPISODE_COMPLETED = Events.EPOCH_COMPLETED


def attach_handlers(trainer, env, policy, optimizer, seed, gamma, log_interval):
    trainer.state.running_reward = 10

    @trainer.on(EPISODE_STARTED)
    def reset_environment_state():
        torch.manual_seed(seed + trainer.state.epoch)
        trainer.state.observation, _ = env.reset(seed=seed + trainer.state.epoch)
        trainer.state.ep_reward = 0

    @trainer.on(EPISODE_COMPLETED)
    def update_model():
        trainer.state.running_reward = 0.05 * trainer.state.ep_reward + (1 - 0.05) * trainer.state.running_reward
        finish_episode(policy, optimizer, gamma)

    @trainer.on(EPISODE_COMPLETED(every=log_interval))
    def log_episode():
        i_episode = trainer.state.epoch
        # Tutorial fix: its code labels the running reward "Average length".
        print(
            f"Episode {i_episode}\tLast reward: {trainer.state.ep_reward:.2f}"
            f"\tRunning reward: {trainer.state.running_reward:.2f}"
        )

    @trainer.on(EPISODE_COMPLETED)
    def should_finish_training():
        running_reward = trainer.state.running_reward
        # The tutorial compares with the threshold alone; is_solved also asks for 100 episodes.
        if is_solved(running_reward, trainer.state.epoch, env.spec.reward_threshold):
            print(
                f"Solved! Running reward is now {running_reward} and "
                f"the last episode runs to {trainer.state.timestep} time steps!"
            )
            trainer.should_terminate = True


# --- Run Trainer ---------------------------------------------------------------------
def train(env, run, args, stop, attach_outputs):
    """One run of one seed, as the tutorial trains it, printing only its lines. attach_outputs(trainer, policy,
    optimizer) adds what the run records. Returns the trainer, whose state holds the result, and the policy."""
    policy, optimizer = create_model(env, run.seed, run.lr)
    trainer = create_trainer(env, policy)
    attach_handlers(trainer, env, policy, optimizer, run.seed, run.gamma, args.log_interval)
    stop.attach(trainer)
    attach_outputs(trainer, policy, optimizer)
    # Ignite logs the exception that ends a run, which reaches the user anyway (or is a closed pipe).
    trainer.logger.addFilter(lambda record: "terminating due to exception" not in record.getMessage())
    with contextlib.closing(env):  # closing env writes the clip in progress
        trainer.run(timesteps, max_epochs=args.max_episodes)
    print(trainer.state)
    return trainer, policy


# ======== Beyond the tutorial: input checks, outputs, evaluation, many seeds, signals ==

def is_solved(running_reward, episodes, threshold):
    # Not in the tutorial: "solved" also needs 100 episodes, as the running reward starts at 10, above thresholds
    # such as Acrobot's -100. On CartPole it binds only if 195 is passed within 99 episodes; perfect play takes 71.
    return threshold is not None and episodes >= 100 and running_reward > threshold


# --- Input checks: one line on stderr and exit status 2, before anything is written ---
class UsageError(Exception):
    pass


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)  # one line, no usage dump, like every other bad input


def numbers(kind):
    """An argparse type: one value, or several separated by commas."""
    def parse(text):
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
    return parse


def seed_list(text):
    """An argparse type: seeds such as 0-19, 1,5,9 or 0-4,10, each listed once."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the list of seeds is empty")
    seeds = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or int(match[2] or match[1]) < int(match[1]):
            raise argparse.ArgumentTypeError(f"{text!r}: expected seeds such as 0-19 or 1,5,9, not {part!r}")
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    twice = [seed for seed, count in Counter(seeds).items() if count > 1]
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r}: seed {twice[0]} is listed twice")
    return seeds


def check_spaces(env_id, env):
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UsageError(f"--env-id {env_id}: the action space must be Discrete, not {env.action_space}")
    if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
        raise UsageError(f"--env-id {env_id}: the observation must be a flat Box, not {env.observation_space}")


def check_writable(flag, path, is_directory=False):
    """Proves that `path` can be written, creating nothing: the nearest folder on it that exists takes a file."""
    if os.path.isdir(path) and not is_directory:
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    folder = os.path.abspath(path if is_directory else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(folder) and folder != os.path.dirname(folder):  # up to the root, or a missing drive
        folder = os.path.dirname(folder)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot be created or written ({e.strerror or e})") from None


def check_display():
    if sys.platform.startswith("linux"):
        drivers = [name for name, var in (("x11", "DISPLAY"), ("wayland", "WAYLAND_DISPLAY")) if os.environ.get(var)]
        if not drivers:
            raise UsageError("--watch needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")
        os.environ["SDL_VIDEODRIVER"] = os.environ.get("SDL_VIDEODRIVER") or ",".join(drivers)  # none off-screen
    import pygame
    try:
        pygame.display.init()  # HumanRendering will open its window on this display
    except pygame.error as e:
        raise UsageError(f"--watch: cannot open a window ({e})") from None


def check_sweep(args):
    """--seeds and the flags that go with it; fills in the defaults that depend on it."""
    sweep, under_torchrun = args.seeds is not None, "TORCHELASTIC_RUN_ID" in os.environ
    for flag, values in (("--gamma", args.gamma), ("--lr", args.lr)):
        if len(values) > 1 and not sweep:
            raise UsageError(f"argument {flag}: several values need --seeds")
        if len(set(values)) < len(values):
            raise UsageError(f"argument {flag}: a value is listed twice")
    if sweep:
        for flag, value in (("--seed", args.seed), ("--play", args.play), ("--save-model", args.save_model),
                            ("--watch", args.watch or None)):
            if value is not None:
                raise UsageError(f"{flag} applies to a single run, not to --seeds")
        if under_torchrun and args.workers is not None:
            raise UsageError("--workers: under torchrun, its --nnodes and --nproc-per-node set the workers")
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"argument --workers: must be >= 1, got {args.workers}")
        runs = len(args.seeds) * len(args.lr) * len(args.gamma)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        args.workers = args.workers or min(cores, runs)
    elif args.workers is not None:
        raise UsageError("--workers applies to --seeds")
    elif under_torchrun:
        raise UsageError("under torchrun, give --seeds: a single run trains in one process")
    args.seed = 543 if args.seed is None else args.seed
    args.render = not sweep if args.render is None else args.render


def check_inputs(args):
    """Every check that bad input can fail. Returns the env and the policy of a --play checkpoint."""
    check_sweep(args)
    for gamma in args.gamma:
        if not 0 < gamma <= 1:
            raise UsageError(f"argument --gamma: must be in (0, 1], got {gamma:g}")
    for lr in args.lr:
        if not lr > 0:
            raise UsageError(f"argument --lr: must be > 0, got {lr:g}")
    for flag, count in (("--log-interval", args.log_interval), ("--max-episodes", args.max_episodes),
                        ("--eval-episodes", args.eval_episodes)):
        if count < 1:
            raise UsageError(f"argument {flag}: must be >= 1, got {count}")
    outputs = {"--save-model": args.save_model, "--history": args.history, "--plot": args.plot}
    for flag, value in {"--env-id": args.env_id, "--tensorboard": args.tensorboard, **outputs}.items():
        if args.play and value:
            raise UsageError(f"{flag} applies to training, not to --play")
    needs = {"--render": (args.render, ("moviepy", "pygame"), "moviepy and pygame-ce", ", or --no-render"),
             "--tensorboard": (args.tensorboard, ("tensorboard",), "tensorboard", "")}
    for flag, (used, modules, packages, otherwise) in needs.items():
        if used and not all(importlib.util.find_spec(module) for module in modules):
            raise UsageError(f"{flag} needs {packages}: pip install -r requirements.txt{otherwise}")
    if args.watch:
        check_display()
    checkpoint = load_checkpoint(args.play) if args.play else None
    if not args.play:
        args.env_id = args.env_id or "CartPole-v0"
        make_env(args.env_id).close()
    for flag, path in outputs.items():
        if path:
            check_writable(flag, path)
    for flag, folder in (("--video-dir", args.render and args.video_dir), ("--tensorboard", args.tensorboard)):
        if folder:
            check_writable(flag, folder, is_directory=True)
    return checkpoint


# --- Runs: a setting and a seed --------------------------------------------------------
Run = namedtuple("Run", "lr gamma seed")


def describe(run):
    return f"lr {run.lr:g}, gamma {run.gamma:g}, seed {run.seed}"


def run_name(run):
    """The run's folder name for its clips in a sweep, and for TensorBoard."""
    return f"lr{run.lr:g}-gamma{run.gamma:g}-seed{run.seed}"


# --- Recording -----------------------------------------------------------------------
@contextlib.contextmanager
def signals_deferred():
    """Holds SIGINT and SIGTERM until the block is done, so that no stop leaves a file half-written (not on Windows)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ClipRecorder(RecordVideo):
    """gymnasium's RecordVideo, with its schedule and file names, that writes each clip whole or not at all and
    prints its path. A clip that cannot be written ends the recording, not the run."""

    def __init__(self, env, video_folder, stop, **kwargs):
        super().__init__(env, video_folder, **kwargs)
        self.folder_as_given, self.stop = video_folder, stop  # RecordVideo keeps the folder as an absolute path

    def start_recording(self, video_name):
        super().start_recording(video_name)
        self.clip_path = os.path.join(self.folder_as_given, f"{video_name}.mp4")

    def stop_recording(self):
        frames, self.recorded_frames, self.recording = self.recorded_frames, [], False
        if not frames:
            return
        try:
            with signals_deferred():  # ffmpeg inherits the mask, so a terminal's Ctrl-C cannot cut the clip short
                write_whole(self.clip_path, lambda path: write_clip(path, frames, self.frames_per_sec))
        except OSError as e:
            self.stop.write_failed("clip", self.clip_path, e)
            self.episode_trigger = self.step_trigger = None  # RecordVideo starts no more clips
        else:
            print(f"Video: {self.clip_path}")


def write_clip(path, frames, fps):
    """Encodes the frames as RecordVideo does, with moviepy's ffmpeg writer, but raises OSError when ffmpeg fails:
    moviepy does not check ffmpeg's exit status, and a full disk would leave a clip that does not play."""
    from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter
    height, width = frames[0].shape[:2]
    writer = FFMPEG_VideoWriter(path, (width, height), fps)
    try:
        for frame in frames:
            writer.write_frame(frame)
        writer.proc.stdin.close()
        message = writer.proc.stderr.read().decode(errors="replace")
        if writer.proc.wait() != 0:
            raise OSError(message)
    finally:
        writer.close()


# --- Writing files whole, and saying why one could not be written --------------------
def write_whole(path, write):
    """Calls write(temporary_path) in path's folder, then renames the result to path. So the file is whole or not
    there, a file it replaces stays as it was until then, and a failed write leaves no temporary file."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp{os.path.splitext(name)[1]}")  # ffmpeg reads the end
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def append_lines(path, lines, mode="a"):
    """Writes whole lines at the end of the file, or nothing: a failed write is cut back off."""
    size = os.path.getsize(path) if mode == "a" and os.path.isfile(path) else 0
    try:
        with open(path, mode, newline="") as f:
            f.write("".join(line + "\n" for line in lines))
    except OSError:
        if os.path.isfile(path):  # not a device such as /dev/full
            with contextlib.suppress(OSError):
                os.truncate(path, size) if size else os.remove(path)
        raise


def save_torch(obj, path):
    with open(path, "wb") as f:  # a file object: torch's own writer would turn the OS's error into its own
        torch.save(obj, f)


OS_REASONS = [os.strerror(code) for code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO,
                                             errno.ENOENT, errno.EROFS, errno.EACCES, errno.EFBIG)]


def os_reason(error):
    """The OS's words for a failed write: its own, or those that ffmpeg's message quotes."""
    text = error.strerror or str(error).strip() or type(error).__name__
    return next((reason for reason in OS_REASONS if reason in text), text.splitlines()[-1])


class HistoryFile:
    """The --history CSV, a whole row at a time, so that it is valid however the run ends. A row that cannot be
    written ends the run, as a stop does."""

    COLUMNS = ("lr", "gamma", "seed", "episode", "length", "return", "running_reward", "seconds")

    def __init__(self, path, stop):
        self.path, self.stop = path, stop
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # every check has passed
            self.write([self.COLUMNS], mode="w")

    def write(self, rows, mode="a"):
        if self.path and "history" not in self.stop.failed:
            with self.stop.reporting_write_errors("history", self.path):
                append_lines(self.path, [",".join(map(str, values)) for values in rows], mode)


# --- What a run leaves: its rows, TensorBoard's curves, the checkpoint, the plot, its score --
class RunOutputs:
    """What one run records: a row per episode (episode, length, return, running reward, seconds) handed to
    `send_row`, the curves for TensorBoard, and after training the checkpoint, the plot and the trained agent's score."""

    def __init__(self, args, run, stop, send_row, video_dir):
        self.args, self.run, self.stop, self.send_row, self.video_dir = args, run, stop, send_row, video_dir
        self.rows, self.tensorboard = [], None

    def attach(self, trainer, policy, optimizer):
        self.trainer, self.policy, self.last_iteration, self.started = trainer, policy, 0, time.perf_counter()
        trainer.add_event_handler(EPISODE_COMPLETED, self.record_episode)
        if self.args.tensorboard:
            from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger
            self.tensorboard = TensorboardLogger(log_dir=os.path.join(self.args.tensorboard, run_name(self.run)),
                                                 flush_secs=5)
            names = ("length", "return", "running_reward")
            self.tensorboard.attach(trainer, OutputHandler("episode", output_transform=lambda _: dict(
                zip(names, self.rows[-1][1:4]))), EPISODE_COMPLETED)
        if self.args.save_model:
            directory, name = os.path.split(os.path.abspath(self.args.save_model))
            # Ignite's Checkpoint saves anything with a state_dict(): `info` is what --play needs.
            info = SimpleNamespace(state_dict=lambda: {"env_id": self.args.env_id, "seed": self.run.seed,
                                                       "episodes": len(self.rows),
                                                       "running_reward": trainer.state.running_reward})
            # Not Ignite's DiskSaver: it leaves its temporary file behind when closing it fails, as on a full disk.
            save = lambda checkpoint, filename, metadata: write_whole(os.path.join(directory, filename),  # noqa: E731
                                                                      lambda path: save_torch(checkpoint, path))
            self.checkpoint = Checkpoint({"policy": policy, "optimizer": optimizer, "info": info}, save,
                                         filename_pattern=name.replace("{", "{{").replace("}", "}}"))

    def record_episode(self):
        state = self.trainer.state
        self.rows.append((state.epoch, state.iteration - self.last_iteration, state.ep_reward,
                          round(state.running_reward, 6), round(time.perf_counter() - self.started, 3)))
        self.last_iteration = state.iteration
        self.send_row(self.rows[-1])

    def write_plot_and_checkpoint(self, threshold):
        args, title = self.args, f"REINFORCE on {self.args.env_id}: {describe(self.run)}"
        with signals_deferred():  # so that no stop leaves them half-written
            if args.plot:
                with self.stop.reporting_write_errors("plot", args.plot):
                    write_whole(args.plot, lambda path: write_plot(path, self.rows, threshold, title))
            if args.save_model:
                with self.stop.reporting_write_errors("checkpoint", args.save_model):
                    self.checkpoint(self.trainer)

    def score(self):
        """The trained agent in eval mode for --eval-episodes episodes, the first recorded: their (return, length)."""
        env = agent_env(self.args, self.stop, self.video_dir, "trained-agent", lambda episode: episode == 0)
        results = [] if self.stop.stopping else evaluate(self.policy, env, self.args.eval_episodes, self.run.seed,
                                                         self.args, self.stop)
        if self.tensorboard:
            if results:
                mean = float(np.mean([total for total, _ in results]))
                self.tensorboard.writer.add_scalar("trained_agent/mean_return", mean, len(self.rows))
            self.tensorboard.close()
        return results

    def report(self, threshold):
        """A single run's ending: the plot, the checkpoint, the trained agent's score, and the exit status."""
        self.write_plot_and_checkpoint(threshold)
        results = self.score()
        if results:
            print(f"Trained agent, {len(results)} episodes in eval mode: {describe_returns(results)}")
        if self.stop.stopping:
            return self.stop.exit(f"trained {len(self.rows)} episodes")
        state = self.trainer.state
        if is_solved(state.running_reward, state.epoch, threshold):
            return self.stop.status(0)
        print(f"Not solved in {state.epoch} episodes (--max-episodes {self.args.max_episodes})")
        return self.stop.status(1)


def write_plot(path, rows, threshold, title):
    """Episode return and running reward against the episode, as a PNG."""
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global state
    episodes = [row[0] for row in rows]
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(episodes, [row[2] for row in rows], color="tab:blue", alpha=0.35, lw=0.8, label="episode return")
    ax.plot(episodes, [row[3] for row in rows], color="tab:orange", lw=2, label="running reward")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"reward threshold ({threshold:g})")
    solved = next((row[0] for row in rows if is_solved(row[3], row[0], threshold)), None)
    if solved is not None:
        ax.axvline(solved, color="tab:green", ls=":", lw=1.5, label=f"solved at episode {solved}")
    ax.set(title=title, xlabel="episode", ylabel="reward")
    ax.legend(loc="lower right")
    fig.savefig(path, format="png")


def train_and_report(args, stop):
    """A single run, and everything it leaves."""
    run = Run(args.lr[0], args.gamma[0], args.seed)
    env = make_env(args.env_id)
    threshold = env.spec.reward_threshold
    if args.render:
        env = wrap_env(env, args.video_dir, stop)
    history = HistoryFile(args.history, stop)
    outputs = RunOutputs(args, run, stop, lambda row: history.write([(*run, *row)]), args.video_dir)
    train(env, run, args, stop, outputs.attach)
    return outputs.report(threshold)


# --- Evaluation: the trained agent and --play, recorded and watched ------------------
def agent_env(args, stop, video_dir, name_prefix, episode_trigger, env=None):
    """An env for the trained agent, recording the episodes of episode_trigger and with --watch in a window."""
    env = env or make_env(args.env_id)
    if args.render and "clip" not in stop.failed:
        env = wrap_env(env, video_dir, stop, name_prefix=name_prefix, episode_trigger=episode_trigger)
    return HumanRendering(env) if args.watch else env  # a window, at the env's frame rate


def evaluate(policy, env, episodes, seed, args, stop):
    """Plays the policy in eval mode (no dropout). Returns the finished episodes' (return, length)."""
    if args.watch:
        import pygame  # HumanRendering draws with it, and a closed window leaves a QUIT event
    seed += 10_000_000  # clear of the training episodes' seeds, seed + episode
    policy.eval()
    results = []
    with torch.no_grad(), contextlib.closing(env):
        for episode in range(episodes):
            torch.manual_seed(seed + episode)
            observation, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not (done or stop.stopping or args.watch and pygame.event.peek(pygame.QUIT)):
                observation, reward, terminated, truncated, _ = env.step(select_action(policy, observation))
                total, length, done = total + reward, length + 1, terminated or truncated
            del policy.saved_log_probs[:]
            if not done:  # stopped, or the window was closed
                break
            results.append((total, length))
    return results


def describe_returns(results):
    returns = np.array([total for total, _ in results])
    return f"return {returns.mean():.2f} ± {returns.std():.2f} (min {returns.min():g}, max {returns.max():g})"


def load_checkpoint(path):
    """The env and the policy of a --save-model checkpoint, or a UsageError."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        env_id, weights = saved["info"]["env_id"], saved["policy"]
    except OSError as e:
        raise UsageError(f"--play {path}: {e.strerror}") from None
    except Exception:
        raise UsageError(f"--play {path}: not a checkpoint written by --save-model") from None
    env = make_env(env_id)
    policy = Policy(env.observation_space.shape[0], int(env.action_space.n))
    try:
        policy.load_state_dict(weights)
    except Exception:
        raise UsageError(f"--play {path}: its weights do not fit a policy for {env_id}") from None
    return env, policy


def play(args, env, policy, stop):
    env = agent_env(args, stop, args.video_dir, "play", lambda episode: True, env)
    results = evaluate(policy, env, args.eval_episodes, args.seed, args, stop)
    if results:
        print(f"Played {len(results)} episodes of {env.spec.id} with {args.play}: {describe_returns(results)}")
    return stop.exit(f"played {len(results)} of {args.eval_episodes} episodes") if stop.stopping else stop.status(0)


# --- Many seeds and settings: a sweep on the workers of ignite.distributed -----------
EXIT_WORKER_LOST = 4
LOST_AFTER = 10  # seconds without a word from a worker that has not said goodbye


def sweep(args, stop):
    """Trains every setting with every seed on --workers processes of ignite.distributed, or on those that torchrun
    started. The first worker prints a line as each run finishes, and the summary; the others print nothing."""
    runs = [Run(lr, gamma, seed) for lr in args.lr for gamma in args.gamma for seed in args.seeds]
    setup_logger("ignite.distributed.launcher.Parallel", level=logging.WARNING)  # as Ignite's docs show
    if "TORCHELASTIC_RUN_ID" in os.environ:  # every process of torchrun is a worker
        with idist.Parallel(backend="gloo") as parallel:
            parallel.run(sweep_process, args, runs)
        return 0
    if args.workers == 1:
        return sweep_worker(0, args, runs)  # no process group
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # its "Terminating process" lines
    if hasattr(os, "setsid"):
        stop.forward = lambda signum: [os.kill(child.pid, signum) for child in multiprocessing.active_children()]
    try:
        with idist.Parallel(backend="gloo", nproc_per_node=args.workers, master_addr="127.0.0.1",
                            master_port=free_port()) as parallel:
            parallel.run(sweep_process, args, runs, True)
    except ProcessExitedException as e:
        return e.exit_code if e.error_index == 0 and e.exit_code > 0 else EXIT_WORKER_LOST
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_process(local_rank, args, runs, spawned=False):
    """A worker in a process of its own: its exit status is the sweep's."""
    if spawned and hasattr(os, "setsid"):
        os.setsid()  # out of the terminal's process group: a signal reaches it once, through the launcher
    status = sweep_worker(local_rank, args, runs)
    if status:
        sys.exit(status)


def sweep_worker(local_rank, args, runs):
    """Takes runs from the sweep's queue until none is left or the sweep stops. The first worker also follows the
    others as they report, writes --history and --plot, prints the summary, and returns the exit status."""
    quiet_known_warnings()
    torch.set_num_threads(1)
    hub = Hub(idist.get_rank())
    with Stop() as stop:
        report = SweepReport(args, runs, hub, stop) if hub.rank == 0 else None
        try:
            while not stop.stopping and (index := hub.next_run()) < len(runs):
                hub.send("start", index)
                result = sweep_run(args, runs, index, hub, stop)
                if result:
                    hub.send("done", index, result)
            if stop.stopping:
                hub.ask_to_stop()
            hub.send("bye")
            return report.finish() if report else hub.wait_for_the_end()
        except dist.DistError as e:  # the store went away with the first worker
            print(f"{PROG}: worker {hub.rank} lost the first worker ({str(e).splitlines()[0]})", file=sys.stderr)
            return EXIT_WORKER_LOST


def sweep_run(args, runs, index, hub, stop):
    """One run of the sweep, as --seed would train it, its rows sent on as they come. Returns its result, or None if
    the sweep stopped first."""
    run = runs[index]
    env = make_env(args.env_id)
    threshold = env.spec.reward_threshold
    video_dir = os.path.join(args.video_dir, run_name(run))  # a folder per run: no two write the same clip
    if args.render:
        env = wrap_env(env, video_dir, stop)
    rows = RowSender(hub, index, stop)
    outputs = RunOutputs(args, run, stop, rows.add, video_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # the tutorial's lines of runs side by side would interleave
        state = train(env, run, args, stop, outputs.attach)[0].state
        rows.send()
        results = outputs.score()
    if stop.stopping:
        return None
    return {"episodes": state.epoch, "solved": is_solved(state.running_reward, state.epoch, threshold),
            "score": float(np.mean([total for total, _ in results]))}


class RowSender:
    """Sends a run's rows on to the first worker a few times a second, not at each of its many short episodes, and
    stops the run when the sweep stops."""

    EVERY = 0.25  # seconds

    def __init__(self, hub, index, stop):
        self.hub, self.index, self.stop, self.rows, self.due = hub, index, stop, [], time.monotonic() + self.EVERY

    def add(self, row):
        self.rows.append(row)
        if time.monotonic() >= self.due:
            self.send()

    def send(self):
        if self.rows:
            self.hub.send("rows", self.index, self.rows)
        self.rows, self.due = [], time.monotonic() + self.EVERY
        self.stop.halted = self.stop.halted or self.hub.asked_to_stop()


class Hub:
    """How the workers share the sweep's runs and tell the first worker what they do: through a key-value store of
    torch.distributed, the process group's own (a TCPStore that every worker reaches at MASTER_ADDR and MASTER_PORT),
    or with no process group one in this process."""

    def __init__(self, rank):
        self.rank, self.world_size = rank, idist.get_world_size()
        self.sent, self.received = 0, [0] * self.world_size
        if self.world_size == 1:
            self.store = dist.HashStore()
        else:
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
            self.store = dist.PrefixStore("reinforce_cartpole", store)

    def next_run(self):
        return self.store.add("next run", 1) - 1

    def send(self, kind, *data):
        """A message numbered in this worker's order, counted only once it is there to be read."""
        self.sent += 1
        self.store.set(f"message {self.rank} {self.sent}", json.dumps([kind, self.rank, *data]))
        self.store.add(f"sent by {self.rank}", 1)

    def receive(self):
        for rank in range(self.world_size):
            while self.received[rank] < self.store.add(f"sent by {rank}", 0):
                self.received[rank] += 1
                key = f"message {rank} {self.received[rank]}"
                yield json.loads(self.store.get(key))
                self.store.delete_key(key)

    def ask_to_stop(self):
        self.store.set("stop", "")

    def asked_to_stop(self):
        return self.store.check(["stop"])

    def wait_for_the_end(self):
        """The other workers wait until the first one is done, as it may host the store."""
        while not self.store.check(["finished"]):
            time.sleep(0.1)
        self.store.add("left", 1)
        return 0

    def finish(self, workers_left):
        self.store.set("finished", "")
        deadline = time.monotonic() + LOST_AFTER
        while self.store.add("left", 0) < workers_left and time.monotonic() < deadline:
            time.sleep(0.05)


class SweepReport:
    """The first worker's account of the sweep, kept by a thread as the workers report: the --history rows, a line as
    each run finishes or a worker is lost, and at the end the summary and the --plot."""

    def __init__(self, args, runs, hub, stop):
        self.args, self.runs, self.hub, self.stop, self.out = args, runs, hub, stop, sys.stdout
        self.history = HistoryFile(args.history, stop)
        self.rows, self.results, self.doing, self.lost, self.left = [[] for _ in runs], {}, {}, {}, set()
        self.started = time.monotonic()
        self.heard = dict.fromkeys(range(hub.world_size), self.started)
        self.thread = threading.Thread(target=self.follow, daemon=True)
        self.thread.start()

    def follow(self):
        while len(self.left) + len(self.lost) < len(self.heard):
            for kind, rank, *data in self.hub.receive():
                self.heard[rank] = time.monotonic()
                getattr(self, f"on_{kind}")(rank, *data)
            for rank, heard in self.heard.items():
                if rank not in self.left and rank not in self.lost and time.monotonic() - heard > LOST_AFTER:
                    self.on_lost(rank)
            if self.stop.stopping:
                self.hub.ask_to_stop()
            time.sleep(0.05)

    def on_start(self, rank, index):
        self.doing[rank] = index

    def on_rows(self, rank, index, rows):
        self.rows[index] += rows
        self.history.write([(*self.runs[index], *row) for row in rows])

    def on_done(self, rank, index, result):
        self.results[index] = result
        self.doing.pop(rank, None)
        done, total = len(self.results), len(self.runs)
        left = (time.monotonic() - self.started) / done * (total - done)
        outcome = "solved in" if result["solved"] else "not solved in"
        print(f"[{done}/{total}] {describe(self.runs[index])}: {outcome} {result['episodes']} episodes, trained agent "
              f"{result['score']:.1f}; about {left / 60:.0f} min {left % 60:02.0f} s left", file=self.out, flush=True)

    def on_bye(self, rank):
        self.left.add(rank)
        self.doing.pop(rank, None)

    def on_lost(self, rank):
        index = self.lost[rank] = self.doing.pop(rank, None)
        lost = f" while it trained {describe(self.runs[index])}: that run is lost" if index is not None else ""
        print(f"{PROG}: worker {rank} went silent for {LOST_AFTER} s{lost}; the sweep stops", file=sys.stderr)
        self.hub.ask_to_stop()

    def finish(self):
        self.thread.join()
        threshold = gym.spec(self.args.env_id).reward_threshold
        for line in summary_lines(self.runs, self.results, self.args.max_episodes):
            print(line, file=self.out)
        if self.args.plot:
            finished = sorted(self.results)
            with signals_deferred(), self.stop.reporting_write_errors("plot", self.args.plot):
                write_whole(self.args.plot, lambda path: write_sweep_plot(
                    path, [self.runs[i] for i in finished], [self.rows[i] for i in finished], threshold,
                    f"REINFORCE on {self.args.env_id}: running reward of {len(finished)} runs"))
        self.hub.finish(len(self.heard) - 1 - len(self.lost))
        if len(self.results) == len(self.runs):
            return self.stop.status(0)
        cause = ("a lost worker" if self.lost else signal.Signals(self.stop.signum).name if self.stop.signum
                 else "a failed write" if self.stop.failed else "an error")
        print(f"Stopped by {cause}: {len(self.results)} of {len(self.runs)} runs finished", file=self.out)
        return EXIT_WORKER_LOST if self.lost else self.stop.exit_status()


def median_interval(values, resamples=10_000):
    """The median and its 95 % percentile-bootstrap interval. A fixed generator: the same runs, the same interval."""
    values = np.asarray(values, dtype=float)
    medians = np.median(np.random.default_rng(0).choice(values, (resamples, len(values))), axis=1)
    return (np.median(values), *np.quantile(medians, [0.025, 0.975], method="inverted_cdf"))


def summary_lines(runs, results, max_episodes):
    """A row per setting: how many runs solved, the episodes they took (an unsolved run counts as more than
    --max-episodes, and is never dropped), and the trained agents' mean return."""
    shown = lambda episodes: f">{max_episodes}" if np.isinf(episodes) else f"{episodes:g}"  # noqa: E731
    lines = [f"{'lr':>8} {'gamma':>6} {'solved':>7}  {'median episodes [95 % interval]':<31} {'range':<14} "
             f"trained agent"]
    for setting in dict.fromkeys((run.lr, run.gamma) for run in runs):
        finished = [results[i] for i, run in enumerate(runs) if (run.lr, run.gamma) == setting and i in results]
        planned = sum((run.lr, run.gamma) == setting for run in runs)
        line = f"{setting[0]:>8g} {setting[1]:>6g} {sum(r['solved'] for r in finished):>3}/{len(finished):<3}"
        if finished:
            episodes = [r["episodes"] if r["solved"] else np.inf for r in finished]
            median, low, high = median_interval(episodes)
            interval = f"{shown(median)} [{shown(low)}, {shown(high)}]"
            line += (f"  {interval:<31} {shown(min(episodes)) + ' to ' + shown(max(episodes)):<14} "
                     f"{np.mean([r['score'] for r in finished]):.1f}")
        lines.append(line + (f"  ({planned - len(finished)} runs unfinished)" if len(finished) < planned else ""))
    return lines


def write_sweep_plot(path, runs, rows, threshold, title):
    """The running reward against the episode: a thin line per run, and each setting's median in bold, which holds a
    run that has ended at its last value."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    settings = list(dict.fromkeys((run.lr, run.gamma) for run in runs))
    for color, (lr, gamma) in zip(itertools.cycle(f"C{i}" for i in range(10)), settings):
        curves = [[row[3] for row in rows[i]] for i, run in enumerate(runs) if (run.lr, run.gamma) == (lr, gamma)]
        for curve in curves:
            ax.plot(range(1, len(curve) + 1), curve, color=color, alpha=0.3, lw=0.8)
        longest = max(map(len, curves))
        median = np.median([curve + curve[-1:] * (longest - len(curve)) for curve in curves], axis=0)
        ax.plot(range(1, longest + 1), median, color=color, lw=2.5,
                label=f"lr {lr:g}, gamma {gamma:g}: median of {len(curves)} seeds")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"reward threshold ({threshold:g})")
    ax.set(title=title, xlabel="episode", ylabel="running reward")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, format="png")


# --- Signals and the entry point -----------------------------------------------------
EXIT_WRITE_FAILED = 3


class Stop:
    """What ends a run early, and so its exit status. SIGINT (Ctrl-C) or SIGTERM stops it after the current step,
    and a second one at once. An output that cannot be written is named in one line: a clip ends the recording,
    the history ends the run after the current step, and the plot and the checkpoint are written last anyway."""

    signum = None  # the first signal that came
    halted = False  # stopped otherwise: by a history row that could not be written, or by the sweep
    forward = None  # a launcher passes signals on to its workers

    def __init__(self):
        self.failed = set()  # the kinds of output that could not be written

    @property
    def stopping(self):
        return self.signum is not None or self.halted

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def attach(self, trainer):
        # Checked after each step, as Engine.run() clears a terminate() called before it.
        @trainer.on(Events.ITERATION_COMPLETED)
        def stop_if_asked():
            if self.stopping:
                trainer.terminate()

    def handle(self, signum, frame):
        if self.forward:
            self.forward(signum)
        if self.signum is not None:  # the second: exit now, leaving the run's remaining outputs unwritten
            with contextlib.suppress(OSError):  # not print(): the main code may be in the middle of one
                os.write(sys.stdout.fileno(), f"Stopped at once by a second {signal.Signals(signum).name}\n".encode())
            os._exit(128 + signum)
        self.signum = signum

    def write_failed(self, kind, path, error):
        then = {"clip": "; no more clips are recorded", "history": "; the run stops"}.get(kind, "")
        print(f"{PROG}: cannot write {path}: {os_reason(error)}{then}", file=sys.stderr)
        self.failed.add(kind)
        self.halted = self.halted or kind == "history"

    @contextlib.contextmanager
    def reporting_write_errors(self, kind, path):
        try:
            yield
        except OSError as e:
            self.write_failed(kind, path, e)

    def status(self, otherwise):
        return EXIT_WRITE_FAILED if self.failed else otherwise

    def exit_status(self):
        return 128 + self.signum if self.signum is not None else EXIT_WRITE_FAILED

    def exit(self, what):
        cause = signal.Signals(self.signum).name if self.signum is not None else "a failed write"
        print(f"Stopped by {cause}: {what}")
        return self.exit_status()


def quiet_known_warnings():
    # CartPole-v0 is the tutorial's choice, and reruns replace clips of the same name on purpose.
    warnings.filterwarnings("ignore", message=".*(environment CartPole-v0 is out of date|Overwriting existing videos)")


def main(argv=None):
    quiet_known_warnings()
    try:
        args = parse_args(argv)
        if not args.watch:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window: frames are drawn off-screen
        checkpoint = check_inputs(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    # One thread: tensors this small gain nothing from sharing, and a thread team stalls when another process is busy.
    torch.set_num_threads(1)
    with Stop() as stop:
        if args.play:
            return play(args, *checkpoint, stop)
        if args.seeds is not None:
            return sweep(args, stop)
        return train_and_report(args, stop)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # log lines show up at once, even through a pipe
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader of our output went away, as with `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
