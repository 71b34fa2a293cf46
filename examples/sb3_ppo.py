"""LSP through stable-baselines3: PPO trains the solver, one token per SB3 step, on the arithmetic data mode.

The length reward varies even for a random model, so the tiny model shows learning signal in seconds; drop
``--reward`` (exact-match arithmetic) and use ``--model embedded`` for the real task.

    python examples/sb3_ppo.py --model tiny-random --timesteps 1024
"""

import argparse
import time

import torch
from stable_baselines3 import PPO

from agents.sb3 import LLMActorCriticPolicy, TokenLevelRoleEnv

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="tiny-random")
parser.add_argument("--env", default="LSP-Arith-Data-v0")
parser.add_argument("--reward", default="length", help="reward hook name; 'none' keeps the env's own")
parser.add_argument("--timesteps", type=int, default=1024, help="SB3 steps = generated tokens")
parser.add_argument("--max-new-tokens", type=int, default=16, help="16 tokens of random text score ~0.5: room to learn")
parser.add_argument("--learning-rate", type=float, default=1e-5)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
if args.model == "tiny-random":
    torch.set_num_threads(1)  # a 3M-parameter model gains nothing from threads; spin-waits on a busy CPU cost ~30x

make_kwargs = {} if args.reward == "none" else {"reward": args.reward}
env = TokenLevelRoleEnv(args.env, tokenizer=args.model, max_new_tokens=args.max_new_tokens, window=128, **make_kwargs)
ppo = PPO(LLMActorCriticPolicy, env, policy_kwargs={"model": args.model}, learning_rate=args.learning_rate,
          n_steps=128, batch_size=32, n_epochs=2, seed=args.seed, verbose=0)

start = time.perf_counter()
ppo.learn(total_timesteps=args.timesteps)
seconds = time.perf_counter() - start
returns = [episode["r"] for episode in ppo.ep_info_buffer]
print(f"{ppo.num_timesteps} tokens in {seconds:.1f} s: {ppo.num_timesteps / seconds:.1f} tokens/s (rollout + update)")
print(f"episodes: {len(returns)}, mean return of the last {len(returns)}: {sum(returns) / max(len(returns), 1):.3f}")

obs, info = env.reset(seed=args.seed)
done = False
while not done:
    action, _ = ppo.predict(obs, deterministic=False)
    obs, reward, done, _, step_info = env.step(action)
print(f"query: {info['query']!r}\nanswer: {step_info['text']!r}\nreward: {reward:.3f}")
