"""Groups of C responses per prompt: the packed batch gives the records (and gradients) that
scoring each response alone gives, and a batch holds only the responses an objective reads.

The reference computation for a group is the plainest one there is: each prompt + response
scored as a batch of one (one row, no padding, no packing), its log-probs summed by hand from the
model's full logits. The packed batch shares each prompt between its C responses.
"""

from __future__ import annotations

import pytest
import torch

from preftune.data import Origin, build_batch
from preftune.data.groups import TokenizedGroup
from preftune.modeling import apply_lora, load_model, response_logprobs
from preftune.objectives import GroupRecord, SequenceLogProbs, build, record_for

from .test_fast_path import PAD, TOL, perturbed

# Every group term reads the same [P, C] sums (per-token means for average=True): bon_neg's and rwr's
# gradients weigh responses differently from reinforce's, so these three cover what can go wrong.
CASES = [("reinforce", "shared"), ("reinforce", "padded"), ("bon_neg(average=False)", "shared"), ("rwr", "shared")]


def groups_from_pairs(pairs, c: int = 3) -> list[TokenizedGroup]:
    """Groups of C responses (chosen and rejected responses of real HH pairs, rotated) with rewards."""
    responses = [r for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
    return [
        TokenizedGroup(
            pair.prompt_ids,
            tuple(responses[(2 * i + k) % len(responses)] for k in range(c)),
            tuple(float((i * 7 + k * 3) % 5) for k in range(c)),
            Origin("test", i + 1),
        )
        for i, pair in enumerate(pairs)
    ]


def one_by_one(model, groups: list[TokenizedGroup]) -> SequenceLogProbs:
    """``[P, C]`` sums and counts, each response scored alone from the model's full logits."""
    sums, counts = [], []
    for group in groups:
        row_sums = []
        for response in group.responses:
            ids = torch.tensor([group.prompt_ids + response])
            logps = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0]
            p = len(group.prompt_ids)
            targets = ids[0, p:]
            row_sums.append(logps[p - 1 : -1].gather(-1, targets[:, None]).sum())
        sums.append(torch.stack(row_sums))
        counts.append(torch.tensor([float(len(r)) for r in group.responses], dtype=torch.float64))
    return SequenceLogProbs(sum=torch.stack(sums), count=torch.stack(counts))


def loss_and_grads(model, record_fn, spec: str, rewards: torch.Tensor):
    model.zero_grad(set_to_none=True)
    samples = record_fn()
    out = build(spec)(GroupRecord(samples, rewards))
    out.loss.mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return samples.sum.detach(), out.loss.detach(), grads


@pytest.mark.parametrize(("spec", "layout"), CASES)
def test_group_records_and_gradients_equal_one_response_at_a_time(tiny_path, hh_pairs, layout, spec) -> None:
    model = perturbed(load_model(tiny_path).double())
    groups = groups_from_pairs(hh_pairs[:4])
    batch = build_batch(groups, range(len(groups)), PAD, layout)
    assert batch.group_size == 3 and batch.rewards is not None and batch.rewards.shape == (4, 3)
    if layout == "shared":  # each prompt is in the batch once, not C times
        prompts = sum(len(g.prompt_ids) for g in groups)
        assert batch.num_tokens == prompts + sum(len(r) for g in groups for r in g.responses)
    rewards = batch.rewards.double()
    tokens = build(spec).needs_token_logps

    def packed():
        return response_logprobs(model, batch, with_tokens=tokens)

    plain_sums, plain_loss, plain_grads = loss_and_grads(model, lambda: one_by_one(model, groups), spec, rewards)
    sums, loss, grads = loss_and_grads(model, packed, spec, rewards)
    torch.testing.assert_close(sums, plain_sums, atol=TOL, rtol=TOL)
    torch.testing.assert_close(loss, plain_loss, atol=TOL, rtol=TOL)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=TOL, rtol=TOL, msg=name)


def test_group_per_token_records_and_lora(tiny_path, hh_pairs) -> None:
    """Per-token log-probs ``[P, C, T]`` sum to the sums, and a LoRA policy's groups match too."""
    model = apply_lora(load_model(tiny_path).double(), rank=4)
    groups = groups_from_pairs(hh_pairs[6:10], c=4)
    batch = build_batch(groups, range(4), PAD, "shared")
    with torch.no_grad():
        record = response_logprobs(model, batch, with_tokens=True)
        plain = one_by_one(model, groups)
    assert record.tokens is not None and record.tokens.shape[:2] == (4, 4)
    torch.testing.assert_close(record.sum, plain.sum, atol=TOL, rtol=TOL)
    torch.testing.assert_close(record.tokens.sum(-1), plain.sum, atol=TOL, rtol=TOL)
    torch.testing.assert_close(record.count, plain.count.to(record.count.dtype))


def test_records_for_pairwise_objectives_come_from_the_same_batches(tiny_path, hh_pairs) -> None:
    """A pair batch's [B, 2] record is (chosen, rejected); a chosen-only batch is half the tokens' work."""
    model = load_model(tiny_path).double()
    pairs = hh_pairs[:4]
    both = build_batch(pairs, range(4), PAD, "shared")
    chosen_only = build_batch(pairs, range(4), PAD, "shared", group_size=1)
    assert chosen_only.num_tokens == sum(len(p.prompt_ids) + len(p.chosen_ids) for p in pairs)
    with torch.no_grad():
        full = response_logprobs(model, both, with_tokens=False)
        first = response_logprobs(model, chosen_only, with_tokens=False)
    pair = record_for(build("dpo").record_type, full, full)
    assert pair.rejected is not None
    torch.testing.assert_close(first.sum[:, 0], full.sum[:, 0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(pair.rejected.sum, full.sum[:, 1])
    single = record_for(build("mle").record_type, first)
    assert single.rejected is None and single.chosen.batch_shape == (4,)
