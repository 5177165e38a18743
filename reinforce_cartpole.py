"""REINFORCE on CartPole with PyTorch-Ignite.

A runnable port of the PyTorch-Ignite tutorial "Reinforcement Learning with Ignite".
The code follows the tutorial's sections in order and keeps its names; where the
tutorial is wrong, a comment starting with "Tutorial fix" says why.

    python reinforce_cartpole.py            # train until solved, record clips into video/
    python reinforce_cartpole.py --help     # every flag and its default
"""

import argparse
import concurrent.futures
import contextlib
import csv
import functools
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import warnings
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

PROG = "reinforce_cartpole.py"


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit status 2."""


# --- Configurable Parameters -------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line naming the problem, no usage dump: the same shape as every other bad input.
        raise UsageError(message)


def _in_range(name, low, high=None, *, kind=float, low_open=True):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or value != value:
            bounds = f"({low}, {high}]" if high is not None else (f"> {low}" if low_open else f">= {low}")
            raise argparse.ArgumentTypeError(f"{name} must be {bounds}, got {text}")
        return value

    return parse


def _count(name):
    return _in_range(name, 1, kind=int, low_open=False)


def parse_args(argv=None):
    p = _Parser(prog=PROG, description="REINFORCE on CartPole, trained by a PyTorch-Ignite Engine.",
                epilog="Exit status: 0 solved, 1 not solved within --max-episodes, 2 bad usage, "
                       "130 / 143 stopped by SIGINT / SIGTERM.")
    p.add_argument("--seed", type=int, default=543, metavar="N", help="random seed (default: 543)")
    p.add_argument("--gamma", type=_in_range("gamma", 0, 1), default=0.99, metavar="G",
                   help="discount factor, in (0, 1] (default: 0.99)")
    p.add_argument("--log-interval", type=_count("log interval"), default=100, metavar="N",
                   help="episodes between log lines (default: 100)")
    p.add_argument("--max-episodes", type=_count("max episodes"), default=1000000, metavar="N",
                   help="stop after this many episodes if not solved (default: 1000000)")
    p.add_argument("--render", action=argparse.BooleanOptionalAction, default=True,
                   help="record videos into --video-dir (default: on)")
    p.add_argument("--lr", type=_in_range("learning rate", 0), default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--env-id", default=None, metavar="ID",
                   help="gymnasium env with a flat Box observation and Discrete actions "
                        "(default: CartPole-v0, or with --play the checkpoint's env)")
    p.add_argument("--video-dir", default="video", metavar="DIR", help="where recordings go (default: video)")
    p.add_argument("--save-model", metavar="PATH", help="save the policy and optimizer to PATH when training "
                   "ends or is stopped (default: not saved)")
    p.add_argument("--play", metavar="PATH",
                   help="load a --save-model checkpoint and play it, without training (default: train)")
    p.add_argument("--eval-episodes", type=_count("eval episodes"), default=10, metavar="N",
                   help="episodes that --play runs (default: 10)")
    p.add_argument("--history", metavar="PATH", help="write one CSV row per episode to PATH (default: none)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG learning curve to PATH (default: none)")
    args = p.parse_args(argv)
    if args.play:
        for flag in ("save_model", "history", "plot"):
            if getattr(args, flag):
                raise UsageError(f"--{flag.replace('_', '-')} applies to training, not to --play")
    return args


# --- Setting up the Environment ----------------------------------------------------
# The tutorial's wrap_env (RecordVideo) is VideoRecorder, below the tutorial's sections.


def make_env(env_id):
    """gym.make with the checks that make a bad --env-id a usage error."""
    try:
        with warnings.catch_warnings():
            # CartPole-v0 is the tutorial's choice, made on purpose.
            warnings.filterwarnings("ignore", message=".*is out of date. You should consider upgrading")
            env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as e:
        raise UsageError(f"--env-id {env_id}: {str(e).splitlines()[0]}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise UsageError(f"--env-id {env_id}: the action space must be Discrete, not {env.action_space}")
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        env.close()
        raise UsageError(f"--env-id {env_id}: the observation must be a flat Box, not {space}")
    return env


def check_render_dependencies():
    missing = []
    for module, package in (("moviepy", "moviepy"), ("pygame", "pygame-ce")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise UsageError(
            f"--render needs {' and '.join(missing)}: run `pip install -r requirements.txt`, or pass --no-render"
        )


def check_writable(flag, path, directory):
    """Creates `directory` if needed and proves a file can be written there."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot be created or written ({e.strerror or e})") from None


