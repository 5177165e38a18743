"""Bad input: exit status 2, one line that names the problem, no traceback, nothing written."""

import sys

import pytest

import reinforce_cartpole as rc

CASES = {
    "gamma zero": (["--gamma", "0"], "--gamma"),
    "gamma above one": (["--gamma", "1.5"], "--gamma"),
    "gamma negative": (["--gamma", "-0.5"], "--gamma"),
    "gamma nan": (["--gamma", "nan"], "--gamma"),
    "gamma not a number": (["--gamma", "high"], "--gamma"),
    "lr zero": (["--lr", "0"], "--lr"),
    "lr negative": (["--lr", "-1e-3"], "--lr"),
    "log interval zero": (["--log-interval", "0"], "--log-interval"),
    "max episodes zero": (["--max-episodes", "0"], "--max-episodes"),
    "max episodes not an int": (["--max-episodes", "1.5"], "--max-episodes"),
    "unknown env": (["--env-id", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
    "unknown env version": (["--env-id", "CartPole-v9"], "CartPole-v9"),
    "continuous actions": (["--env-id", "Pendulum-v1"], "Discrete"),
    "discrete observation": (["--env-id", "FrozenLake-v1"], "flat Box"),
    "unknown flag": (["--gama", "0.9"], "--gama"),
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
def test_bad_flag_values(argv, needle, capsys, tmp_path):
    video_dir = tmp_path / "video"
    code = rc.main([*argv, "--video-dir", str(video_dir)])
    assert_one_line_error(capsys, code, needle)
    assert not video_dir.exists(), "checked before any file is written"


def test_an_env_with_image_observations_is_refused(capsys, tmp_path):
    from test_units import ImageObservation
    import gymnasium as gym

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


@pytest.mark.parametrize("module,package", [("moviepy", "moviepy"), ("pygame", "pygame-ce")])
def test_rendering_without_its_dependencies_says_what_to_install(module, package, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    code = rc.main(["--video-dir", str(tmp_path / "video")])
    assert_one_line_error(capsys, code, package, "pip install -r requirements.txt", "--no-render")
    assert not (tmp_path / "video").exists()


def test_the_real_entry_point_exits_2_without_a_traceback(run, tmp_path):
    result = run("--gamma", "2", "--video-dir", tmp_path / "video")
    assert result.returncode == 2
    assert result.stderr.strip() == "reinforce_cartpole.py: error: argument --gamma: gamma must be (0, 1], got 2"
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "policy.pt"
    assert rc.main(["--no-render", "--max-episodes", "2", "--log-interval", "1", "--save-model", str(path)]) == 1
    return path


def tampered(checkpoint, tmp_path, change):
    import torch

    saved = torch.load(checkpoint, weights_only=True)
    change(saved)
    path = tmp_path / "tampered.pt"
    torch.save(saved, path)
    return path


def test_a_valid_checkpoint_plays(checkpoint, capsys):
    assert rc.main(["--play", str(checkpoint), "--no-render", "--eval-episodes", "2"]) == 0
    assert "Played 2 episodes of CartPole-v0" in capsys.readouterr().out


def test_bad_checkpoints(checkpoint, tmp_path, capsys):
    import torch

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, foreign)
    other_sizes = tampered(checkpoint, tmp_path, lambda s: s["info"].update(observation_size=6, n_actions=3))
    cases = [
        (["--play", str(tmp_path / "missing.pt")], "no such file"),
        (["--play", str(text)], "not a checkpoint"),
        (["--play", str(tmp_path)], "is a directory"),
        (["--play", str(foreign)], "not a checkpoint written by --save-model"),
        (["--play", str(checkpoint), "--env-id", "CartPole-v1"], "conflicts with"),
        (["--play", str(checkpoint), "--env-id", "Acrobot-v1"], "trained on CartPole-v0"),
        (["--play", str(other_sizes)], "made for 6 observations and 3 actions, but CartPole-v0 has 4 and 2"),
    ]
    for argv, needle in cases:
        video_dir = tmp_path / "video"
        code = rc.main([*argv, "--video-dir", str(video_dir)])
        assert_one_line_error(capsys, code, needle)
        assert not video_dir.exists()


def test_weights_that_do_not_fit_the_policy(checkpoint, tmp_path, capsys):
    import torch

    path = tampered(checkpoint, tmp_path, lambda s: s["policy"].update({"affine1.weight": torch.zeros(64, 4)}))
    assert_one_line_error(capsys, rc.main(["--play", str(path), "--no-render"]), "weights do not fit")


@pytest.mark.parametrize("flag", ["--save-model", "--history", "--plot"])
def test_play_does_not_take_training_outputs(flag, checkpoint, tmp_path, capsys):
    code = rc.main(["--play", str(checkpoint), flag, str(tmp_path / "out"), "--no-render"])
    assert_one_line_error(capsys, code, flag, "--play")


@pytest.mark.parametrize("flag", ["--save-model", "--history", "--plot"])
def test_output_files_that_cannot_be_written(flag, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = rc.main(["--no-render", flag, str(blocker / "out")])
    assert_one_line_error(capsys, code, flag, "cannot be created or written")
    assert_one_line_error(capsys, rc.main(["--no-render", flag, str(tmp_path)]), flag, "is a directory")


def test_eval_episodes_must_be_positive(capsys):
    assert_one_line_error(capsys, rc.main(["--eval-episodes", "0", "--no-render"]), "--eval-episodes")
