"""Recipes: named sets of defaults over ``lsp-train``'s flags and the agent's (``--recipe paper|tuned``).

A recipe only changes defaults (a flag given on the command line wins); each key goes to the dataclass
(:class:`agents.train.TrainConfig` or the agent's config) that has that field.

``paper``: the algorithm of arXiv 2509.07414 as far as the paper states it, REINFORCE on the objective in
:mod:`agents.pg` with the sequence log-probability, unscaled advantages, the zero-sum payoff, α = 1, and β · KL (k3)
in the loss of both roles. The paper does not publish β: 0.04 is GRPO's (DeepSeekMath) and TRL's former default,
enough to keep the challenger's queries near the reference's language, which is what the paper adds KL for.
``tuned``: exactly what the arithmetic head-to-head (``benchmarks/learning_curve.py``) runs, chosen by its pilots;
``bf16="auto"`` means where the hardware has fast bf16 (:func:`lsp_env.models.bf16_supported`).
"""

from __future__ import annotations

from dataclasses import fields

RECIPES: dict[str, dict] = {
    "paper": {
        "agent": "pg", "scale_rewards": "none", "loss_type": "sequence", "advantage": "group", "payoff": "zero_sum",
        "beta": 0.04, "kl_estimator": "k3", "kl_placement": "loss", "challenger_weight": 1.0, "solver_weight": 1.0,
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
