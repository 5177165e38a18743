"""A full disk loses nothing: a write that fails gets one line naming the file and the OS's reason, and exit
status 3. A clip ends the recording while training goes on; the history ends the run as a stop does; the
plot and the checkpoint are written last, each on its own. Only whole files are left, and a file that a
failed write would have replaced stays as it was. Linux as root only: the tests mount a small tmpfs. Each run is
main() in the test's own process, as a full disk needs no process of its own."""

import os
import re
import stat
import sys

import pytest
import torch
from PIL import Image

import reinforce_cartpole as rc
from conftest import clip_folder, decoded_frames, history_rows, leave_free, run_main, trained_agent_score

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="mounts a tmpfs: Linux, as root (CI runs so)")


def one_failure_line(result, path, then=""):
    assert result.stderr == f"reinforce_cartpole.py: cannot write {path}: No space left on device{then}\n"
    assert result.returncode == 3


def assert_no_temporary_files(*folders):
    for folder in folders:
        assert not [name for name in os.listdir(folder) if ".tmp" in name], os.listdir(folder)


def test_a_clip_that_does_not_fit_ends_the_recording_not_the_training(small_disk, tmp_path):
    clips = clip_folder(small_disk, seed=7)
    clips.mkdir()
    older = clips / "rl-video-episode-1.mp4"  # from an earlier run, which this one would replace
    older.write_bytes(b"an older clip")
    leave_free(small_disk, 1)  # room for the first clip (3 KB), not for the second
    history = tmp_path / "history.csv"
    result = run_main("--seed", 7, "--max-episodes", 30, "--video-dir", small_disk, "--history", history)
    one_failure_line(result, clips / "rl-video-episode-1.mp4", "; no more clips are recorded")
    assert re.findall(r"^Video: (.*)$", result.stdout, re.M) == [str(clips / "rl-video-episode-0.mp4")]
    assert decoded_frames(clips / "rl-video-episode-0.mp4")[1] > 0
    assert older.read_bytes() == b"an older clip"
    assert sorted(os.listdir(clips)) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    # Training went on to the end, and the trained agent still played, unrecorded.
    assert [int(row["episode"]) for row in history_rows(history)] == list(range(1, 31))
    assert trained_agent_score(result.stdout)[0] == 10
    assert "Not solved in 30 episodes" in result.stdout


def test_a_history_that_fills_the_disk_stops_the_run_and_keeps_its_whole_rows(small_disk, tmp_path):
    leave_free(small_disk, 1)  # about 130 rows
    history, plot, model = small_disk / "history.csv", tmp_path / "curve.png", tmp_path / "policy.pt"
    result = run_main("--no-render", "--seed", 7, "--max-episodes", 1000, "--history", history, "--plot", plot,
                      "--save-model", model)
    one_failure_line(result, history, "; the run stops")
    trained = int(re.search(r"^Stopped by a failed write: trained (\d+) episodes$", result.stdout, re.M).group(1))
    text = history.read_text()
    assert text.endswith("\n")
    rows = history_rows(history)
    assert [int(row["episode"]) for row in rows] == list(range(1, len(rows) + 1))
    assert 50 < len(rows) < trained < 1000
    assert all(len(row) == 8 and None not in row.values() for row in rows)
    # The outputs on the other disk are written, and the checkpoint counts the episodes trained.
    assert torch.load(model, weights_only=True)["info"]["episodes"] == trained
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert_no_temporary_files(small_disk, tmp_path)


def test_a_history_on_a_device_that_is_always_full(tmp_path):
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is, made here: never the real one
    plot = tmp_path / "curve.png"
    result = run_main("--no-render", "--max-episodes", 5, "--history", full, "--plot", plot)
    one_failure_line(result, full, "; the run stops")
    assert "Stopped by a failed write: trained 1 episodes" in result.stdout, "its first row is the first write"
    assert stat.S_ISCHR(os.stat(full).st_mode), "the device is left as it was"
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["curve.png", "full"]


@pytest.mark.parametrize("failing,other", [("--plot", "--save-model"), ("--save-model", "--plot")])
def test_a_plot_or_checkpoint_that_does_not_fit_leaves_the_other_written(failing, other, small_disk, tmp_path):
    name = {"--plot": "curve.png", "--save-model": "policy.pt"}
    older = small_disk / name[failing]
    older.write_bytes(b"from an earlier run")
    leave_free(small_disk, 0)
    history = tmp_path / "history.csv"
    result = run_main("--no-render", "--max-episodes", 5, failing, older, other, tmp_path / name[other],
                      "--history", history)
    one_failure_line(result, older)
    assert "Not solved in 5 episodes" in result.stdout
    assert older.read_bytes() == b"from an earlier run"
    assert sorted(os.listdir(small_disk)) == sorted(["filler", name[failing]])
    written = tmp_path / name[other]
    if other == "--plot":
        with Image.open(written) as image:
            assert image.format == "PNG"
    else:
        assert torch.load(written, weights_only=True)["info"]["episodes"] == 5
    assert len(history_rows(history)) == 5
    assert_no_temporary_files(tmp_path)


def test_a_clip_folder_removed_midway(tmp_path, capsys):
    outcome = rc.Outcome()
    env = rc.wrap_env(rc.make_env("CartPole-v0"), tmp_path / "clips")
    env.outcome, env.episode_trigger = outcome, lambda episode: True
    env.reset(seed=3)
    env.step(0)
    os.rmdir(tmp_path / "clips")
    env.reset(seed=4)  # ends the first clip, which has nowhere to go
    env.step(0)
    env.close()  # no second clip: recording has stopped
    captured = capsys.readouterr()
    assert captured.err == (f"reinforce_cartpole.py: cannot write {tmp_path / 'clips' / 'rl-video-episode-0.mp4'}: "
                            "No such file or directory; no more clips are recorded\n")
    assert captured.out == "" and outcome.failed == {"clip"} and outcome.cause is None
    assert os.listdir(tmp_path) == []
