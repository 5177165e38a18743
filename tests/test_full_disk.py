"""A full disk loses nothing: a write that fails gets one line naming the file and the OS's reason, and exit
status 3. A clip that cannot be written stops the run as a signal does; the history, the plot and the checkpoint are
written last, each on its own. Only whole files are left, and a file that a failed write would have replaced stays
as it was. Linux as root only: the tests mount a small tmpfs. Each run is main() in the test's own process, as a full
disk needs no process of its own."""

import os
import re
import stat
import sys

import pytest
import torch
from PIL import Image

import reinforce_cartpole as rc
from conftest import clip_folder, decoded_frames, history_rows, leave_free, run_main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="mounts a tmpfs: Linux, as root (CI runs so)")


def one_failure_line(result, path):
    assert result.stderr == f"reinforce_cartpole.py: cannot write {path}: No space left on device\n"
    assert result.returncode == 3


def assert_no_temporary_files(*folders):
    for folder in folders:
        assert not [name for name in os.listdir(folder) if ".tmp" in name], os.listdir(folder)


def test_a_clip_that_does_not_fit_stops_the_run_and_keeps_what_it_trained(small_disk, tmp_path):
    clips = clip_folder(small_disk, seed=7)
    clips.mkdir()
    older = clips / "rl-video-episode-1.mp4"  # from an earlier run, which this one would replace
    older.write_bytes(b"an older clip")
    leave_free(small_disk, 1)  # room for the first clip (3 KB), not for the second
    history, plot = tmp_path / "history.csv", tmp_path / "curve.png"
    result = run_main("--seed", 7, "--max-episodes", 30, "--video-dir", small_disk, "--history", history,
                      "--plot", plot)
    one_failure_line(result, clips / "rl-video-episode-1.mp4")
    assert re.findall(r"^Video: (.*)$", result.stdout, re.M) == [str(clips / "rl-video-episode-0.mp4")]
    assert decoded_frames(clips / "rl-video-episode-0.mp4")[1] > 0
    assert older.read_bytes() == b"an older clip"
    assert sorted(os.listdir(clips)) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    # Episode 1's clip is written as episode 2 starts (RecordVideo counts from 0): two episodes were trained.
    assert [int(row["episode"]) for row in history_rows(history)] == [1, 2]
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert "Trained agent" not in result.stdout and "Not solved" not in result.stdout
    assert_no_temporary_files(small_disk, clips, tmp_path)


def test_a_history_that_does_not_fit_leaves_the_file_it_would_replace(small_disk, tmp_path):
    history = small_disk / "history.csv"
    history.write_text("from an earlier run\n")
    leave_free(small_disk, 1)  # about 130 rows
    plot, model = tmp_path / "curve.png", tmp_path / "policy.pt"
    result = run_main("--no-render", "--seed", 7, "--max-episodes", 200, "--history", history, "--plot", plot,
                      "--save-model", model)
    one_failure_line(result, history)
    assert history.read_text() == "from an earlier run\n"
    assert torch.load(model, weights_only=True)["info"]["episodes"] == 200, "the run trained to its end"
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert_no_temporary_files(small_disk, tmp_path)


def test_a_history_on_a_device_that_is_always_full(tmp_path):
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is, made here: never the real one
    plot, model = tmp_path / "curve.png", tmp_path / "policy.pt"
    result = run_main("--no-render", "--max-episodes", 5, "--history", full, "--plot", plot, "--save-model", model)
    one_failure_line(result, full)
    assert torch.load(model, weights_only=True)["info"]["episodes"] == 5, "the history is written as the run ends"
    assert stat.S_ISCHR(os.stat(full).st_mode), "the device is left as it was"
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["curve.png", "full", "policy.pt"]


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


def test_a_clip_whose_folder_became_a_file_raises_an_error_that_names_the_clip(tmp_path, capsys):
    env = rc.wrap_env(rc.make_env("CartPole-v0"), tmp_path / "clips", episode_trigger=lambda episode: True)
    env.reset(seed=3)
    env.step(0)
    os.rmdir(tmp_path / "clips")
    (tmp_path / "clips").write_text("a file where the clips went")
    with pytest.raises(OSError) as raised:
        env.reset(seed=4)  # ends the first clip, which has nowhere to go
    assert (raised.value.filename, raised.value.strerror) == (str(tmp_path / "clips" / "rl-video-episode-0.mp4"),
                                                              "File exists")
    assert capsys.readouterr().out == "" and os.listdir(tmp_path) == ["clips"]