# --- Model -------------------------------------------------------------------------


class Policy(nn.Module):
    # The tutorial hard-codes 4 observations and 2 actions; main() takes them from the env.
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


eps = np.finfo(np.float32).eps.item()


# --- Create Trainer ----------------------------------------------------------------


def create_trainer(env, policy):
    """The tutorial's Engine: an iteration is a timestep, an epoch is an episode."""

    def run_single_timestep(engine, timestep):
        observation = engine.state.observation
        action = select_action(policy, observation)
        engine.state.observation, reward, terminated, truncated, _ = env.step(action)
        # Tutorial fix: its `done` ignores `truncated`, so episodes ran past the time limit.
        done = terminated or truncated
        # Tutorial fix: no env.render() here. RecordVideo captures the frames of the
        # episodes it records, and a frame rendered for no one costs more than the step.
        policy.rewards.append(reward)
        engine.state.ep_reward += reward

        if done:
            engine.terminate_epoch()
            engine.state.timestep = timestep

    return Engine(run_single_timestep)


# --- select_action and finish_episode ----------------------------------------------


def select_action(policy, observation):
    state = torch.from_numpy(observation).float().unsqueeze(0)
    probs = policy(state)
    # validate_args=False: the check costs more than the sampling and changes nothing.
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


# --- Attach handlers to run on specific events -------------------------------------

EPISODE_STARTED = Events.EPOCH_STARTED
EPISODE_COMPLETED = Events.EPOCH_COMPLETED


def attach_handlers(trainer, env, policy, optimizer, *, seed, gamma, log_interval):
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
        if is_solved(running_reward, trainer.state.epoch, env.spec.reward_threshold):
            print(
                f"Solved! Running reward is now {running_reward} and "
                f"the last episode runs to {trainer.state.timestep} time steps!"
            )
            trainer.should_terminate = True


# "Solved" is an average over 100 consecutive episodes (gym's definition).
MIN_EPISODES_TO_SOLVE = 100


def is_solved(running_reward, episodes, threshold):
    # Tutorial fix: the running reward starts at 10, above thresholds such as Acrobot's -100,
    # which the tutorial would call solved after one episode. On CartPole the rule never
    # binds: from 10 it takes over 70 perfect episodes to pass 195.
    return threshold is not None and episodes >= MIN_EPISODES_TO_SOLVE and running_reward > threshold


def display_path(path):
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def format_state(state):
    """The tutorial ends by printing the engine state; these are the fields that carry news."""
    fields = {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "max_epochs": state.max_epochs,
        "running_reward": state.running_reward,
        "ep_reward": state.ep_reward,
        "timestep": getattr(state, "timestep", None),
        "seconds": round(state.times.get("COMPLETED") or 0.0, 2),
    }
    return "State:\n" + "\n".join(f"\t{k}: {v}" for k, v in fields.items())


# --- Beyond the tutorial: what a user keeps from a run ------------------------------

# The classic-control envs whose picture is a function of `env.unwrapped.state` alone.
DRAWN_FROM_STATE = {"CartPoleEnv", "AcrobotEnv", "MountainCarEnv"}


class VideoRecorder(RecordVideo):
    """gymnasium's RecordVideo, with its schedule and file names, that costs training little.

    For an env drawn from its state, a recorded step keeps that state (a few floats) instead of
    a 600x400 frame; a worker process on another core draws the same frames from it and
    encodes them. Each file is written under a temporary name and renamed when complete, so a
    stopped run never leaves a truncated mp4. close() waits for every file: see `written`.
    """

    MAX_QUEUED = 2

    def __init__(self, env, video_folder, worker=None, **kwargs):
        # gc_trigger=None: RecordVideo's default gc.collect() after each clip buys nothing here.
        super().__init__(env, video_folder, disable_logger=True, gc_trigger=None, **kwargs)
        unwrapped = env.unwrapped
        self._draw_from = (env.spec.id if type(unwrapped).__name__ in DRAWN_FROM_STATE
                           and type(unwrapped).__module__.startswith("gymnasium.envs.classic_control") else None)
        self.written = []
        self._pending = []
        self._owns_worker = worker is None
        self._worker = worker or video_worker()

    def _capture_frame(self):
        if self._draw_from:
            self.recorded_frames.append(np.array(self.env.unwrapped.state, dtype=np.float64))
        else:
            super()._capture_frame()

    def stop_recording(self):
        frames, name = self.recorded_frames, self._video_name
        self.recorded_frames, self.recording, self._video_name = [], False, None
        if frames:
            path = os.path.join(self.video_folder, f"{name}.mp4")
            self._pending.append(self._worker.submit(write_video, path, frames, self.frames_per_sec, self._draw_from))
            # Training records sparsely, but --play records every episode, faster than clips are
            # encoded: past a short queue, wait, so that memory and the wait at close() stay small.
            # One worker finishes clips in order, so more than MAX_QUEUED are unfinished exactly
            # when the one submitted MAX_QUEUED before this is.
            if len(self._pending) > self.MAX_QUEUED:
                concurrent.futures.wait([self._pending[-self.MAX_QUEUED - 1]])

    def close(self):
        try:
            super().close()
        finally:
            try:
                self.written += [job.result() for job in self._pending]
            finally:
                self._pending.clear()
                if self._owns_worker:
                    self._worker.shutdown()


