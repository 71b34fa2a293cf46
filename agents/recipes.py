"""Recipes: named sets of defaults over ``lsp-train``'s flags and the agent's (``--recipe paper|tuned``).

A recipe only changes defaults: a flag given on the command line wins over it. Its keys are field names of
:class:`agents.train.TrainConfig` or of the agent's config dataclass; each key goes to the dataclass that has it.

``paper`` — the algorithm of Kuba et al., "Language Self-Play For Data-Free Training" (arXiv 2509.07414), as far as
the paper states it: REINFORCE (``agent=pg``: one update per batch, no ratio, no clip) on
    L_sol = −mean_(i,j) A_sol · log π(a_ij | q_i)           A_sol = R(q_i, a_ij) − V(q_i)
    L_ch  = −mean_i     A_ch  · log π(q_i | challenger)     A_ch  = mean_k V(q_k) − V(q_i)
(no std scaling: ``scale_rewards=none``; the challenger against the mean over the N queries: ``advantage=group``
with the zero-sum payoff c = −V, ``payoff=zero_sum``), with log π of a completion the sum of its tokens'
log-probs (``loss_type=sequence``), plus β · KL(π || π_ref) in the loss of both roles (``kl_placement=loss``, TRL's
k3 estimator), and L = L_sol + α · L_ch with α = 1 (the paper weighs the roles equally). The paper does not publish
β: 0.04 is GRPO's (DeepSeekMath) and TRL's former default, a value known to keep a policy near its reference
without freezing it, which is what the paper adds the KL term for (the challenger's queries stay meaningful).
The env picks the game (``LSP-v0``: with the self-quality reward; ``LSP-Zero-v0``: without).

``tuned`` — exactly what the arithmetic head-to-head (``benchmarks/learning_curve.py``) runs, chosen by the pilot
runs the README describes: GRPO with TRL's token-mean loss and group std scaling, N = 4 queries × G = 8 answers,
32-token completions, learning rate 1e-5, no KL, R-Zero's challenger payoff (most for problems solved half the
time), few-shot examples from the headline levels (``example_levels``; tasks without levels ignore it), and bf16
where the hardware has fast bf16 (``"auto"``, :func:`lsp_env.models.bf16_supported`).
"""

from __future__ import annotations

from dataclasses import fields

RECIPES: dict[str, dict] = {
    "paper": {
        "agent": "pg", "scale_rewards": "none", "loss_type": "sequence", "advantage": "group", "payoff": "zero_sum",
        "beta": 0.04, "kl_estimator": "k3", "kl_placement": "loss",
        "challenger_weight": 1.0, "solver_weight": 1.0,
    },
    "tuned": {
        "agent": "grpo", "num_queries": 4, "num_generations": 8, "max_completion_length": 32, "learning_rate": 1e-5,
        "beta": 0.0, "scale_rewards": "group", "loss_type": "grpo", "payoff": "rzero",
        "example_levels": "add_1d,add_2d_1d,mul_1d", "bf16": "auto",
    },
}


def describe() -> str:
    """One line per recipe, ``name: key=value, ...``: the ``--recipe`` help text is generated from :data:`RECIPES`."""
    return "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()) for name, values in RECIPES.items())


def recipe_defaults(name: str | None, config_class) -> dict:
    """The values recipe ``name`` sets on the fields of ``config_class`` (``"auto"`` bf16 resolved); {} for None."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r}: use one of {sorted(RECIPES)}")
    names = {f.name for f in fields(config_class)}
    values = {k: v for k, v in RECIPES[name].items() if k in names}
    if values.get("bf16") == "auto":
        from lsp_env.models import bf16_supported

        values["bf16"] = bf16_supported()
    return values
