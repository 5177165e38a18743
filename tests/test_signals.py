"""Signals: a stop always stops. The first SIGINT or SIGTERM stops the run after the current step and
finishes its outputs; a second stops it at once, once the file being written is whole. Either way only whole files
are left, and nothing is printed on stderr. POSIX only: Windows has neither process groups nor SIGTERM as a signal
one process sends another."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import imageio_ffmpeg
import pytest
import torch
from gymnasium.utils.save_video import capped_cubic_video_schedule

import reinforce_cartpole as rc
from conftest import (PATIENCE, ROOT, SCRIPT, clip_folder, decoded_frames, episode_lines, history_rows, lines_until,
                      start_script)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def press_ctrl_c(child):
    """A terminal's Ctrl-C: SIGINT to the whole process group, ffmpeg included."""
    with contextlib.suppress(ProcessLookupError):  # the run may have ended meanwhile
        os.killpg(child.pid, signal.SIGINT)


def history_episodes(path):
    return [int(row["episode"]) for row in history_rows(path)]


def assert_every_file_whole(folder):
    """Clips that decode, a PNG and a checkpoint that load, CSV rows that parse: nothing half-written, and
    no stray temporary files."""
    from PIL import Image
    for path in folder.rglob("*"):
        assert ".tmp" not in path.name, f"a temporary file is left: {path}"
        if path.suffix == ".mp4":
            assert decoded_frames(path)[1] > 0, path
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".csv":
            history_episodes(path)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        else:
            assert path.is_dir(), f"unexpected file {path}"


def test_sigterm_stops_training_after_the_current_step(tmp_path):
    history = tmp_path / "history.csv"
    child = start_script("--log-interval", 1, "--video-dir", tmp_path / "video", "--history", history)
    out = lines_until(child, "Episode 27\t")
    child.send_signal(signal.SIGTERM)
    rest, err = child.communicate(timeout=PATIENCE)
    out += rest
    assert child.returncode == 143 and err == "", err
    trained = int(re.search(r"^Stopped by SIGTERM: trained (\d+) episodes$", out, re.M).group(1))
    # The episode in progress stops after its current step: the log's last episode is the last one trained, and the
    # steps beyond those of the trained episodes are a part of one more.
    assert trained >= 27 and int(episode_lines(out)[-1].split()[1]) == trained
    assert history_episodes(history) == list(range(1, trained + 1))
    steps_after = int(re.search(r"^\titeration: (\d+)$", out, re.M)[1]) - sum(
        int(row["length"]) for row in history_rows(history))
    assert 1 <= steps_after <= 200
    # The clips of the episodes trained on RecordVideo's schedule (counted from 0), and the one in progress if it is
    # on the schedule. Every clip plays.
    finished = {f"rl-video-episode-{e}.mp4" for e in range(trained) if capped_cubic_video_schedule(e)}
    in_progress = {f"rl-video-episode-{trained}.mp4"} if capped_cubic_video_schedule(trained) else set()
    assert set(os.listdir(clip_folder(tmp_path / "video"))) == finished | in_progress
    assert_every_file_whole(tmp_path)


def test_a_signal_that_comes_before_the_run_starts_stops_it_within_a_step(tmp_path, monkeypatch, capsys):
    # Ignite's Engine.run() clears a terminate() called before it. The signal comes here while the
    # Engine is built: after the handler is installed, before trainer.run.
    create_trainer = rc.create_trainer

    def create_trainer_then_sigterm(env, policy):
        trainer = create_trainer(env, policy)
        os.kill(os.getpid(), signal.SIGTERM)
        return trainer

    monkeypatch.setattr(rc, "create_trainer", create_trainer_then_sigterm)
    history = tmp_path / "history.csv"
    history.write_text("from an earlier run\n")
    code = rc.main(["--no-render", "--max-episodes", "60", "--history", str(history), "--save-model",
                    str(tmp_path / "policy.pt")])
    out = capsys.readouterr().out
    assert code == 143 and "Stopped by SIGTERM: trained 0 episodes" in out
    assert "\n\titeration: 1\n" in out, "one step, then the stop"
    assert (tmp_path / "policy.pt").exists()
    assert history.read_text() == "from an earlier run\n", "no episode ended, so the file it would replace stays"


# ffmpeg, held as it starts until the test lets it go, so that a clip is being written for certain meanwhile. It
# inherits the signals that the script's writing thread holds, and keeps any that reach it pending past exec.
HELD_FFMPEG = """#!/bin/sh
: > "$HELD_FFMPEG_DIR/started-$$"
read go < "$HELD_FFMPEG_DIR/go"
exec "$REAL_FFMPEG" "$@"
"""