def video_worker():
    """The process that draws and encodes clips. Forked where possible, as torch's DataLoader
    does: a spawned worker would first spend seconds importing this module and torch."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    worker = concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_video_worker_init)
    worker.submit(int)  # start it before training touches torch
    return worker


def _video_worker_init():
    # A Ctrl-C in a terminal reaches the whole process group. Blocked here, and in the ffmpeg
    # processes that inherit the mask, it leaves the main process to stop the run while the
    # clip in hand is finished.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    # Lowest priority, inherited by ffmpeg too: clips take the cycles training leaves idle.
    os.nice(19)


@functools.lru_cache(maxsize=None)
def _drawing_env(env_id):
    return make_env(env_id).unwrapped


def write_video(path, frames, fps, draw_from=None):
    """Encodes `frames` into the mp4 at `path`. With `draw_from`, the frames are env states of
    that env, each drawn as ffmpeg asks for it: no clip is held in memory as images, and
    drawing overlaps encoding. Runs in VideoRecorder's worker process."""
    from moviepy import VideoClip

    env = _drawing_env(draw_from) if draw_from else None

    def frame_at(t):
        frame = frames[min(round(t * fps), len(frames) - 1)]
        if env is None:
            return frame
        env.state = frame
        return env.render()

    # moviepy writes int(duration * fps) frames, and n / fps * fps can round to just under n
    # (29 frames at 50 fps give 28): a nanosecond more keeps every frame.
    clip = VideoClip(frame_at, duration=len(frames) / fps + 1e-9)
    with written_whole(path) as partial:
        # x264's "veryfast" preset: these simple frames come out no larger, and sooner.
        clip.write_videofile(partial, fps=fps, preset="veryfast", logger=None)
    return path


@contextlib.contextmanager
def written_whole(path):
    """Yields a temporary path beside `path` (same extension) and renames it to `path` only
    when the block succeeds, so nobody ever sees a half-written file."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    partial = os.path.join(directory, f".{stem}.partial{extension}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


DEFAULT_ENV_ID = "CartPole-v0"
# Evaluation episodes get seeds well clear of the training episodes' seed + episode.
EVAL_SEED_OFFSET = 10_000_000


class StopOnSignal:
    """SIGINT (Ctrl-C) or SIGTERM asks the run to stop after the current step."""

    def __init__(self):
        self.signum = None
        self.on_stop = []

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            for callback in self.on_stop:
                callback()

    @property
    def exit_status(self):
        return 128 + self.signum

    def report(self, what):
        print(f"Stopped by {signal.Signals(self.signum).name}: {what}")


class CheckpointInfo:
    """Saved by Ignite's Checkpoint next to the weights: what rebuilds and checks them."""

    def __init__(self, read):
        self.read = read

    def state_dict(self):
        return self.read()


class History:
    """One row per episode. The CSV is appended and flushed row by row, so it is valid
    however the run ends; the rows also stay in memory for the plot."""

    FIELDS = ("episode", "length", "return", "running_reward", "seconds")

    def __init__(self, path=None):
        self.rows = []
        self._started = time.perf_counter()
        self._last_iteration = 0
        self._file = self._csv = None
        if path:
            self._file = open(path, "w", newline="")
            self._csv = csv.writer(self._file)
            self._write(self.FIELDS)

    def _write(self, row):
        self._csv.writerow(row)
        self._file.flush()

    def record_episode(self, engine):
        state = engine.state
        row = (state.epoch, state.iteration - self._last_iteration, state.ep_reward,
               round(state.running_reward, 6), round(time.perf_counter() - self._started, 3))
        self._last_iteration = state.iteration
        self.rows.append(row)
        if self._file:
            self._write(row)

    def close(self):
        if self._file:
            self._file.close()


