"""The port's speed-ups change nothing it computes: it learns exactly as the tutorial's code."""

import contextlib
import io

import pytest

from benchmark import run_as_written, run_port

# The as-written path makes CartPole-v0 as the tutorial does, warning and all.
pytestmark = pytest.mark.filterwarnings("ignore:.*The environment CartPole-v0 is out of date")


@pytest.mark.parametrize("seed", [543, 7])
def test_the_port_and_the_as_written_path_give_the_same_returns(seed):
    with contextlib.redirect_stdout(io.StringIO()):
        as_written = run_as_written(seed=seed, max_episodes=60)
        port = run_port(seed=seed, max_episodes=60)
    assert len(port) == 60
    assert port == as_written


def test_the_as_written_path_differs_for_another_seed():
    # Guards the test above against comparing two runs that ignore the seed.
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_as_written(seed=1, max_episodes=20) != run_as_written(seed=2, max_episodes=20)
