"""The HF backend's sampler: HF's warpers, then one uniform draw per row against the cumulative probabilities."""

import torch

from lsp_env.tokens import InverseCDFSampler, sampling_processors


def test_inverse_cdf_draws_follow_the_softmax():
    probs = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    scores = probs.log().expand(40_000, -1).clone()
    torch.manual_seed(0)
    out = InverseCDFSampler()(None, scores)
    assert torch.isfinite(out).sum(-1).eq(1).all()  # one finite entry per row: greedy takes the drawn token
    freq = torch.bincount(out.argmax(-1), minlength=6).float() / len(out)
    assert torch.allclose(freq, probs, atol=0.01), freq
    assert freq[-1] == 0  # a zero-probability token is never drawn


def test_warpers_run_before_the_draw_and_seeds_repeat():
    scores = torch.randn(2_000, 50)
    top2 = scores.topk(2, dim=-1).indices
    torch.manual_seed(1)
    drawn = sampling_processors(temperature=0.7, top_k=2)(None, scores.clone()).argmax(-1)
    assert (drawn[:, None] == top2).any(-1).all()  # top-k masked the rest
    torch.manual_seed(1)
    again = sampling_processors(temperature=0.7, top_k=2)(None, scores.clone()).argmax(-1)
    assert torch.equal(drawn, again)
    # the temperature divides the logits before the draw: P(second) = softmax([1, 0] / 0.5)[1]
    two = torch.tensor([[1.0, 0.0]]).expand(20_000, -1).clone()
    torch.manual_seed(2)
    share = sampling_processors(temperature=0.5)(None, two.clone()).argmax(-1).float().mean()
    expected = torch.softmax(two[0] / 0.5, -1)[1]
    assert abs(share - expected) < 0.01, (share, expected)
