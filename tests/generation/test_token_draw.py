"""Inverse-CDF token draws (the CPU sampling path of ``generate``): hand cases, frequencies, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.generation import SamplingConfig, sample
from preftune.generation.token_draw import InverseCdfDraw, inverse_cdf_draw
from preftune.modeling import load_model, load_tokenizer, tiny_model_path


def test_hand_cases_take_the_first_index_past_u_and_skip_zero_mass() -> None:
    probs = torch.tensor([[0.125, 0.0, 0.625, 0.25]]).expand(6, -1)  # binary fractions: exact sums
    uniform = torch.tensor([0.0, 0.0625, 0.125, 0.7, 0.75, 0.999])
    # cdf [0.125, 0.125, 0.75, 1]: u = 0.125 lands past token 0 and, token 1 having no mass, on token 2
    assert inverse_cdf_draw(probs, uniform).tolist() == [0, 0, 2, 2, 3, 3]


def test_rows_need_not_sum_to_one_and_the_top_of_the_range_stays_on_mass() -> None:
    assert inverse_cdf_draw(torch.tensor([[2.0, 0.0, 6.0, 2.0]]), torch.tensor([0.5])).tolist() == [2]
    # u·total rounding up to the total must not fall on the zero-mass tail
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert inverse_cdf_draw(probs, torch.tensor([1.0])).tolist() == [1]


def draw_counts(scores: torch.Tensor, draw: InverseCdfDraw, n: int) -> torch.Tensor:
    """How often each of the ``[V]`` tokens is drawn in ``n`` rows of ``scores``."""
    out = draw(torch.zeros(n, 1, dtype=torch.long), scores.expand(n, -1).clone())
    assert torch.equal((out == 0).sum(-1), torch.ones(n, dtype=torch.long))  # one token per row, the rest -inf
    assert torch.isinf(out[out != 0]).all()
    return torch.bincount(out.argmax(-1), minlength=scores.shape[-1])


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "expected"),
    [
        # softmax of log [0.5, 0.25, 0.15, 0.1] is the same four numbers
        (1.0, 0, 1.0, [0.5, 0.25, 0.15, 0.1]),
        # T = 0.5 squares and renormalises: [0.25, 0.0625, 0.0225, 0.01] / 0.345
        (0.5, 0, 1.0, [0.25 / 0.345, 0.0625 / 0.345, 0.0225 / 0.345, 0.01 / 0.345]),
        # top-2: [0.5, 0.25] / 0.75
        (1.0, 2, 1.0, [2 / 3, 1 / 3, 0.0, 0.0]),
        # top-p 0.8 keeps the smallest top set with mass ≥ 0.8: 0.5 + 0.25 + 0.15 = 0.9
        (1.0, 0, 0.8, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0]),
    ],
)
def test_draw_frequencies_match_the_warped_distribution(temperature, top_k, top_p, expected) -> None:
    torch.manual_seed(0)
    n = 40_000
    scores = torch.tensor([[0.5, 0.25, 0.15, 0.1]]).log()
    counts = draw_counts(scores, InverseCdfDraw(temperature, top_k, top_p), n)
    for count, p in zip(counts.tolist(), expected, strict=True):
        if p == 0:
            assert count == 0
        else:  # within 5 binomial standard errors
            assert abs(count / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_draws_follow_the_global_seed() -> None:
    scores = torch.randn(1, 1000)
    draw = InverseCdfDraw(1.0, 0, 1.0)
    torch.manual_seed(7)
    first = draw(torch.zeros(64, 1, dtype=torch.long), scores.expand(64, -1).clone()).argmax(-1)
    torch.manual_seed(7)
    again = draw(torch.zeros(64, 1, dtype=torch.long), scores.expand(64, -1).clone()).argmax(-1)
    assert torch.equal(first, again) and first.unique().numel() > 10


def test_sample_draws_first_tokens_with_the_models_own_probabilities() -> None:
    """End to end through ``generate`` on the CPU: the first sampled token's frequencies among the
    model's top 3 match the teacher-forced softmax renormalised over those 3."""
    path = tiny_model_path()
    tokenizer, model = load_tokenizer(path), load_model(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    n = 600
    samples = sample(
        model, tokenizer, [list(prompt)], SamplingConfig(n=n, top_k=3, max_new_tokens=1, batch_size=200, seed=1)
    )
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    top = logits.topk(3)
    expected = top.values.softmax(-1).tolist()
    firsts = [s.response_ids[0] for s in samples]
    assert set(firsts) <= set(top.indices.tolist())
    for token, p in zip(top.indices.tolist(), expected, strict=True):
        assert abs(firsts.count(token) / n - p) < 5 * math.sqrt(p * (1 - p) / n)