def solving_episode(rows, threshold):
    return next((row[0] for row in rows if is_solved(row[3], row[0], threshold)), None)


def write_plot(path, rows, threshold, title):
    """Episode return and running reward against the episode, as a PNG (Agg, no pyplot)."""
    from matplotlib.figure import Figure

    episodes = [row[0] for row in rows]
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(episodes, [row[2] for row in rows], color="tab:blue", alpha=0.35, lw=0.8, label="episode return")
    ax.plot(episodes, [row[3] for row in rows], color="tab:orange", lw=2, label="running reward")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"reward threshold ({threshold:g})")
    solved = solving_episode(rows, threshold)
    if solved is not None:
        ax.axvline(solved, color="tab:green", ls=":", lw=1.5, label=f"solved at episode {solved}")
    ax.set(title=title, xlabel="episode", ylabel="reward")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    with written_whole(path) as partial:
        fig.savefig(partial, format="png")


def attach_checkpoint(trainer, path, to_save):
    """Ignite's Checkpoint writes `to_save` to exactly `path` (atomically) when the run ends."""
    from ignite.handlers import Checkpoint, DiskSaver

    directory, name = os.path.split(os.path.abspath(path))
    checkpoint = Checkpoint(to_save, DiskSaver(directory, require_empty=False, atomic=True),
                            filename_pattern=name.replace("{", "{{").replace("}", "}}"))
    trainer.add_event_handler(Events.COMPLETED, checkpoint)


