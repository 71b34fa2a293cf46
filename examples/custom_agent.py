"""A researcher-written agent in the standard training loop: REINFORCE with a learned value baseline.

Instead of the paper's group mean, a small value network V̂(role, prompt) is fit online (MSE) to the rewards and
used as the baseline: A = r − V̂. Everything else (acting, checkpoints, the loop, logging) comes from LLMAgent.

    python examples/custom_agent.py --model tiny-random --iterations 2 --output-dir runs/custom
"""

import torch

from agents import LLMAgent
from agents.train import build, parse_args, train


class ValueBaselineAgent(LLMAgent):
    def __init__(self, policy, kl=None, config=None):
        super().__init__(policy, kl, config)
        width = policy.model.get_input_embeddings().embedding_dim
        self.value = torch.nn.Sequential(torch.nn.Linear(width + 2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=1e-3)

    def features(self, batch):
        embed = self.policy.model.get_input_embeddings()
        with torch.no_grad():  # the mean prompt embedding + role one-hot: cheap, and the LLM gets no value gradient
            prompts = torch.stack([embed(torch.tensor(p)).mean(0).float() for p in batch.prompt_ids])
        return torch.cat([prompts, torch.nn.functional.one_hot(batch.roles, 2).float()], dim=-1)

    def update(self, batch):
        features = self.features(batch)
        baseline = self.value(features).squeeze(-1)
        advantages = batch.rewards - baseline.detach()                        # A = r − V̂(role, prompt)
        loss_total = 0.0
        for chunk in self.micro_batches(batch, list(range(len(batch)))):
            logps, mask = self.completion_logps(batch, chunk)                  # at the sampling temperature
            loss = -(advantages[chunk] * (logps * mask).sum(-1) / mask.sum(-1)).sum() / len(batch)
            loss.backward()
            loss_total += float(loss)
        grad_norm = self.optimizer_step()
        value_loss = torch.nn.functional.mse_loss(baseline, batch.rewards)    # fit V̂ to the observed rewards
        self.value_optimizer.zero_grad()
        value_loss.backward()
        self.value_optimizer.step()
        return {**batch.metrics, "loss/policy": loss_total, "loss/value": float(value_loss), "grad_norm": grad_norm}


if __name__ == "__main__":
    cfg, agent_cfg = parse_args()
    if cfg.beta or cfg.challenger_beta or cfg.solver_beta:  # this loss has no KL term: refuse rather than ignore it
        raise SystemExit("custom_agent.py has no KL term: drop --beta / --challenger-beta / --solver-beta")
    _, envs, agent = build(cfg, agent_cfg, agent_class=ValueBaselineAgent)
    train(agent, envs, cfg)
