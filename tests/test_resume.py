"""--resume and the sweep's record, beside --history: a resumed sweep only appends to the record, so that a failure at
any point loses no run that it held (a line cut short by it is dropped by the next --resume); a record that cannot be read, or is another sweep's, is refused with one line
and changes nothing; a torn last line (a kill while it was written) is dropped, and its run trained again; and a sweep
without --resume does not replace a record of finished runs."""

import json
import os
import sys

import pytest

import reinforce_cartpole as rc
from conftest import ROOT, SWEEP, assert_equals_the_reference, curves, run_main, runs_in, script_command, sweep_outputs


def record_lines(path):
    with open(rc.record_path(path)) as f:
        return [json.loads(line) for line in f]


def write_record(history, lines):
    with open(rc.record_path(history), "w") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))


def stopped_sweep(folder, reference_sweep, finished=3, tamper=lambda record: record):
    """The files that SWEEP leaves if it stops after its first `finished` runs: the reference's record cut there and
    changed by `tamper`, and --history with the rows of those runs."""
    _, one_history, _ = reference_sweep
    folder.mkdir(exist_ok=True)
    record = tamper(record_lines(one_history)[:1 + finished])
    write_record(folder / "history.csv", record)
    kept = {(str(run["lr"]), str(run["gamma"]), str(run["seed"])) for run in record[1:] if isinstance(run, dict)}
    lines = [line for line in one_history.read_text().splitlines()[1:] if tuple(line.split(",")[:3]) in kept]
    (folder / "history.csv").write_text("\n".join([rc.HISTORY_HEADER, *lines]) + "\n")
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def resume(folder, *args):
    return run_main(*SWEEP, "--workers", 1, *sweep_outputs(folder), "--resume", *args)


def test_a_stopped_sweep_resumes_to_end_as_one_that_never_stopped(reference_sweep, tmp_path):
    before = stopped_sweep(tmp_path, reference_sweep)
    result = resume(tmp_path)
    assert "3 of 6 runs finished before, and are not trained again" in result.stdout
    assert len(runs_in(result.stdout)) == 3
    assert_equals_the_reference(result, tmp_path, reference_sweep)
    record = (tmp_path / "history.csv.jsonl").read_bytes()
    assert record.startswith(before["history.csv.jsonl"]), "the record only grew"


def drop_rows(record):
    return [*record[:-1], {key: value for key, value in record[-1].items() if key != "rows"}]


def add_a_run(record):
    return [*record, {**record[1], "gamma": 0.9}]


def not_a_run(record):
    return [*record[:-1], "not a run"]


def changed(key, value):
    """A record whose last run has `value` at `key`, as a hand edit leaves it."""
    def tamper(record):
        return [*record[:-1], {**record[-1], key: value}]
    return tamper


def renumbered(episodes):
    """A record whose last run's rows are numbered `episodes`, its count of episodes the last of them."""
    def tamper(record):
        rows = [[episode, *record[-1]["rows"][0][1:]] for episode in episodes]
        return [*record[:-1], {**record[-1], "rows": rows, "episodes": rows[-1][0]}]
    return tamper


def twice(record):
    return [*record, {**record[-1], "score": record[-1]["score"] + 1}]


@pytest.mark.parametrize("args,tamper,words", [
    (("--max-episodes", 50), None, "the runs in {record} had --max-episodes 40, not 50"),
    (("--eval-episodes", 5), None, "the runs in {record} had --eval-episodes 10, not 5"),
    (("--env-id", "Acrobot-v1"), None, "the runs in {record} had --env-id CartPole-v0, not Acrobot-v1"),
    (("--lr", "0.01"), None, "{record} has a run that this sweep does not: lr 0.02, gamma 0.99, seed 0"),
    ((), add_a_run, "{record} has a run that this sweep does not: lr 0.01, gamma 0.9, seed 0"),
    ((), not_a_run, "{record} line 4: not a finished run"),
    ((), drop_rows, "{record} line 4: not a finished run"),
    ((), changed("score", float("nan")), "{record} line 4: a value is not a finite number"),
    ((), changed("episodes", -5), "{record} line 4: its episodes are not numbered 1, 2, 3, ... to at most "
                                  "--max-episodes 40"),
    ((), renumbered([1, 1, 1, 3]), "{record} line 4: its episodes are not numbered 1, 2, 3, ... to at most "
                                   "--max-episodes 40"),
    ((), renumbered(range(1, 51)), "{record} line 4: its episodes are not numbered 1, 2, 3, ... to at most "
                                   "--max-episodes 40"),
    ((), changed("solved", "false"), "{record} line 4: solved is not true or false"),
    ((), changed("seed", 1.7), "{record} line 4: a seed, an episode or a length is not a whole number"),
    ((), twice, "{record} line 5: a second line for lr 0.01, gamma 0.99, seed 2"),
], ids=["max-episodes", "eval-episodes", "env", "lr", "gamma", "not a run", "a run without its rows", "nan score",
        "negative episodes", "episodes renumbered", "episodes past --max-episodes", "solved as text", "seed 1.7",
        "one run twice"])
