"""One seed, one run: the README's run on every x86-64 CPU with AVX2, whatever the instruction-set limits
and thread counts imposed on MKL, ATen and OpenMP, and on an emulated Intel CPU."""

import hashlib
import os
import platform
import re
import shutil
import subprocess

import pytest
import torch

from conftest import ROOT, SOLVE_SEED, SOLVED_RUN, episode_lines, history_rows, run_main, run_script, script_command

# Seed 543's run, as the README shows it, from the final code on an AMD EPYC (Zen 3) and on an Intel Xeon.
README_LOG = [
    "Episode 100\tLast reward: 127.00\tRunning reward: 68.03",
    "Episode 200\tLast reward: 200.00\tRunning reward: 163.91",
    "Episode 300\tLast reward: 82.00\tRunning reward: 146.22",
    "Episode 400\tLast reward: 102.00\tRunning reward: 167.60",
    "Episode 500\tLast reward: 99.00\tRunning reward: 159.55",
    "Episode 600\tLast reward: 200.00\tRunning reward: 164.11",
    "Episode 700\tLast reward: 200.00\tRunning reward: 174.79",
]
README_SOLVED = "Solved! Running reward is now 195.06315877581747 and the last episode runs to 199 time steps!"
# SHA-256 of the 748 episode returns, comma-separated as the history writes them.
README_RETURNS_SHA256 = "4c87b613a22e7cafb6d98c269b2f5b2d61e01db73023f986d3701d0135d0870a"


def history_returns(path):
    return [row["return"] for row in history_rows(path)]


def sha256(returns):
    return hashlib.sha256(",".join(returns).encode()).hexdigest()


def why_not_the_readme_run():
    """Where the README's run does not apply, and why; None where a different run is a failure."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"{platform.machine()} is not x86-64: ARM machines take their own path"
    if not torch.backends.mkl.is_available():
        return "this torch has no MKL"
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        return "this CPU has no AVX2, so torch runs its scalar kernels, which round differently"
    if os.environ.get("MKL_CBWR") != "COMPATIBLE":
        return f"MKL_CBWR is set to {os.environ.get('MKL_CBWR')!r} here"
    return None


readme_run_only = pytest.mark.skipif(why_not_the_readme_run() is not None, reason=str(why_not_the_readme_run()))


def native_returns(episodes, tmp_path):
    """Seed 543's first episodes, as main() trains them in this process, on this CPU as it is: the README's, where
    test_seed_543_gives_the_run_the_readme_shows passes."""
    history = tmp_path / "native.csv"
    result = run_main("--no-render", "--seed", SOLVE_SEED, "--max-episodes", episodes, "--history", history)
    assert result.returncode == 1, result.stderr
    return history_returns(history)


@SOLVED_RUN
@readme_run_only
def test_seed_543_gives_the_run_the_readme_shows(solved_run):
    result, out = solved_run
    # Episode 100 is the same on every CPU; the CPUs' paths part after it, so the log shows where.
    assert episode_lines(result.stdout) == README_LOG
    assert re.search(r"^Solved! .*$", result.stdout, re.M).group(0) == README_SOLVED
    returns = history_returns(out / "history.csv")
    assert len(returns) == 748 and sha256(returns) == README_RETURNS_SHA256


# Each limit changes the run of an unpinned torch on some CPU: MKL's instruction set and its threads on
# Intel CPUs, ATen's kernels on AVX-512 CPUs (forced to AVX2 here), the thread count everywhere. Unpinned
# (MKL_CBWR=AUTO) on the emulated Intel CPU below, the run parts at episode 118, so 150 episodes show it.
LIMITS = {
    "MKL at SSE4.2, 3 OpenMP threads": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "3"},
    "ATen at AVX2, MKL at AVX2, 1 OpenMP thread": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                                   "OMP_NUM_THREADS": "1"},
}


@readme_run_only
@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_the_run_is_the_same_under_other_instruction_sets_and_thread_counts(limits, tmp_path, monkeypatch):
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    history = tmp_path / "history.csv"
    result = run_script("--no-render", "--seed", SOLVE_SEED, "--max-episodes", 150, "--history", history)
    assert result.returncode == 1, result.stderr
    assert history_returns(history) == native_returns(150, tmp_path)


# qemu-user's Haswell-v4 is an Intel CPU with AVX2 and FMA (CPUID: GenuineIntel), whatever the host. Its TCG
# computes rsqrtps exactly, as no hardware does, so Adam's unfused step, which starts from that estimate, parts
# from this run at episode 129 there. 130 episodes cover that. About 30 times slower than natively, and the
# longest test after the solve, so it starts first (`long`).
QEMU = shutil.which("qemu-x86_64")


@pytest.mark.long
@readme_run_only
@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (Debian: apt-get install qemu-user)")
def test_the_run_is_the_same_on_an_emulated_intel_cpu(tmp_path):
    history = tmp_path / "history.csv"
    result = subprocess.run([QEMU, "-cpu", "Haswell-v4", *script_command("--no-render", "--seed", SOLVE_SEED,
                                                                         "--max-episodes", 130, "--history", history)],
                            capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert episode_lines(result.stdout) == README_LOG[:1]
    assert history_returns(history) == native_returns(130, tmp_path)
