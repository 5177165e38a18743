"""Whole runs through the real entry point: solving, the same run for the same seed, and the
port learning exactly what the tutorial's code as written learns."""

import contextlib
import io
import re

import pytest

import reinforce_cartpole as rc
from as_written import run_as_written
from conftest import RECORDED_RUN, SOLVE_MAX_EPISODES, SOLVED_RUN, episode_lines, history_rows, run_main

STATE_FIELDS = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters", "output", "batch", "metrics",
                "dataloader", "seed", "times", "running_reward", "observation", "ep_reward", "timestep")


def state_block(out):
    """The fields of the `State:` block that print(trainer.state) writes, in order."""
    block = out.split("State:\n", 1)[1]
    return dict(re.findall(r"^\t(\w+): (.*)$", block.split("\n\n", 1)[0], re.M))


@SOLVED_RUN
def test_trains_until_solved(solved_run):
    result, _ = solved_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", "a headless run prints no warnings"
    assert re.search(r"^Solved! Running reward is now [\d.]+ and the last episode runs to \d+ time steps!$",
                     result.stdout, re.M)
    state = state_block(result.stdout)
    assert tuple(state) == STATE_FIELDS  # the tutorial prints the whole state
    assert float(state["running_reward"]) > 195 and state["epoch_length"] == "10000"
    assert int(state["epoch"]) < SOLVE_MAX_EPISODES


def port_returns(seed, episodes, tmp_path):
    """The port's per-episode returns, through main() and its --history."""
    history = tmp_path / f"history-{seed}.csv"
    run_main("--no-render", "--seed", seed, "--max-episodes", episodes, "--history", history)
    return [float(row["return"]) for row in history_rows(history)]


@pytest.mark.filterwarnings("ignore:.*The environment CartPole-v0 is out of date")  # as written: warns
@pytest.mark.parametrize("seed", [543, 7])
def test_the_port_learns_what_the_tutorials_code_as_written_learns(seed, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        as_written = run_as_written(seed=seed, max_episodes=40)
    port = port_returns(seed, 40, tmp_path)
    assert len(port) == 40 and port == as_written
    assert port != port_returns(seed + 1, 40, tmp_path), "another seed gives another run"


@RECORDED_RUN
def test_the_same_seed_gives_the_same_run_in_another_process_and_with_recording(recorded_run, capsys):
    recorded, _ = recorded_run
    assert recorded.returncode == 1, recorded.stderr  # 10 episodes do not solve it
    rc.main(["--no-render", "--seed", "7", "--max-episodes", "10", "--log-interval", "1"])
    not_recorded = episode_lines(capsys.readouterr().out)
    assert len(not_recorded) == 10 and episode_lines(recorded.stdout) == not_recorded
