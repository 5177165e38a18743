"""What a run leaves: the clips, the history, the plot, the checkpoint and what --play makes of it."""

import os
import re
import stat
import sys
import threading

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.save_video import capped_cubic_video_schedule
from PIL import Image

import reinforce_cartpole as rc
from conftest import (PATIENCE, RECORDED_RUN, SOLVE_SEED, SOLVED_RUN, decoded_frames, history_rows, run_main,
                      tensorboard_scalars, trained_agent_score)


def assert_frames(path, expected):
    """A clip has a frame for the reset and one for each step. The recorder hands each frame to moviepy's
    ffmpeg writer itself, so none is dropped (through an ImageSequenceClip, moviepy #2507 drops the last
    of 11 to 14 frames at 50 fps)."""
    assert decoded_frames(path)[1] == expected


@RECORDED_RUN
def test_training_and_the_trained_agent_are_recorded(recorded_run):
    result, video_dir = recorded_run
    assert result.stderr == ""
    # gymnasium's schedule, which counts episodes from 0, for the ten trained, then the trained agent's first.
    names = [f"rl-video-episode-{e}.mp4" for e in range(10) if capped_cubic_video_schedule(e)]
    names.append("trained-agent-episode-0.mp4")
    assert sorted(os.listdir(video_dir)) == sorted(names)
    assert re.findall(r"^Video: (.*)$", result.stdout, re.M) == [str(video_dir / name) for name in names]
    env = gym.make("CartPole-v0", render_mode="rgb_array")
    env.reset(seed=0)
    height, width, _ = env.render().shape
    for name in names:
        meta, frames = decoded_frames(video_dir / name)
        assert meta["size"] == (width, height) and meta["fps"] == env.metadata["render_fps"] and frames > 0
    # The trained agent plays --eval-episodes episodes in eval mode, and only the first is recorded.
    episodes, mean, shortest, longest = trained_agent_score(result.stdout)
    assert episodes == 10 and 1 <= shortest <= mean <= longest <= 200
    assert shortest <= decoded_frames(video_dir / "trained-agent-episode-0.mp4")[1] - 1 <= longest
    assert result.stdout.splitlines()[-1] == f"Written: {video_dir} (its clips)"


def test_closing_the_recorder_mid_episode_writes_the_clip(tmp_path, capsys):
    env = rc.wrap_env(rc.make_env("CartPole-v0"), tmp_path / "clips", episode_trigger=lambda episode: True)
    env.reset(seed=3)
    for step in range(20):
        env.step(step % 2)
    env.close()
    assert capsys.readouterr().out == f"Video: {tmp_path / 'clips' / 'rl-video-episode-0.mp4'}\n"
    assert_frames(tmp_path / "clips" / "rl-video-episode-0.mp4", 21)


@SOLVED_RUN
def test_the_history_has_one_row_per_episode(solved_run):
    result, out = solved_run
    rows = history_rows(out / "history.csv")
    assert list(rows[0]) == ["lr", "gamma", "seed", "episode", "length", "return", "running_reward", "seconds"]
    assert {(row["lr"], row["gamma"], row["seed"]) for row in rows} == {("0.01", "0.99", str(SOLVE_SEED))}
    episodes = int(re.search(r"^\tepoch: (\d+)$", result.stdout, re.M).group(1))
    assert [int(row["episode"]) for row in rows] == list(range(1, episodes + 1))
    # CartPole pays 1 a step, so an episode's return is its length.
    assert all(1 <= int(row["length"]) <= 200 and float(row["return"]) == int(row["length"]) for row in rows)
    assert float(rows[-1]["running_reward"]) > 195
    seconds = [float(row["seconds"]) for row in rows]
    assert seconds == sorted(seconds)


