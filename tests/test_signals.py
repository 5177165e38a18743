"""Signals: a stop always stops. The first SIGINT or SIGTERM stops the run after the current step and
finishes its outputs; a second stops it at once. Either way only whole files are left, and nothing is
printed on stderr. POSIX only: Windows has neither process groups nor SIGTERM as a signal one process
sends another."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import reinforce_cartpole as rc
from conftest import PATIENCE, ROOT, SOLVED_RUN, clip_folder, decoded_frames, history_rows, script_command, start_script

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
    video_dir = clip_folder(tmp_path / "video")
    history = tmp_path / "history.csv"
    child = start_script("--log-interval", 1, "--video-dir", tmp_path / "video", "--history", history)
    # gymnasium counts episodes from 0: the log's episode 28 is recorded as rl-video-episode-27.
    for line in child.stdout:
        if line.startswith("Episode 27\t"):
            child.send_signal(signal.SIGTERM)
            break
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 143 and err == "", err
    trained = int(re.search(r"^Stopped by SIGTERM: trained (\d+) episodes$", out, re.M).group(1))
    assert 27 <= trained < 100
    assert "\n\tepoch_length: 10000\n" in out, "the state is printed"
    # gymnasium records episodes 0, 1, 8, 27 and 64 (counted from 0) of the first hundred: a clip for
    # each finished one, and one for the episode in progress if it is on the schedule. Every clip plays.
    finished = {f"rl-video-episode-{e}.mp4" for e in (0, 1, 8, 27, 64) if e < trained}
    assert finished <= set(os.listdir(video_dir)) <= finished | {f"rl-video-episode-{trained}.mp4"}
    assert_every_file_whole(tmp_path)
    assert history_episodes(history) == list(range(1, trained + 1))


def test_a_signal_that_comes_before_the_run_starts_stops_it_within_a_step(tmp_path, monkeypatch, capsys):
    # Ignite's Engine.run() clears a terminate() that came before it. The signal comes here while the
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


def test_a_second_ctrl_c_stops_at_once_leaving_only_whole_files(tmp_path):
    out = tmp_path / "out"
    child = start_script("--log-interval", 1, "--video-dir", out / "video", "--history", out / "history.csv",
                  "--plot", out / "curve.png", "--save-model", out / "policy.pt")
    for line in child.stdout:
        if line.startswith("Episode 2\t"):  # episode 1 (from 0) is being recorded
            press_ctrl_c(child)
            time.sleep(0.05)
            press_ctrl_c(child)
            break
    stdout, stderr = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and stderr == "", stderr
    assert stdout.endswith("Stopped at once by a second SIGINT\n")
    assert "Stopped by SIGINT" not in stdout, "the first stop did not get to finish"
    assert_every_file_whole(out)


@SOLVED_RUN
def test_ctrl_c_pressed_again_and_again_while_clips_are_encoded_leaves_every_clip_whole(solved_run, tmp_path):
    # A terminal's Ctrl-C reaches ffmpeg too. Press it again and again, from the moment the third clip
    # is being encoded until the process is gone: an ffmpeg that got one would break its clip.
    _, out = solved_run
    video_dir = tmp_path / "video"
    child = start_script("--play", out / "policy.pt", "--eval-episodes", 1000, "--video-dir", video_dir)
    deadline = time.monotonic() + PATIENCE
    while not (video_dir / "play-episode-2.mp4").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    presses = 0
    while child.poll() is None and time.monotonic() < deadline:
        press_ctrl_c(child)
        presses += 1
        time.sleep(0.01)
    stdout, stderr = child.communicate(timeout=PATIENCE)
    # 130 from the run, or killed by SIGINT when a press lands after the run has ended: a shell shows 130.
    assert presses > 1 and child.returncode in (130, -signal.SIGINT) and stderr == "", stderr
    assert re.search(r"^Stopped (at once by a second SIGINT|by SIGINT: played \d+ of 1000 episodes)$", stdout, re.M)
    assert len(os.listdir(video_dir)) >= 3
    assert_every_file_whole(video_dir)


def test_ctrl_c_while_the_modules_import_ends_the_process_quietly():
    child = subprocess.Popen(script_command("--no-render"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)  # torch alone takes about a second to import
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=PATIENCE)
    # Killed by SIGINT, as a shell sees it: exit status 130. Nothing printed, no traceback.
    assert child.returncode == -signal.SIGINT and out == "" and err == ""


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


def test_a_second_ctrl_c_waits_for_the_file_being_written_whatever_thread_it_reaches(tmp_path):
    # TensorBoard's writer is a thread that does not hold the signals while a clip is written, so the kernel hands
    # them to it; Python still runs the handler in the main thread, in the middle of the write.
    video_dir = clip_folder(tmp_path / "video", seed=7)
    child = start_script("--seed", 7, "--log-interval", 1, "--video-dir", tmp_path / "video",
                         "--tensorboard", tmp_path / "runs")
    assert child.stdout.readline().startswith("Episode 1\t")
    child.send_signal(signal.SIGINT)  # to the process alone, as to torchrun's workers: ffmpeg goes on
    deadline = time.monotonic() + PATIENCE
    while not any(".tmp" in name for name in os.listdir(video_dir)):  # the clip in progress, or the one before
        assert time.monotonic() < deadline and child.poll() is None, "no clip was being written"
        time.sleep(0.001)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=PATIENCE)
    assert child.returncode == 130 and stderr == "", stderr
    assert stdout.endswith("Stopped at once by a second SIGINT\n")
    assert os.listdir(video_dir), "the clip being written was finished"
    assert_every_file_whole(video_dir)
