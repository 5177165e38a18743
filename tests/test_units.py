"""The tutorial's pieces one at a time: select_action, finish_episode, the handlers."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import reinforce_cartpole as rc
from conftest import decoded_frames, episode_lines


def test_finish_episode_against_a_hand_computed_example():
    # Rewards [1, 1, 1] with gamma 0.5 give returns [1.75, 1.5, 1.0]; mean 17/12,
    # unbiased std sqrt(0.1458333) = 0.3818813, so the normalised returns are:
    expected = torch.tensor([0.8728716, 0.2182179, -1.0910895])
    # With log-probs w_i and loss = sum(-w_i * R_i), d loss / d w_i = -R_i, and one plain
    # SGD step of lr 1 from w = 0 lands exactly on the normalised returns.
    w = torch.zeros(3, requires_grad=True)
    policy = SimpleNamespace(rewards=[1.0, 1.0, 1.0], saved_log_probs=[w[i:i + 1] for i in range(3)])
    rc.finish_episode(policy, torch.optim.SGD([w], lr=1.0), gamma=0.5)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert policy.rewards == [] and policy.saved_log_probs == []


def test_finish_episode_updates_a_real_policy_and_empties_its_buffers():
    torch.manual_seed(0)
    policy = rc.Policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in policy.parameters()]
    for step in range(5):
        rc.select_action(policy, np.full(4, 0.1 * step, dtype=np.float32))
        policy.rewards.append(1.0)
    rc.finish_episode(policy, optimizer, gamma=0.99)
    assert all(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))
    assert policy.rewards == [] and policy.saved_log_probs == []


def test_select_action_returns_a_valid_action_and_saves_one_log_prob():
    torch.manual_seed(0)
    policy = rc.Policy(observation_size=6, n_actions=3)
    actions = set()
    for _ in range(50):
        action = rc.select_action(policy, np.zeros(6, dtype=np.float32))
        assert isinstance(action, int) and 0 <= action < 3
        actions.add(action)
    assert actions == {0, 1, 2}
    assert len(policy.saved_log_probs) == 50
    log_prob = policy.saved_log_probs[0]
    assert log_prob.shape == (1,) and log_prob.requires_grad and log_prob.item() <= 0


def handler_names(trainer, event):
    # Ignite has no public listing of handlers; filtered ones (every=N) keep their
    # name through functools.wraps.
    return [getattr(h, "__name__", None) for h, _, _ in trainer._event_handlers[event]]


@pytest.fixture
def cartpole_trainer():
    env = rc.make_env("CartPole-v0")
    policy = rc.Policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    trainer = rc.create_trainer(env, policy)
    rc.attach_handlers(trainer, env, policy, optimizer, seed=1, gamma=0.99, log_interval=3)
    yield trainer
    env.close()


def test_handlers_are_attached_to_the_events_the_tutorial_names(cartpole_trainer):
    assert rc.EPISODE_STARTED == gym_event("EPOCH_STARTED")
    assert rc.EPISODE_COMPLETED == gym_event("EPOCH_COMPLETED")
    assert handler_names(cartpole_trainer, rc.EPISODE_STARTED) == ["reset_environment_state"]
    # Same order as in the tutorial: the model is updated before the log and the stop check.
    assert handler_names(cartpole_trainer, rc.EPISODE_COMPLETED) == [
        "update_model", "log_episode", "should_finish_training",
    ]
    assert cartpole_trainer.state.running_reward == 10


def gym_event(name):
    from ignite.engine import Events

    return getattr(Events, name)


def test_log_episode_runs_every_log_interval_episodes(cartpole_trainer, capsys):
    cartpole_trainer.run(range(10000), max_epochs=7)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["Episode 3", "Episode 6"]
    assert "Last reward: " in lines[0] and "Running reward: " in lines[0]


def test_each_episode_resets_the_env_and_the_reward(cartpole_trainer):
    rewards = []
    cartpole_trainer.add_event_handler(rc.EPISODE_COMPLETED, lambda e: rewards.append(e.state.ep_reward))
    cartpole_trainer.run(range(10000), max_epochs=4)
    # Each episode counts its own reward from 0, and its length is the last timestep + 1.
    assert len(rewards) == 4 and all(1 <= r <= 200 for r in rewards)
    assert cartpole_trainer.state.timestep + 1 == rewards[-1]
    assert cartpole_trainer.state.iteration == sum(rewards)


class NeverEnding(gym.Env):
    """An env whose episodes never terminate: only the time limit can end them."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 1.0, False, False, {}

    def render(self):
        return np.full((64, 96, 3), 200, dtype=np.uint8)


class ImageObservation(NeverEnding):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


@pytest.fixture
def test_envs():
    ids = {"NeverEnding-v0": NeverEnding, "ImageObservation-v0": ImageObservation}
    for env_id, cls in ids.items():
        gym.register(env_id, entry_point=cls, max_episode_steps=50)
    yield
    for env_id in ids:
        del gym.registry[env_id]


def test_an_env_that_never_terminates_ends_its_episodes_at_the_time_limit(test_envs, capsys):
    code = rc.main(["--env-id", "NeverEnding-v0", "--no-render", "--max-episodes", "3", "--log-interval", "1"])
    out = capsys.readouterr().out
    # Without the truncation fix the first episode would run all 10000 timesteps.
    running, expected = 10, []
    for episode in (1, 2, 3):
        running = 0.05 * 50 + 0.95 * running
        expected.append(f"Episode {episode}\tLast reward: 50.00\tRunning reward: {running:.2f}")
    assert episode_lines(out) == expected
    assert "\titeration: 150\n" in out
    # This env has no reward threshold, so it cannot be solved: exit status 1.
    assert code == 1 and "Not solved" in out


@pytest.mark.parametrize("env_id,sizes", [("CartPole-v1", (4, 2)), ("Acrobot-v1", (6, 3))])
def test_sizes_come_from_the_env_spaces(env_id, sizes, capsys):
    code = rc.main(["--env-id", env_id, "--no-render", "--max-episodes", "2", "--log-interval", "1"])
    out = capsys.readouterr().out
    assert code == 1 and "Episode 2\t" in out
    env = rc.make_env(env_id)
    assert (env.observation_space.shape[0], env.action_space.n) == sizes
    env.close()


def test_solved_needs_a_hundred_episodes_and_a_threshold():
    # Acrobot's threshold is -100: the starting running reward of 10 is above it.
    assert not rc.is_solved(running_reward=-15.5, episodes=1, threshold=-100.0)
    assert rc.is_solved(running_reward=-90.0, episodes=100, threshold=-100.0)
    assert not rc.is_solved(running_reward=195.0, episodes=500, threshold=195.0)
    assert not rc.is_solved(running_reward=1e9, episodes=500, threshold=None)


def test_envs_not_drawn_from_their_state_are_recorded_from_frames(test_envs, tmp_path, capsys):
    video_dir = tmp_path / "video"
    code = rc.main(["--env-id", "NeverEnding-v0", "--max-episodes", "2", "--video-dir", str(video_dir)])
    assert code == 1
    assert "balanced for 50/50 steps" in capsys.readouterr().out
    names = sorted(p.name for p in video_dir.iterdir())
    assert names == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4", "trained-agent-episode-0.mp4"]
    for name in names:
        meta, frames = decoded_frames(video_dir / name)
        assert meta["size"] == (96, 64)
        assert frames == 51  # the reset and 50 steps
