"""A sweep's statistics: the share of seeds solved by each episode, Wilson's interval of the share solved, the median's
interval from order statistics, the chance that one setting solves faster than another, and the verdicts on every
pair of settings, which keep at most 5 % false verdicts together, by simulation and on hand cases; a summary that
depends on the runs alone, not on their order."""

import bisect
import math
import random
import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import reinforce_cartpole as rc


def results_of(*episodes, max_episodes=1000):
    """A result per count of episodes to solve, where None is a run that did not solve in max_episodes."""
    return [{"episodes": max_episodes if e is None else e, "solved": e is not None, "score": 200.0, "rows": []}
            for e in episodes]


def summary_of(*settings, max_episodes=1000):
    """The summary of a sweep whose lr 0.01, 0.02, ... solve in these episodes each (None: not solved)."""
    runs, results = [], {}
    for lr, episodes in zip((0.01, 0.02, 0.03, 0.04, 0.05), settings):
        for seed, result in enumerate(results_of(*episodes, max_episodes=max_episodes)):
            results[len(runs)] = result
            runs.append(rc.Run(lr, 0.99, seed))
    return rc.summary_lines(runs, results)


def test_the_share_solved_by_each_episode_counts_solved_runs_only():
    episodes, solved = rc.solved_by_episode(results_of(100, 200, None), last=1000)
    share_by = lambda episode: solved[bisect.bisect_right(episodes, episode) - 1] / 3  # noqa: E731
    assert [share_by(e) for e in (0, 99, 100, 150, 199)] == [0, 0, 1 / 3, 1 / 3, 1 / 3]
    assert [share_by(e) for e in (200, 500, 1000)] == [2 / 3] * 3 and max(solved) / 3 < 1


def test_wilson_interval_of_19_solved_of_20():
    assert [round(end, 3) for end in rc.wilson_interval(19, 20)] == [0.764, 0.991]


def test_the_median_has_an_interval_of_order_statistics_from_6_runs_on():
    twenty = random.Random(0).sample(range(101, 121), 20)
    assert rc.median_interval(np.array(twenty, dtype=float)) == (110.5, (106, 115))
    assert rc.median_interval(np.array([100, 200, 300, 400, 500], dtype=float))[1] is None
    assert rc.median_interval(np.array([100, 200, 300, 400, 500, 600], dtype=float))[1] == (100, 600)


def test_a_median_that_half_the_runs_do_not_reach_is_said_so_in_whole_episodes():
    """Of 244, 345, unsolved and unsolved the median is not known; of 244, 345, 500 and unsolved it is 422.5."""
    [table_header, row, *_] = summary_of([244, 345, None, None], max_episodes=1000000)
    assert row.split()[2:] == ["2", "of", "4", "[15,", "85", "%]", "not", "reached", "200.0"]
    assert summary_of([244, 345, 500, None], max_episodes=1000000)[1].split()[8] == "422.5"
    assert "e+" not in row


def test_an_interval_end_that_an_unsolved_run_enters_is_not_reached():
    episodes = np.array([300, 310, 320, 330, 340, 350, 360, np.inf, np.inf, np.inf])
    assert rc.median_interval(episodes) == (345, (310, np.inf))
    row = summary_of([300, 310, 320, 330, 340, 350, 360, None, None, None])[1]
    assert "345 [310, not reached]" in row


def test_the_chance_to_solve_faster_counts_every_seed_pair_and_ties_as_half():
    assert rc.chance_faster(np.array([100, 200, np.inf]), np.array([150, np.inf, np.inf])) == 6 / 9
    rng = np.random.default_rng(0)
    a, b = (np.where(rng.random(30) < 0.2, np.inf, rng.integers(100, 130, 30)) for _ in range(2))
    pairs = (np.less.outer(a, b) + np.equal.outer(a, b) / 2).mean()
    assert rc.chance_faster(a, b) == pytest.approx(pairs) and rc.chance_faster(a, b) + rc.chance_faster(b, a) == 1


def test_holm_multiplies_the_smallest_p_value_by_the_number_of_comparisons_and_keeps_the_order():
    assert rc.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert rc.holm([0.5, 0.9]) == pytest.approx([1, 1]) and len(rc.holm([])) == 0


