"""The tutorial's pieces, one at a time: select_action, finish_episode, the Engine and its handlers."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import reinforce_cartpole as rc
from conftest import episode_lines


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


def test_the_policy_has_the_tutorials_shape_and_returns_probabilities():
    policy = rc.Policy()
    assert (policy.affine1.in_features, policy.affine1.out_features) == (4, 128)
    assert (policy.affine2.in_features, policy.affine2.out_features) == (128, 2)
    assert policy.dropout.p == 0.6
    probs = policy(torch.zeros(1, 4))
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(), torch.tensor(1.0))


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


def make_trainer(env_id="CartPole-v0", seed=1, log_interval=3):
    env = rc.make_env(env_id)
    policy, optimizer = rc.create_model(env, seed, lr=1e-2)
    trainer = rc.create_trainer(env, policy)
    rc.attach_handlers(trainer, env, policy, optimizer, seed, gamma=0.99, log_interval=log_interval)
    return trainer, env, policy


def test_each_episode_starts_from_a_reset_env_seeded_with_seed_plus_episode():
    trainer, env, _ = make_trainer(seed=1)
    reference = gym.make("CartPole-v0")
    seen = []

    # Added after attach_handlers, so it runs after reset_environment_state.
    @trainer.on(rc.EPISODE_STARTED)
    def check_the_reset():
        expected, _ = reference.reset(seed=1 + trainer.state.epoch)
        assert np.array_equal(trainer.state.observation, expected)
        assert trainer.state.ep_reward == 0
        seen.append(trainer.state.epoch)

    assert trainer.state.running_reward == 10  # set before training begins
    trainer.run(rc.timesteps, max_epochs=3)
    assert seen == [1, 2, 3], "EPISODE_STARTED comes once an episode, as each epoch starts"
    env.close()


def test_each_completed_episode_updates_the_running_reward_and_the_model():
    trainer, env, policy = make_trainer()
    before = [p.detach().clone() for p in policy.parameters()]
    running = [10.0]

    @trainer.on(rc.EPISODE_COMPLETED)
    def check_the_update():
        running.append(0.05 * trainer.state.ep_reward + 0.95 * running[-1])
        assert trainer.state.running_reward == pytest.approx(running[-1])
        # finish_episode ran: the episode's buffers are empty.
        assert policy.rewards == [] and policy.saved_log_probs == []

    trainer.run(rc.timesteps, max_epochs=4)
    assert len(running) == 5
    assert all(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))
    # An episode's length is its last timestep + 1, and the iterations add up to the steps.
    assert trainer.state.timestep + 1 == trainer.state.ep_reward
    env.close()


def test_log_episode_prints_every_log_interval_episodes(capsys):
    trainer, env, _ = make_trainer(log_interval=3)
    trainer.run(rc.timesteps, max_epochs=7)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["Episode 3", "Episode 6"]
    assert "\tLast reward: " in lines[0] and "\tRunning reward: " in lines[0]
    env.close()


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


@pytest.fixture
def never_ending_env():
    """NeverEnding-v0: 50 steps an episode, by the time limit alone; solved above 40."""
    gym.register("NeverEnding-v0", entry_point=NeverEnding, max_episode_steps=50, reward_threshold=40)
    yield "NeverEnding-v0"
    del gym.registry["NeverEnding-v0"]


def test_the_time_limit_ends_an_episode(never_ending_env, capsys):
    # Tutorial fix: without `truncated`, the first episode would run all 10000 timesteps.
    code = rc.main(["--env-id", never_ending_env, "--no-render", "--max-episodes", "3", "--log-interval", "1"])
    out = capsys.readouterr().out
    running, expected = 10, []
    for episode in (1, 2, 3):
        running = 0.05 * 50 + 0.95 * running
        expected.append(f"Episode {episode}\tLast reward: 50.00\tRunning reward: {running:.2f}")
    assert episode_lines(out) == expected
    assert "\titeration: 150\n" in out and code == 1


def test_should_finish_training_stops_once_solved_and_not_before_100_episodes(never_ending_env, capsys):
    # The running reward passes the threshold of 40 at episode 28, but "solved" needs 100 episodes.
    trainer, env, _ = make_trainer(never_ending_env, log_interval=1000)
    trainer.run(rc.timesteps, max_epochs=1000)
    assert trainer.state.epoch == 100 and trainer.state.running_reward > 40
    assert capsys.readouterr().out == (
        f"Solved! Running reward is now {trainer.state.running_reward} and "
        "the last episode runs to 49 time steps!\n"
    )
    env.close()


def test_solved_needs_a_threshold_a_running_reward_above_it_and_100_episodes():
    assert not rc.is_solved(running_reward=-15.5, episodes=1, threshold=-100.0)  # Acrobot, episode 1
    assert rc.is_solved(running_reward=-90.0, episodes=100, threshold=-100.0)
    assert not rc.is_solved(running_reward=195.0, episodes=500, threshold=195.0)
    assert not rc.is_solved(running_reward=1e9, episodes=500, threshold=None)


@pytest.mark.parametrize("env_id,sizes", [("CartPole-v1", (4, 2)), ("Acrobot-v1", (6, 3))])
def test_the_policys_sizes_come_from_the_env(env_id, sizes):
    env = rc.make_env(env_id)
    policy, _ = rc.create_model(env, seed=0, lr=1e-2)
    assert (policy.affine1.in_features, policy.affine2.out_features) == sizes
    env.close()