def load_checkpoint(path, env_id):
    """The env and the policy of a --save-model checkpoint, or a UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"--play {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UsageError(f"--play {path}: not a checkpoint (torch.load cannot read it)") from None
    info = saved.get("info") if isinstance(saved, dict) else None
    if not (isinstance(info, dict) and "policy" in saved
            and {"env_id", "observation_size", "n_actions"} <= info.keys()):
        raise UsageError(f"--play {path}: not a checkpoint written by --save-model")
    if env_id is not None and env_id != info["env_id"]:
        raise UsageError(f"--env-id {env_id} conflicts with --play {path}, which was trained on {info['env_id']}")
    env = make_env(info["env_id"])
    sizes = (env.observation_space.shape[0], int(env.action_space.n))
    if sizes != (info["observation_size"], info["n_actions"]):
        env.close()
        raise UsageError(
            f"--play {path}: made for {info['observation_size']} observations and {info['n_actions']} actions, "
            f"but {info['env_id']} has {sizes[0]} and {sizes[1]}"
        )
    policy = Policy(*sizes)
    try:
        policy.load_state_dict(saved["policy"])
    except (RuntimeError, TypeError, AttributeError) as e:
        env.close()
        raise UsageError(f"--play {path}: its weights do not fit the policy ({str(e).splitlines()[0]})") from None
    return env, policy


def check_output_file(flag, path):
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    check_writable(flag, path, os.path.dirname(os.path.abspath(path)))


def evaluate(policy, env, episodes, seed, stop):
    """Plays with the trained policy: eval mode, so dropout is off; actions are still sampled.
    Returns (return, length) of each episode that ran to its end."""
    policy.eval()
    results = []
    with torch.no_grad():
        for episode in range(episodes):
            torch.manual_seed(seed + episode)
            observation, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done and stop.signum is None:
                observation, reward, terminated, truncated, _ = env.step(select_action(policy, observation))
                total, length, done = total + reward, length + 1, terminated or truncated
            del policy.saved_log_probs[:]
            if not done:
                break
            results.append((total, length))
    return results


def episode_limit(env):
    return f"/{env.spec.max_episode_steps}" if env.spec.max_episode_steps else ""


def record_trained_agent(policy, args, stop, worker):
    env = VideoRecorder(make_env(args.env_id), args.video_dir, worker, name_prefix="trained-agent",
                        episode_trigger=lambda episode: True)
    try:
        results = evaluate(policy, env, 1, args.seed + EVAL_SEED_OFFSET, stop)
    finally:
        env.close()
    for path in env.written:
        if results:
            total, length = results[0]
            print(f"Trained agent: {display_path(path)} (balanced for {length}{episode_limit(env)} steps, "
                  f"return {total:g})")
        else:
            print(f"Trained agent: {display_path(path)} (stopped before the episode ended)")


# --- Run Trainer -------------------------------------------------------------------


def train(args, env, stop, worker=None):
    # Tutorial fix: it never seeds before building the Policy, so no run can be repeated.
    torch.manual_seed(args.seed)
    policy = Policy(env.observation_space.shape[0], int(env.action_space.n))
    optimizer = optim.Adam(policy.parameters(), lr=args.lr)
    timesteps = range(10000)

    trainer = create_trainer(env, policy)
    attach_handlers(trainer, env, policy, optimizer, seed=args.seed, gamma=args.gamma,
                    log_interval=args.log_interval)
    stop.on_stop.append(trainer.terminate)
    history = History(args.history)
    trainer.add_event_handler(EPISODE_COMPLETED, history.record_episode)
    threshold = env.spec.reward_threshold
    if args.save_model:
        info = CheckpointInfo(lambda: {
            "env_id": args.env_id, "observation_size": policy.affine1.in_features,
            "n_actions": policy.affine2.out_features, "seed": args.seed, "episodes": len(history.rows),
            "running_reward": trainer.state.running_reward,
        })
        attach_checkpoint(trainer, args.save_model, {"policy": policy, "optimizer": optimizer, "info": info})

    try:
        trainer.run(timesteps, max_epochs=args.max_episodes)
    finally:
        env.close()
        history.close()

    state = trainer.state
    print(format_state(state))
    for path in getattr(env, "written", []):
        print(f"Video: {display_path(path)}")
    if args.history:
        print(f"History: {display_path(args.history)} ({len(history.rows)} episodes)")
    if args.plot:
        write_plot(args.plot, history.rows, threshold, f"REINFORCE on {args.env_id}, seed {args.seed}")
        print(f"Plot: {display_path(args.plot)}")
    if args.save_model:
        print(f"Model: {display_path(args.save_model)}")

    if stop.signum is not None:
        stop.report(f"trained {len(history.rows)} episodes")
        return stop.exit_status
    if args.render:
        record_trained_agent(policy, args, stop, worker)
        if stop.signum is not None:
            stop.report("while recording the trained agent")
            return stop.exit_status
    if is_solved(state.running_reward, state.epoch, threshold):
        return 0
    print(
        f"Not solved: running reward {state.running_reward:.2f} after {state.epoch} episodes "
        f"(--max-episodes {args.max_episodes}, threshold {threshold})"
    )
    return 1


def play(args, env, policy, stop, worker=None):
    print(f"Playing {args.eval_episodes} episodes of {env.spec.id} with {args.play}")
    if args.render:
        env = VideoRecorder(env, args.video_dir, worker, name_prefix="play", episode_trigger=lambda episode: True)
    try:
        results = evaluate(policy, env, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, stop)
    finally:
        env.close()
    for path in getattr(env, "written", []):
        print(f"Video: {display_path(path)}")
    if results:
        returns = np.array([total for total, _ in results])
        print(
            f"Played {len(results)} episodes of {env.spec.id} with {args.play}: "
            f"return {returns.mean():.2f} ± {returns.std():.2f} (min {returns.min():g}, max {returns.max():g})"
        )
    if stop.signum is not None:
        stop.report(f"played {len(results)} of {args.eval_episodes} episodes")
        return stop.exit_status
    return 0


def main(argv=None):
    try:
        args = parse_args(argv)
        if args.render:
            # No window is ever opened: frames are drawn off-screen for the recordings.
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            check_render_dependencies()
        if args.play:
            env, policy = load_checkpoint(args.play, args.env_id)
        else:
            args.env_id = args.env_id or DEFAULT_ENV_ID
            env = make_env(args.env_id)
        for flag, path in (("--history", args.history), ("--plot", args.plot), ("--save-model", args.save_model)):
            if path:
                check_output_file(flag, path)
        if args.render:
            check_writable("--video-dir", args.video_dir, args.video_dir)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    if args.render:
        # Re-runs replace clips of the same name on purpose; gymnasium warns about it.
        warnings.filterwarnings("ignore", message=".*Overwriting existing videos at")
    with StopOnSignal() as stop, contextlib.ExitStack() as cleanup:
        worker = cleanup.enter_context(video_worker()) if args.render else None
        if args.play:
            return play(args, env, policy, stop, worker)
        if args.render:
            env = VideoRecorder(env, args.video_dir, worker)
        return train(args, env, stop, worker)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # log lines show up at once, even through a pipe
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the run started
        sys.exit(130)
    except BrokenPipeError:  # the reader of our output went away, as with `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