VERDICT = re.compile(r"^(lr \S+) solved in fewer episodes than (lr \S+) in (\d+) % of seed pairs: "
                     r"(a clear|no clear) difference \(p (?:=|<) ([\d.]+)(?:, adjusted for (\d+) comparisons)?\)$")


def verdicts_in(lines):
    """(faster, slower, percent, clear, p, comparisons) of each verdict line."""
    return [VERDICT.match(line).groups() for line in lines if VERDICT.match(line)]


def false_verdict_share(settings, sweeps, seeds=10, resamples=999):
    """The share of `sweeps` simulated sweeps with any clear difference among `settings` settings drawn from one
    distribution: episodes to solve lognormal around 500, 0 to 30 % of runs unsolved. The tests draw 999 permutations
    a comparison, not the sweep's 9999: as valid a test, ten times as fast."""
    rng = np.random.default_rng(settings)
    with_false = 0
    for _ in range(sweeps):
        unsolved = rng.uniform(0, 0.3)
        episodes = {setting: np.where(rng.random(seeds) < unsolved, np.inf, np.round(rng.lognormal(np.log(500), 0.5,
                                                                                                     seeds)))
                    for setting in range(settings)}
        lines = rc.verdicts(episodes, {setting: f"lr {setting}" for setting in episodes}, resamples)
        with_false += any(clear == "a clear" for *_, clear, _, _ in verdicts_in(lines))
    return with_false / sweeps


@pytest.mark.parametrize("settings", [3, 5])
def test_settings_that_do_not_differ_get_a_false_verdict_in_at_most_5_percent_of_sweeps(settings):
    sweeps = 400
    share = false_verdict_share(settings, sweeps)
    assert share <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / sweeps), f"{share:.1%} of sweeps hold a false verdict"


def test_every_pair_of_settings_is_compared_and_adjusted_for_their_number():
    lines = summary_of(*([e + shift for e in range(100, 106)] for shift in (0, 300, 800)))
    found = verdicts_in(lines)
    assert [(faster, slower) for faster, slower, *_ in found] == [("lr 0.01", "lr 0.02"), ("lr 0.01", "lr 0.03"),
                                                                  ("lr 0.02", "lr 0.03")]
    assert all(percent == "100" and clear == "a clear" and comparisons == "3"
               for _, _, percent, clear, _, comparisons in found), lines


def swapped(line):
    """The line with lr 0.01 and lr 0.02 swapped, as of a sweep that lists them the other way round."""
    return line.replace("lr 0.01", "lr X").replace("lr 0.02", "lr 0.01").replace("lr X", "lr 0.02")


def test_settings_apart_at_6_seeds_get_a_verdict_and_at_5_too_few_runs():
    fast, slow = list(range(100, 106)), [200, 300, 400, 500, None, None]
    line = "lr 0.01 solved in fewer episodes than lr 0.02 in 100 % of seed pairs: a clear difference (p = 0.003)"
    assert summary_of(fast, slow)[-1] == line and summary_of(slow, fast)[-1] == swapped(line)
    assert summary_of(fast[:5], slow)[-1] == "lr 0.01 and lr 0.02: too few runs to compare (it takes 6 of each)"


def test_identical_settings_tie_with_no_clear_difference():
    runs = [120, 180, 240, 310, 400, None, 500, 260]
    assert summary_of(runs, runs)[-1] == ("lr 0.01 and lr 0.02 tie, each faster in half the seed pairs: "
                                          "no clear difference (p = 1)")


def test_settings_whose_medians_are_not_reached_are_not_ordered_by_their_place_in_the_command():
    """Medians that half the runs do not reach tie in the table; the verdict comes from the runs, as it would were the
    settings listed the other way round."""
    a, b = [650, 700, None, None, None, None], [995, 998, None, None, None, None]
    lines = summary_of(a, b)
    assert [line.split()[-3:-1] for line in lines[1:3]] == [["not", "reached"]] * 2
    assert lines[-1].startswith("lr 0.01 solved in fewer episodes than lr 0.02 in 56 %")
    assert lines[-1] == swapped(summary_of(b, a)[-1])


# Settings whose chance, 66 %, had a 95 % bootstrap interval that the earlier summary printed as [50, 81] beside a
# verdict.
CLOSE_A = [468, 808, None, 449, 449, 860, None, 1226, 297, 557, None, 549, None, 803, 610, 229, 804, 963, 351, None,
           437, 284, 625, 256, 294, 214]