def test_resume_refuses_a_record_it_cannot_use_and_changes_nothing(reference_sweep, tmp_path, args, tamper, words):
    before = stopped_sweep(tmp_path, reference_sweep, finished=6 if args[:1] == ("--lr",) else 3,
                           **({"tamper": tamper} if tamper else {}))
    result = resume(tmp_path, *args)
    expected = words.format(record=rc.record_path(tmp_path / "history.csv"))
    assert (result.returncode, result.stderr) == (2, f"reinforce_cartpole.py: error: --resume: {expected}\n")
    assert result.stdout == ""
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="a FIFO")
@pytest.mark.parametrize("kind", ["a FIFO", "a link to an endless device"])
def test_a_record_that_is_not_a_file_is_refused_at_once(kind, tmp_path):
    record = tmp_path / "history.csv.jsonl"
    if kind == "a FIFO":
        os.mkfifo(record)  # read, it would wait for a writer forever
    else:
        record.symlink_to("/dev/zero")  # read, it would never end
    result = run_main(*SWEEP, "--workers", 1, "--history", tmp_path / "history.csv", "--resume")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"reinforce_cartpole.py: error: --resume: {record} is not a file that a sweep of these "
                             f"runs writes\n")
    assert os.listdir(tmp_path) == ["history.csv.jsonl"]


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    result = run_main(*SWEEP, "--history", tmp_path / "history.csv", "--resume")
    assert (result.returncode, result.stderr) == (2, f"reinforce_cartpole.py: error: --resume: cannot read "
                                                     f"{tmp_path / 'history.csv.jsonl'} (No such file or directory)\n")
    assert os.listdir(tmp_path) == []


def test_a_torn_last_line_is_dropped_and_its_run_trained_again(reference_sweep, tmp_path):
    stopped_sweep(tmp_path, reference_sweep, finished=3)
    record = rc.record_path(tmp_path / "history.csv")
    with open(record, "rb+") as f:  # as a kill while the third run's line was written leaves it
        f.truncate(os.path.getsize(record) - 100)
    result = resume(tmp_path)
    assert (f"The last line of {record} was cut short, as by a kill while it was written: its run is trained again"
            in result.stdout)
    assert "2 of 6 runs finished before, and are not trained again" in result.stdout
    assert len(runs_in(result.stdout)) == 4
    assert_equals_the_reference(result, tmp_path, reference_sweep)
    assert len(record_lines(tmp_path / "history.csv")) == 7, "the settings, and a whole line for each run"


def test_a_sweep_without_resume_does_not_replace_a_record_of_finished_runs(reference_sweep, tmp_path):
    before = stopped_sweep(tmp_path, reference_sweep)
    result = run_main(*SWEEP, "--workers", 1, *sweep_outputs(tmp_path))
    record = rc.record_path(tmp_path / "history.csv")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"reinforce_cartpole.py: error: {record} holds finished runs: add --resume to go on with "
                             f"them, or remove the file to start afresh\n")
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits a process's file size (RLIMIT_FSIZE)")
def test_a_resume_that_fails_partway_loses_no_run_and_resume_goes_on(reference_sweep, tmp_path):
    """Every file may grow to a little more than the record holds: --history, written anew from the record, fits, and
    the first new run's line does not. The record keeps every run it held, and the line cut short after them is
    dropped by the next --resume, which ends the sweep."""
    import resource
    import subprocess
    before = stopped_sweep(tmp_path, reference_sweep)
    limit = max(map(len, before.values())) + 200

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run(script_command(*SWEEP, "--workers", 1, "--history", tmp_path / "history.csv", "--resume"),
                            cwd=ROOT, capture_output=True, text=True, preexec_fn=limited)
    record = rc.record_path(tmp_path / "history.csv")
    assert (failed.returncode, failed.stderr) == (3, f"reinforce_cartpole.py: cannot write {record}: File too large\n")
    assert sorted(os.listdir(tmp_path)) == sorted(before), "no temporary file left"
    record_after = (tmp_path / "history.csv.jsonl").read_bytes()
    assert record_after.startswith(before["history.csv.jsonl"]) and not record_after.endswith(b"\n"), "a torn line"
    assert curves(tmp_path / "history.csv") == curves_of(before, tmp_path / "before.csv")
    resumed = resume(tmp_path)
    assert "was cut short, as by a kill while it was written: its run is trained again" in resumed.stdout
    assert_equals_the_reference(resumed, tmp_path, reference_sweep)


def curves_of(files, path):
    path.write_bytes(files["history.csv"])
    try:
        return curves(path)
    finally:
        path.unlink()
