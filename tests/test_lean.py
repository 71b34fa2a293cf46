"""The memory-lean training forms (``lsp_env.models.lean_training``, ``token_logps``): the same log-probs and
gradients as the plain model, with fewer saved activations."""

import copy

import pytest
import torch

from agents.policy import Policy
from lsp_env import models


def plain_logps(model, prompts, completions, temperature):
    """Per-row log-probs from one unpadded forward of the unpatched model: the full logits, then log-softmax."""
    rows = []
    for p, c in zip(prompts, completions):
        logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        rows.append(torch.log_softmax(logits.float() / temperature, -1).gather(-1, torch.tensor(c)[:, None])[:, 0])
    return rows


def saved_bytes(fn, model):
    """Bytes of the tensors autograd saves for backward while ``fn`` runs, once each, but ``model``'s parameters."""
    seen, total = {p.data_ptr() for p in model.parameters()}, [0]

    def pack(t):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_lean_logps_and_gradients_equal_the_plain_models(bf16, chunked, monkeypatch):
    if chunked:  # several chunks of tokens through the LM head, not one
        monkeypatch.setattr(models, "LOGITS_PER_SLICE", 3 * 49152)
    torch.manual_seed(0)
    policy = Policy("tiny-random", bf16=bf16)
    plain = models.load_model("tiny-random")[0]
    plain.load_state_dict(policy.model.state_dict())
    assert plain.model.layers[0].mlp.forward.__func__ is type(plain.model.layers[0].mlp).forward  # unpatched
    prompts, completions = [[5, 17, 42, 9], [5, 17, 42, 9], [3, 8]], [[33, 7, 120, 2], [33, 8], [1, 2, 3, 4, 5]]
    logps, mask = policy.completion_logps(prompts, completions, temperature=0.7)
    (logps * mask).sum().backward()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with autocast:
        expected = plain_logps(plain, prompts, completions, 0.7)
    sum(e.sum() for e in expected).backward()
    tol = dict(atol=2e-2, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-4)
    for r, e in enumerate(expected):
        torch.testing.assert_close(logps[r, :len(completions[r])].detach(), e.detach(), **tol)
    grads = dict(plain.named_parameters())
    for name, p in policy.model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name, **(tol if bf16 else dict(atol=1e-5, rtol=1e-3)))


@pytest.mark.parametrize("bf16", [False, True])
def test_lean_training_saves_a_fraction_of_the_activations(bf16, monkeypatch):
    """Against the plain path (the unpatched model, its full logits): the same log-probs, < 1/4 of the bytes saved."""
    torch.manual_seed(0)
    lean = Policy("tiny-random", bf16=bf16)
    prompts, completions = [[5, 17, 42, 9]] * 4, [list(range(10, 40))] * 4
    (lean_logps, _), lean_bytes = saved_bytes(lambda: lean.completion_logps(prompts, completions), lean.model)
    plain = copy.copy(lean)
    plain.model = models.load_model("tiny-random")[0]
    plain.model.load_state_dict(lean.model.state_dict())
    monkeypatch.setattr(models, "decoder_and_head", lambda model: (model, None))
    (plain_logps_, _), plain_bytes = saved_bytes(lambda: plain.completion_logps(prompts, completions), plain.model)
    torch.testing.assert_close(lean_logps, plain_logps_, atol=2e-2 if bf16 else 1e-5, rtol=1e-3)
    assert lean_bytes < plain_bytes / 4, (lean_bytes, plain_bytes)


def test_heads_that_scale_or_cap_their_logits_keep_the_full_forward():
    model = models.load_model("tiny-random")[0]
    decoder, weight = models.decoder_and_head(model)
    assert decoder is model.model and weight is model.lm_head.weight
    model.config.final_logit_softcapping = 30.0
    assert models.decoder_and_head(model) == (model, None)
    model.config.final_logit_softcapping = None
    model.lm_head = torch.nn.Linear(4, 4, bias=True)
    assert models.decoder_and_head(model) == (model, None)


def test_lora_layers_keep_their_forward_and_their_gradients():
    policy = Policy("tiny-random", lora=True, lora_r=4)
    mlp = policy.model.get_base_model().model.layers[0].mlp
    assert "forward" not in vars(mlp) and "forward" not in vars(mlp.down_proj)  # wrapped by peft: left alone
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    logps, mask = policy.completion_logps([[5, 17, 42]], [[33, 7, 120]])
    (logps * mask).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in policy.model.named_parameters()
               if p.requires_grad)



def resident_mb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(models._malloc_trim() is None, reason="no glibc malloc_trim in this process")
def test_freed_heap_memory_is_handed_back():
    """Small tensors live on glibc's heap, which keeps their pages when they are freed under one still in use."""
    tensors = [torch.ones(16_000) for _ in range(4_000)]  # 64 kB each, 256 MB in all: under the mmap threshold
    keep = tensors[-1]
    del tensors
    before = resident_mb()
    models.release_freed_memory()
    assert resident_mb() < before - 150, (before, resident_mb())
    assert keep.sum() == 16_000