@pytest.fixture
def held_ffmpeg(tmp_path):
    """The environment that holds each clip's ffmpeg; wait_for_clip(child) returns once the next clip's has started,
    and let_go() lets it go. Whatever is still held at the end is let go."""
    folder = tmp_path / "held-ffmpeg"
    folder.mkdir()
    os.mkfifo(folder / "go")
    (folder / "ffmpeg").write_text(HELD_FFMPEG)
    (folder / "ffmpeg").chmod(0o755)
    let_go = []

    def wait_for_clip(child):
        deadline = time.monotonic() + PATIENCE
        while len(list(folder.glob("started-*"))) <= len(let_go):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.005)

    def release():
        with open(folder / "go", "w") as fifo:  # returns once the held ffmpeg reads it
            fifo.write("go\n")
        let_go.append(True)

    env_changes = {"IMAGEIO_FFMPEG_EXE": str(folder / "ffmpeg"), "HELD_FFMPEG_DIR": str(folder),
                   "REAL_FFMPEG": imageio_ffmpeg.get_ffmpeg_exe()}
    yield env_changes, wait_for_clip, release
    while True:  # an ffmpeg that a failed test left waiting
        try:
            os.close(os.open(folder / "go", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no one reads: none waits
            break


@pytest.mark.parametrize("to", ["the process group", "the process alone, beside TensorBoard's thread"])
def test_a_second_ctrl_c_stops_at_once_once_the_clip_being_written_is_whole(to, held_ffmpeg, tmp_path):
    """Each Ctrl-C comes while a clip is written: the first while episode 0's is, the second while that of the
    episode in progress is, as the run stops. A terminal's Ctrl-C reaches ffmpeg too, which must finish its clip.
    Sent to the process alone, as torchrun passes it on, it may reach TensorBoard's writer thread, which does not hold
    the signals; Python still runs the handler in the main thread."""
    env_changes, wait_for_clip, let_go = held_ffmpeg
    out = tmp_path / "out"
    thread = ("--tensorboard", tmp_path / "runs") if "TensorBoard" in to else ()
    child = start_script("--seed", 7, "--video-dir", out / "video", "--history", out / "history.csv", "--plot",
                         out / "curve.png", "--save-model", out / "policy.pt", *thread, env_changes=env_changes)
    send = press_ctrl_c if to == "the process group" else lambda child: child.send_signal(signal.SIGINT)
    for _ in range(2):
        wait_for_clip(child)
        send(child)
        let_go()
    stdout, stderr = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and stderr == "", stderr
    assert stdout.endswith("Stopped at once by a second SIGINT\n")
    assert "Stopped by SIGINT" not in stdout, "the first stop did not get to finish"
    assert sorted(os.listdir(clip_folder(out / "video", seed=7))) == ["rl-video-episode-0.mp4",
                                                                       "rl-video-episode-1.mp4"]
    assert not (out / "curve.png").exists() and not (out / "policy.pt").exists(), "it stopped at once"
    assert_every_file_whole(out)


def test_ctrl_c_while_the_modules_import_ends_the_process_quietly():
    child = subprocess.Popen([sys.executable, "-X", "importtime", str(SCRIPT), "--no-render"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stderr:  # -X importtime writes a line as each module has been imported
        if line.rstrip().endswith("| numpy"):  # after the script's SIGINT line, and before torch, which takes a second
            child.send_signal(signal.SIGINT)
            break
    out, err = child.communicate(timeout=PATIENCE)
    # Killed by SIGINT, as a shell sees it: exit status 130. Nothing printed, no traceback.
    assert child.returncode == -signal.SIGINT and out == ""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "| torch" not in err, err


def test_a_closed_pipe_stops_the_run_quietly_and_finishes_its_outputs(tmp_path):
    # As `python reinforce_cartpole.py | head -2` does: the reader goes away after two lines.
    child = start_script("--log-interval", 1, "--video-dir", tmp_path / "video", "--plot", tmp_path / "curve.png")
    lines = [child.stdout.readline() for _ in range(2)]
    child.stdout.close()
    assert child.wait(timeout=PATIENCE) == 141
    with child.stderr:
        assert child.stderr.read() == "", "quiet, as Unix tools are"
    assert lines[0].startswith("Episode 1\t")
    assert (tmp_path / "curve.png").exists() and os.listdir(clip_folder(tmp_path / "video")), "the outputs finished"
    assert_every_file_whole(tmp_path)
