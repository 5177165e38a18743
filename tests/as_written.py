"""The tutorial's code path as written, for the equivalence test and the benchmark to measure the
port against. Copied from the tutorial text with its lost lines restored. Only the port's fixes for
correctness and reproducibility are kept: `done` includes `truncated`; torch is seeded before the
Policy is built; and MKL's COMPATIBLE branch and Adam's fused step give one run on every x86-64 CPU.
Everything else is as written: gym.make with its env checker, Categorical with argument validation,
env.render() on every step when rendering, and RecordVideo's defaults. It shares no code with the
port on purpose.
"""

import os

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # kept fix: MKL's code path, before torch's first product

from collections import deque  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.optim as optim  # noqa: E402
from gymnasium.wrappers import RecordVideo  # noqa: E402
from ignite.engine import Engine, Events  # noqa: E402
from torch.distributions import Categorical  # noqa: E402


def run_as_written(seed=543, max_episodes=1000000, render=False, video_dir=None, log_interval=100):
    """Returns the per-episode rewards."""
    seed_val = seed
    gamma = 0.99

    env = gym.make("CartPole-v0", render_mode="rgb_array")
    if render:
        env = RecordVideo(env, video_dir, disable_logger=True)

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(128, 2)

            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    torch.manual_seed(seed_val)  # kept fix: seeding
    policy = Policy()
    optimizer = optim.Adam(policy.parameters(), lr=1e-2, fused=True)  # kept fix: square roots alike on every CPU
    eps = np.finfo(np.float32).eps.item()
    timesteps = range(10000)

    def run_single_timestep(engine, timestep):
        observation = engine.state.observation
        action = select_action(policy, observation)
        engine.state.observation, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated  # kept fix: truncation
        if render:
            env.render()
        policy.rewards.append(reward)
        engine.state.ep_reward += reward
        if done:
            engine.terminate_epoch()
            engine.state.timestep = timestep

    trainer = Engine(run_single_timestep)

    def select_action(policy, observation):
        state = torch.from_numpy(observation).float().unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    def finish_episode(policy, optimizer, gamma):
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        del policy.rewards[:]
        del policy.saved_log_probs[:]

    EPISODE_STARTED = Events.EPOCH_STARTED
    EPISODE_COMPLETED = Events.EPOCH_COMPLETED

    trainer.state.running_reward = 10
    episode_rewards = []

    @trainer.on(EPISODE_STARTED)
    def reset_environment_state():
        torch.manual_seed(seed_val + trainer.state.epoch)
        trainer.state.observation, _ = env.reset(seed=seed_val + trainer.state.epoch)
        trainer.state.ep_reward = 0

    @trainer.on(EPISODE_COMPLETED)
    def update_model():
        trainer.state.running_reward = 0.05 * trainer.state.ep_reward + (1 - 0.05) * trainer.state.running_reward
        finish_episode(policy, optimizer, gamma)
        episode_rewards.append(trainer.state.ep_reward)

    @trainer.on(EPISODE_COMPLETED(every=log_interval))
    def log_episode():
        i_episode = trainer.state.epoch
        print(
            f"Episode {i_episode}\tLast reward: {trainer.state.ep_reward:.2f}"
            f"\tAverage length: {trainer.state.running_reward:.2f}"
        )

    @trainer.on(EPISODE_COMPLETED)
    def should_finish_training():
        running_reward = trainer.state.running_reward
        if running_reward > env.spec.reward_threshold:
            print(
                f"Solved! Running reward is now {running_reward} and "
                f"the last episode runs to {trainer.state.timestep} time steps!"
            )
            trainer.should_terminate = True

    trainer.run(timesteps, max_epochs=max_episodes)
    env.close()
    return episode_rewards
