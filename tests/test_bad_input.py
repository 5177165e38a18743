"""Bad input: exit status 2, one line that names the problem, no traceback, nothing written."""

import os
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import reinforce_cartpole as rc
from conftest import run_script

CASES = {
    "gamma zero": (["--gamma", "0"], "argument --gamma: must be in (0, 1], got 0"),
    "gamma above one": (["--gamma", "1.5"], "argument --gamma: must be in (0, 1], got 1.5"),
    "gamma negative": (["--gamma", "-0.5"], "--gamma"),
    "gamma nan": (["--gamma", "nan"], "got nan"),
    "gamma not a number": (["--gamma", "high"], "argument --gamma: invalid float value: 'high'"),
    "lr zero": (["--lr", "0"], "argument --lr: must be > 0, got 0"),
    "lr negative": (["--lr", "-1e-3"], "--lr"),
    "log interval zero": (["--log-interval", "0"], "argument --log-interval: must be >= 1, got 0"),
    "max episodes zero": (["--max-episodes", "0"], "--max-episodes"),
    "max episodes not an int": (["--max-episodes", "1.5"], "--max-episodes"),
    "eval episodes zero": (["--eval-episodes", "0"], "--eval-episodes"),
    "unknown env": (["--env-id", "NoSuchEnv-v0"], "--env-id NoSuchEnv-v0: "),
    "unknown env version": (["--env-id", "CartPole-v9"], "--env-id CartPole-v9: "),
    "continuous actions": (["--env-id", "Pendulum-v1"], "the action space must be Discrete"),
    "discrete observation": (["--env-id", "FrozenLake-v1"], "the observation must be a flat Box"),
    "unknown flag": (["--gama", "0.9"], "unrecognized arguments: --gama 0.9 (see --help)"),
    "abbreviated flag": (["--max-ep", "5"], "unrecognized arguments: --max-ep 5"),
    "seeds malformed": (["--seeds", "1-"], "argument --seeds: '1-': expected seeds such as 0-19 or 1,5,9, not '1-'"),
    "seeds backwards": (["--seeds", "5-2"], "argument --seeds: '5-2': the range '5-2' goes backwards"),
    "seeds not numbers": (["--seeds", "a,b"], "not 'a'"),
    "seeds empty": (["--seeds", ""], "argument --seeds: the list of seeds is empty"),
    "seeds duplicate": (["--seeds", "0-3,2"], "argument --seeds: '0-3,2': seed 2 is listed twice"),
    "seeds too many": (["--seeds", "0-100000000"], "argument --seeds: '0-100000000': more than 1000000 seeds"),
    "workers zero": (["--seeds", "0-3", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
    "resume without history": (["--seeds", "0-3", "--resume"], "--resume needs --history"),
    "workers with scheduler": (["--seeds", "1", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"],
                               "--workers applies to the cluster on this machine"),
    "several lr without seeds": (["--lr", "0.01,0.005"], "argument --lr: several values need --seeds"),
    "several gamma without seeds": (["--gamma", "0.9,0.99"], "argument --gamma: several values need --seeds"),
    "lr listed twice": (["--seeds", "1", "--lr", "0.01,0.01"], "argument --lr: a value is listed twice"),
    "lr listed twice, as it prints": (["--seeds", "1", "--lr", "0.01,1e-2"], "argument --lr: a value is listed twice"),
    "one of several lr out of range": (["--seeds", "1", "--lr", "0.01,-1"], "argument --lr: must be > 0, got -1"),
    "lr list not numbers": (["--seeds", "1", "--lr", "0.01,x"], "argument --lr: invalid float value: '0.01,x'"),
}


def assert_one_line_error(capsys, code, *needles):
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("reinforce_cartpole.py: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize("argv,needle", CASES.values(), ids=CASES.keys())
def test_bad_flag_values(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where --video-dir's default would be created
    assert_one_line_error(capsys, rc.main(argv), needle)
    assert os.listdir(tmp_path) == [], "checked before any file is written"


class ImageObservation(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode


def test_an_env_with_image_observations_is_refused(capsys):
    gym.register("ImageObservation-v9", entry_point=ImageObservation)
    try:
        code = rc.main(["--env-id", "ImageObservation-v9", "--no-render"])
    finally:
        del gym.registry["ImageObservation-v9"]
    assert_one_line_error(capsys, code, "flat Box", "(8, 8, 3)")


def test_a_video_dir_that_cannot_be_created(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = rc.main(["--video-dir", str(blocker / "video")])
    assert_one_line_error(capsys, code, "--video-dir", "cannot be created or written")


def test_a_bad_path_next_to_good_ones_creates_nothing(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = rc.main(["--plot", str(tmp_path / "plots" / "curve.png"), "--history", str(tmp_path / "runs" / "h.csv"),
                    "--save-model", str(tmp_path / "models" / "policy.pt"), "--video-dir", str(blocker / "video")])
    assert_one_line_error(capsys, code, "--video-dir", "cannot be created or written")
    assert os.listdir(tmp_path) == ["a-file"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY and WAYLAND_DISPLAY are Linux's")
def test_watch_without_a_display_trains_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = rc.main(["--watch", "--video-dir", str(tmp_path / "video")])
    assert_one_line_error(capsys, code, "--watch needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")
    assert not (tmp_path / "video").exists()


@pytest.mark.parametrize("module,package", [("moviepy", "moviepy"), ("pygame", "pygame-ce")])
def test_rendering_without_its_dependencies_says_what_to_install(module, package, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    code = rc.main(["--video-dir", str(tmp_path / "video")])
    assert_one_line_error(capsys, code, package, "pip install -r requirements.txt", "--no-render")
    assert not (tmp_path / "video").exists()


def test_the_real_entry_point_exits_2_without_a_traceback(tmp_path):
    result = run_script("--gamma", "2", "--video-dir", tmp_path / "video")
    assert result.returncode == 2
    assert result.stderr == ("reinforce_cartpole.py: error: argument --gamma: must be in (0, 1], got 2.0 "
                             "(see --help)\n")
    assert result.stdout == ""


def tampered(checkpoint, tmp_path, change):
    saved = torch.load(checkpoint, weights_only=True)
    change(saved)
    path = tmp_path / "tampered.pt"
    torch.save(saved, path)
    return path


def test_bad_checkpoints(checkpoint, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, foreign)
    wrong_weights = tampered(checkpoint, tmp_path, lambda s: s["policy"].update({"affine1.weight": torch.zeros(64, 4)}))
    cases = [
        (["--play", str(tmp_path / "missing.pt")], "No such file or directory"),
        (["--play", str(text)], "not a checkpoint written by --save-model"),
        (["--play", str(foreign)], "not a checkpoint written by --save-model"),
        (["--play", str(wrong_weights)], "its weights do not fit a policy for CartPole-v0"),
    ]
    for argv, needle in cases:
        video_dir = tmp_path / "video"
        assert_one_line_error(capsys, rc.main([*argv, "--video-dir", str(video_dir)]), f"--play {argv[1]}: {needle}")
        assert not video_dir.exists()
    # A directory: its wording is the system's own ("Is a directory", or "Permission denied" on Windows).
    assert_one_line_error(capsys, rc.main(["--play", str(tmp_path), "--no-render"]), f"--play {tmp_path}: ")


# Each flag at its default value, or a value that would otherwise pass.
AT_DEFAULT = {"--seed": ["543"], "--gamma": ["0.99"], "--log-interval": ["100"], "--max-episodes": ["1000000"],
              "--lr": ["0.01"], "--env-id": ["CartPole-v0"], "--seeds": ["0-3"], "--resume": [], "--workers": ["2"],
              "--scheduler": ["tcp://127.0.0.1:8786"], "--video-dir": ["video"], "--save-model": ["p.pt"],
              "--play": ["p.pt"], "--history": ["h.csv"], "--plot": ["p.png"], "--tensorboard": ["runs"],
              "--watch": []}
DOES_NOT_APPLY = {  # the command's flags, and the flags that do not apply to it
    "a single run": ([], ["--seeds", "--play"], ["--workers", "--resume", "--scheduler"]),
    "--seeds": (["--seeds", "0-3"], ["--play"], ["--seed", "--log-interval", "--save-model", "--watch"]),
    "--play": (["--play", "p.pt"], [], ["--seeds", "--lr", "--gamma", "--log-interval", "--max-episodes", "--env-id",
                                        "--history", "--plot", "--tensorboard", "--save-model", "--workers", "--resume",
                                        "--scheduler"]),
}


@pytest.mark.parametrize("command,flag", [(command, flag) for command, (_, _, flags) in DOES_NOT_APPLY.items()
                                          for flag in flags])
def test_a_flag_given_where_it_does_not_apply_is_refused_even_at_its_default(command, flag, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, _, _ = DOES_NOT_APPLY[command]
    code = rc.main([*argv, flag, *AT_DEFAULT[flag], "--no-render"])
    assert_one_line_error(capsys, code, f"{flag} does not apply to {command}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [["--no-render"], ["--seeds", "0-3"], ["--seeds", "0-3", "--no-render"]],
                         ids=["run without clips", "sweep, which records no clips by default", "sweep without clips"])
def test_a_video_dir_where_no_clip_is_recorded_is_refused(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, rc.main([*argv, "--video-dir", "video"]), "--video-dir applies where clips are "
                                                                            "recorded")
    assert os.listdir(tmp_path) == []


def test_a_tensorboard_folder_that_cannot_be_created(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = rc.main(["--no-render", "--tensorboard", str(blocker / "runs")])
    assert_one_line_error(capsys, code, "--tensorboard", "cannot be created or written")
    assert os.listdir(tmp_path) == ["a-file"]


@pytest.mark.parametrize("flag", ["--save-model", "--history", "--plot"])
def test_output_files_that_cannot_be_written(flag, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = rc.main(["--no-render", flag, str(blocker / "out")])
    assert_one_line_error(capsys, code, flag, "cannot be created or written")


@pytest.mark.parametrize("flag", ["--save-model", "--history", "--plot"])
def test_a_folder_given_as_an_output_file_trains_nothing_and_creates_nothing(flag, tmp_path, capsys):
    """A folder that exists, or a path with a trailing separator, such as pdir/, which would become one."""
    for path in (str(tmp_path), str(tmp_path / "new") + os.sep):
        code = rc.main(["--no-render", flag, path])
        assert_one_line_error(capsys, code, f"{flag} {path}: is a folder, not a file's path")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv,needle", [
    (["--history", "{tmp}/out.x", "--plot", "{tmp}/out.x"], "--history {tmp}/out.x: --plot writes there too"),
    (["--seeds", "0-1", "--history", "{tmp}/runs.csv", "--plot", "{tmp}/runs.csv.jsonl"],
     "--history's record {tmp}/runs.csv.jsonl: --plot writes there too"),
    (["--plot", "{tmp}/link.png", "--save-model", "{tmp}/target"], "--plot {tmp}/link.png: --save-model writes there"),
], ids=["the same name", "the record of --history", "a link to the other"])
def test_two_outputs_on_one_path_are_refused_and_nothing_is_created(argv, needle, tmp_path, capsys):
    (tmp_path / "link.png").symlink_to(tmp_path / "target")
    code = rc.main(["--no-render", *(arg.format(tmp=tmp_path) for arg in argv)])
    assert_one_line_error(capsys, code, needle.format(tmp=tmp_path))
    assert os.listdir(tmp_path) == ["link.png"]


def test_a_record_path_that_is_a_folder_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "h.csv.jsonl").mkdir()
    code = rc.main(["--seeds", "0-1", "--history", str(tmp_path / "h.csv")])
    assert_one_line_error(capsys, code, f"--history's record {tmp_path}/h.csv.jsonl: is a folder, not a file's path")
    assert os.listdir(tmp_path) == ["h.csv.jsonl"]


def test_a_file_where_a_runs_clips_go_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "CartPole-v0-lr0.01-gamma0.99-seed1").write_text("")
    code = rc.main(["--seeds", "0-1", "--render", "--video-dir", str(tmp_path)])
    assert_one_line_error(capsys, code, f"--video-dir's folder for lr 0.01, gamma 0.99, seed 1 {tmp_path}/"
                                        "CartPole-v0-lr0.01-gamma0.99-seed1: is a file, not a folder")
    assert os.listdir(tmp_path) == ["CartPole-v0-lr0.01-gamma0.99-seed1"]


def test_a_leading_tilde_expands_as_the_shell_would_after_an_equals_sign(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert rc.main(["--no-render", "--max-episodes", "1", "--history=~/x.csv", "--plot=~/plots/x.png"]) == 1
    assert os.listdir(tmp_path) == ["home"], "no folder named ~"
    assert {"plots", "x.csv"} <= set(os.listdir(tmp_path / "home"))  # and matplotlib's cache of fonts