CLOSE_B = [367, 1057, 232, 545, 414, 562, 389, 321, 462, 475, 374, 276, 243, 334, 397, 587, 332, 319, 210, 357, 1200,
           863, 223, 444, 531, 1000]
# Settings whose p-values lie just above and just below 5 %: 0.0574, 0.0504 and 0.045.
NEAR_5_PERCENT = [([394, 834, 247, 364, 362, 593, 675, None], [1087, 577, 1125, None, None, 720, 458, 911]),
                  ([915, 286, 236, 473, None, None, 360, 292], [None, None, None, 504, 752, None, 521, None]),
                  ([430, 245, 267, 680, 267, 394, None, 299], [690, 472, 1767, 952, 357, 675, 867, None])]


def test_the_numbers_printed_beside_a_verdict_never_contradict_it():
    rng = np.random.default_rng(3)
    cases = [(CLOSE_A, CLOSE_B), *NEAR_5_PERCENT] + [tuple([None if rng.random() < 0.15 else int(e) for e in
                                           np.round(rng.lognormal(np.log(500), 0.5, 26))] for _ in range(2))
                                    for _ in range(15)]
    for a, b in cases:
        line = summary_of(a, b, max_episodes=2000)[-1]
        assert "[" not in line and " 50 %" not in line, line
        [(_, _, percent, clear, p, _)] = verdicts_in([line]) or [(None,) * 6]
        assert clear is None or (int(percent) > 50 and (float(p) <= 0.05) == (clear == "a clear")), line


def test_the_p_value_is_the_same_whatever_the_order_of_the_settings_and_of_their_runs():
    """At 10 runs each, the permutations are drawn (there are 184756): the same draws, whichever way round."""
    rng = np.random.default_rng(4)
    a, b = (np.where(rng.random(10) < 0.2, np.inf, np.round(rng.lognormal(np.log(500), 0.5, 10))) for _ in range(2))
    p = rc.p_value(a, b)
    assert 0.01 < p < 1 and rc.p_value(b, a) == p and rc.p_value(rng.permutation(a), rng.permutation(b)) == p


def test_the_summary_of_the_same_runs_finished_in_another_order_is_the_same():
    runs = [rc.Run(lr, 0.99, seed) for lr in (0.02, 0.01, 0.005) for seed in range(8)]
    rng = np.random.default_rng(1)
    shift = {0.02: 150, 0.01: 100, 0.005: 800}
    results = {i: results_of(int(rng.integers(0, 150)) + shift[run.lr])[0] for i, run in enumerate(runs)}
    lines = rc.summary_lines(runs, results)
    for order in range(5):  # the permutations drawn are the same, whatever order the runs finished in
        shuffled = list(results.items())
        random.Random(order).shuffle(shuffled)
        assert rc.summary_lines(runs, dict(shuffled)) == lines


def test_a_partial_summary_says_so_and_counts_the_finished_runs_alone():
    runs = [rc.Run(lr, 0.99, seed) for lr in (0.02, 0.01) for seed in range(8)]
    results = dict(enumerate(results_of(*range(100, 116))))
    del results[3], results[12]
    lines = rc.summary_lines(runs, results)
    assert lines[0] == "Partial: the statistics of the 14 finished runs of 16"
    assert lines[2].split()[2:5] == ["7", "of", "7"] and lines[2].endswith("(1 runs unfinished)")


def test_the_sweep_figure_has_the_share_solved_below_the_running_reward_and_legends_beside_them(tmp_path,
                                                                                                 monkeypatch):
    rows = [rc.Row(e, 20, 20.0, 10.0 + e, 0.0) for e in range(1, 201)]
    settings = {"lr 0.01, gamma 0.99": [{**result, "rows": rows[:result["episodes"]]}
                                        for result in results_of(150, 200, None, max_episodes=200)]}
    rc.write_sweep_plot(tmp_path / "runs.png", settings, 195, "runs")
    with Image.open(tmp_path / "runs.png") as image:
        assert image.size == (1100, 900), "two panels, each 4.5 inches high"
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    rc.write_sweep_plot(tmp_path / "again.png", settings, 195, "runs")
    [figure] = drawn
    figure.draw_without_rendering()
    for ax in figure.axes:
        assert not ax.get_legend().get_window_extent().overlaps(ax.get_window_extent()), "a legend over the data"
