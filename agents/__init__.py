"""Learners that train one shared LLM policy against the LSP envs, through the gym API and the hook objects."""

from .advantages import RoleBaseline, challenger_advantages, compute_advantages, group_advantages
from .base import Agent, AgentConfig, LLMAgent
from .grpo import GRPOAgent, GRPOConfig
from .pg import PGAgent, PGConfig
from .policy import Completion, Policy
from .rollout import Batch, play_iteration

__all__ = [
    "Agent", "AgentConfig", "LLMAgent", "PGAgent", "PGConfig", "GRPOAgent", "GRPOConfig", "Policy", "Completion",
    "Batch", "play_iteration", "RoleBaseline", "group_advantages", "challenger_advantages", "compute_advantages",
]