def test_outputs_go_into_folders_that_do_not_exist_yet(tmp_path, capsys):
    # Each is created once every check has passed, as --history's always was; a run that cannot start creates none.
    plot, model = tmp_path / "plots" / "curve.png", tmp_path / "models" / "policy.pt"
    history = tmp_path / "runs" / "history.csv"
    assert rc.main(["--no-render", "--max-episodes", "2", "--plot", str(plot), "--save-model", str(model),
                    "--history", str(history)]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[-1] == f"Written: {history} (--history), {plot} (--plot), {model} (--save-model)"
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert torch.load(model, weights_only=True)["info"]["episodes"] == len(history_rows(history)) == 2


@SOLVED_RUN
def test_the_plot_is_a_png(solved_run):
    _, out = solved_run
    with Image.open(out / "curve.png") as image:
        assert image.format == "PNG" and image.size == (1100, 450)
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10, "not a blank image"


def test_tensorboard_shows_the_history_and_the_trained_agent(tmp_path):
    history, logs = tmp_path / "history.csv", tmp_path / "runs"
    result = run_main("--no-render", "--seed", 7, "--max-episodes", 30, "--eval-episodes", 3, "--history", history,
                      "--tensorboard", logs)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    assert os.listdir(logs) == ["CartPole-v0-lr0.01-gamma0.99-seed7"]
    folder = logs / "CartPole-v0-lr0.01-gamma0.99-seed7"
    assert result.stdout.splitlines()[-1] == f"Written: {folder} (--tensorboard), {history} (--history)"
    assert_tensorboard_equals_history(logs / "CartPole-v0-lr0.01-gamma0.99-seed7", history_rows(history), result.stdout)


def assert_tensorboard_equals_history(folder, rows, stdout):
    """Each episode's length, return and running reward, as the history has them (TensorBoard keeps 32-bit
    floats), and the trained agent's mean return, as printed, at the last episode."""
    scalars = tensorboard_scalars(folder)
    for column in ("length", "return", "running_reward"):
        assert scalars[f"episode/{column}"] == [(int(row["episode"]), pytest.approx(float(row[column]), rel=1e-6))
                                                for row in rows]
    [(step, mean)] = scalars["trained_agent/mean_return"]
    assert step == len(rows) and f"return {mean:.2f} ±" in stdout


@SOLVED_RUN
def test_a_saved_policy_plays_back(solved_run, capsys):
    _, out = solved_run
    saved = torch.load(out / "policy.pt", weights_only=True)
    assert saved["info"]["env_id"] == "CartPole-v0" and saved["info"]["seed"] == SOLVE_SEED
    assert saved["info"]["running_reward"] > 195 and "state" in saved["optimizer"]
    assert saved["info"]["episodes"] == len(history_rows(out / "history.csv"))

    assert rc.main(["--play", str(out / "policy.pt"), "--eval-episodes", "5", "--no-render"]) == 0
    match = re.search(r"^Played 5 episodes of CartPole-v0 with .*policy\.pt: "
                      r"return ([\d.]+) ± ([\d.]+) \(min ([\d.]+), max ([\d.]+)\)$", capsys.readouterr().out, re.M)
    assert match
    mean, std, low, high = map(float, match.groups())
    assert low <= mean <= high <= 200 and std >= 0
    # The solved agent, with dropout off, keeps the pole up for most of the 200 steps.
    assert mean > 150


@SOLVED_RUN
def test_play_records_every_episode(solved_run, tmp_path, capsys):
    _, out = solved_run
    assert rc.main(["--play", str(out / "policy.pt"), "--eval-episodes", "2", "--video-dir", str(tmp_path)]) == 0
    names = ["play-episode-0.mp4", "play-episode-1.mp4"]
    assert os.listdir(tmp_path) == ["play-policy"], "a folder of its own, named after the checkpoint"
    assert sorted(os.listdir(tmp_path / "play-policy")) == names
    output = capsys.readouterr().out
    assert re.findall(r"^Video: (.*)$", output, re.M) == [str(tmp_path / "play-policy" / name) for name in names]
    assert output.splitlines()[-1] == f"Written: {tmp_path / 'play-policy'} (its clips)"
    for name in names:
        assert decoded_frames(tmp_path / "play-policy" / name)[1] > 0


def test_outputs_write_through_a_link_to_its_target(tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    links = {name: tmp_path / name for name in ("curve.png", "policy.pt", "history.csv")}
    for name, link in links.items():
        link.symlink_to(targets / name)
    result = run_main("--no-render", "--max-episodes", 2, "--plot", links["curve.png"], "--save-model",
                      links["policy.pt"], "--history", links["history.csv"])
    assert result.returncode == 1 and result.stderr == "", result.stderr
    assert all(link.is_symlink() for link in links.values()), "each link stays a link"
    with Image.open(targets / "curve.png") as image:
        assert image.format == "PNG"
    assert torch.load(targets / "policy.pt", weights_only=True)["info"]["episodes"] == 2
    assert len(history_rows(targets / "history.csv")) == 2
    assert sorted(os.listdir(targets)) == ["curve.png", "history.csv", "policy.pt"], "no temporary file left"


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mknod: Linux, as root")
def test_outputs_write_into_a_device_as_it_is(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is, made here: never the real one
    for flag in ("--plot", "--save-model", "--history"):
        result = run_main("--no-render", "--max-episodes", 2, flag, null)
        assert result.returncode == 1 and result.stderr == "", result.stderr
        assert stat.S_ISCHR(os.stat(null).st_mode), f"{flag} left the device as it was"
    assert os.listdir(tmp_path) == ["null"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")
def test_the_history_writes_into_a_fifo_for_its_reader(tmp_path):
    fifo = tmp_path / "history.fifo"
    os.mkfifo(fifo)
    read = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()))
    reader.start()
    result = run_main("--no-render", "--max-episodes", 3, "--history", fifo)
    reader.join(timeout=PATIENCE)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    [text] = read
    assert text.splitlines()[0] == rc.HISTORY_HEADER and len(text.splitlines()) == 4
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
