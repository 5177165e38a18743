"""A sweep's statistics, on hand-computed cases: the share of seeds solved by each episode, Wilson's interval of the
share solved, the median's interval from order statistics, the chance that one setting solves faster than another
and the verdict on it, and a summary that depends on the runs alone, not on the order in which they finished."""

import bisect
import random

import numpy as np
import pytest
from PIL import Image

import reinforce_cartpole as rc


def results_of(*episodes, max_episodes=1000):
    """A result per count of episodes to solve, where None is a run that did not solve in max_episodes."""
    return [{"episodes": max_episodes if e is None else e, "solved": e is not None, "score": 200.0, "rows": []}
            for e in episodes]


def test_the_share_solved_by_each_episode_counts_solved_runs_only():
    episodes, solved = rc.solved_by_episode(results_of(100, 200, None), last=1000)
    share_by = lambda episode: solved[bisect.bisect_right(episodes, episode) - 1] / 3  # noqa: E731
    assert [share_by(e) for e in (0, 99, 100, 150, 199)] == [0, 0, 1 / 3, 1 / 3, 1 / 3]
    assert [share_by(e) for e in (200, 500, 1000)] == [2 / 3] * 3 and max(solved) / 3 < 1


def test_wilson_interval_of_19_solved_of_20():
    assert [round(end, 3) for end in rc.wilson_interval(19, 20)] == [0.764, 0.991]


def test_the_median_has_an_interval_of_order_statistics_from_6_runs_on():
    twenty = random.Random(0).sample(range(101, 121), 20)
    assert rc.median_interval(np.array(twenty, dtype=float), 1000) == ((110.5, False), (106, 115))
    assert rc.median_interval(np.array([100, 200, 300, 400, 500], dtype=float), 1000)[1] is None
    assert rc.median_interval(np.array([100, 200, 300, 400, 500, 600], dtype=float), 1000)[1] == (100, 600)


def test_a_median_that_the_runs_only_bound_from_below_is_shown_as_that_bound():
    """Of 244, 345, >600 and >600 episodes the median is above (345 + 600) / 2, which is all that the runs show."""
    runs = [rc.Run(0.01, 0.99, seed) for seed in range(4)]
    results = dict(enumerate(results_of(244, 345, None, None, max_episodes=600)))
    [_, row, *_] = rc.summary_lines(runs, results, 600)
    assert row.split()[2:] == ["2/4", "[0.15,", "0.85]", ">472.5", "(n", "<", "6)", "244", "to", ">600", "200.0"]
    results[3] = results_of(500)[0]
    assert rc.summary_lines(runs, results, 600)[1].split()[5] == "422.5", "244, 345, 500, >600: exact"


def test_an_interval_end_that_an_unsolved_run_enters_is_a_bound():
    episodes = np.array([300, 310, 320, 330, 340, 350, 360, np.inf, np.inf, np.inf])
    assert rc.median_interval(episodes, 1000) == ((345, False), (310, np.inf))
    runs = [rc.Run(0.01, 0.99, seed) for seed in range(10)]
    results = dict(enumerate(results_of(300, 310, 320, 330, 340, 350, 360, None, None, None)))
    assert rc.summary_lines(runs, results, 1000)[1].split()[5:9] == ["345", "[310,", ">1000]", "300"]


def test_the_chance_to_solve_faster_counts_every_seed_pair_and_ties_as_half():
    assert rc.chance_faster(np.array([100, 200, np.inf]), np.array([150, np.inf, np.inf])) == 6 / 9
    rng = np.random.default_rng(0)
    a, b = (np.where(rng.random(30) < 0.2, np.inf, rng.integers(100, 130, 30)) for _ in range(2))
    pairs = (np.less.outer(a, b) + np.equal.outer(a, b) / 2).mean()
    assert rc.chance_faster(a, b) == pytest.approx(pairs) and rc.chance_faster(a, b) + rc.chance_faster(b, a) == 1


def test_identical_settings_are_not_told_apart():
    a = np.array([120, 180, 240, 310, 400, np.inf, 500, 260])
    assert rc.chance_faster(a, a.copy()) == 0.5
    assert rc.verdict("lr 0.01", a, "lr 0.02", a.copy()).startswith("lr 0.01 and lr 0.02: not told apart (50 % [")


def test_a_setting_that_always_solves_faster_does_so_in_every_seed_pair():
    fast, slow = np.arange(100.0, 106.0), np.array([200, 300, 400, 500, np.inf, np.inf])
    line = "lr 0.01 solves faster than lr 0.02 in 100 % of seed pairs [100, 100]"
    assert rc.verdict("lr 0.01", fast, "lr 0.02", slow) == rc.verdict("lr 0.02", slow, "lr 0.01", fast) == line
    assert "too few seeds" in rc.verdict("lr 0.01", fast[:5], "lr 0.02", slow)


def sweep_results(seeds=8, shift_of_lr_002=300):
    """Three settings' runs, where those of lr 0.01 solve in the fewest episodes: (runs, {index: result})."""
    runs = [rc.Run(lr, 0.99, seed) for lr in (0.02, 0.01, 0.005) for seed in range(seeds)]
    rng = np.random.default_rng(1)
    shift = {0.02: shift_of_lr_002, 0.01: 100, 0.005: 800}
    return runs, {i: results_of(int(rng.integers(0, 150)) + shift[run.lr])[0] for i, run in enumerate(runs)}


def test_each_setting_is_set_against_the_one_with_the_lowest_median():
    runs, results = sweep_results()
    verdicts = rc.summary_lines(runs, results, 1000)[-2:]
    assert verdicts == ["lr 0.01 solves faster than lr 0.02 in 100 % of seed pairs [100, 100]",
                        "lr 0.01 solves faster than lr 0.005 in 100 % of seed pairs [100, 100]"]


def test_the_summary_of_the_same_runs_finished_in_another_order_is_the_same():
    runs, results = sweep_results(shift_of_lr_002=150)  # settings that overlap: the bootstrap's draws matter
    lines = rc.summary_lines(runs, results, 1000)
    assert "[100, 100]" not in lines[-2], lines[-2]
    for order in range(20):  # the bootstrap draws the same indices, which hold other runs in another order
        shuffled = list(results.items())
        random.Random(order).shuffle(shuffled)
        assert rc.summary_lines(runs, dict(shuffled), 1000) == lines


def test_a_partial_summary_says_so_and_counts_the_finished_runs_alone():
    runs, results = sweep_results()
    del results[3], results[20]
    lines = rc.summary_lines(runs, results, 1000)
    assert lines[0] == "Partial: the statistics of the 22 finished runs of 24"
    assert lines[2].split()[2] == "7/7" and lines[2].endswith("(1 runs unfinished)")


def test_the_sweep_figure_has_the_share_solved_below_the_running_reward(tmp_path):
    rows = [rc.Row(e, 20, 20.0, 10.0 + e, 0.0) for e in range(1, 201)]
    settings = {"lr 0.01, gamma 0.99": [{**result, "rows": rows[:result["episodes"]]}
                                        for result in results_of(150, 200, None, max_episodes=200)]}
    rc.write_sweep_plot(tmp_path / "runs.png", settings, 195, "runs")
    assert Image.open(tmp_path / "runs.png").size == (800, 900), "two panels, each 4.5 inches high"
