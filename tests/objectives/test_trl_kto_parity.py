"""``kto`` against TRL 1.16's ``KTOTrainer``, every TRL number from TRL's own code (test-only dependency).

A real ``trl.KTOTrainer`` around the tiny float64 Llama of ``test_trl_parity`` prepares random unpaired text with
its own ``_prepare_dataset`` (tokenisation and the mismatched ``KL_completion_ids``, its rotation by one within a
batch), collates it with its own collator, and computes the loss with its own ``compute_loss``; reference log-probs
(matched and mismatched) are injected through ``precompute_ref_log_probs=True``. B desirable rows come first, then
B undesirable ones, so that our record's example i is TRL's row i (desirable) and row B + i (undesirable).

Our side reads TRL's own per-token log-probs (a forward hook that only observes: the first forward is the
mismatched rows', the second the matched ones'), reduces the mismatched rows with our trainer's
``mismatched_log_ratio`` (one process: the gather is the identity) and computes ``kto``. Values and gradients (per
token and per model parameter) agree to 1e-6 absolute or relative, TRL's float32 bound (``test_trl_parity.ATOL``).
Our data side is checked too: our mismatched rows are TRL's ``KL_input_ids``, token for token, and our own
log-probs of them (``response_logprobs``) are TRL's.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from preftune.data import Origin, TokenizedPair, build_batch
from preftune.data.mismatched import mismatched_groups
from preftune.modeling import response_logprobs
from preftune.objectives import PairRecord, SequenceLogProbs, parse
from preftune.training.mismatched import mismatched_log_ratio
from tests.objectives.test_trl_parity import ATOL, NO_CHECKPOINTING, PAD, RTOL, _tiny_model, _tokenizer, flat_param_grad

trl = pytest.importorskip("trl")

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

B = 3  # desirable and undesirable rows each: TRL's batch holds 2B unpaired rows
SETTINGS = [(0.1, 1.0, 1.0), (0.5, 1.33, 1.0), (2.0, 1.0, 0.75)]  # beta, desirable_weight, undesirable_weight


def _words(g: torch.Generator, low: int, high: int) -> str:
    n = int(torch.randint(low, high, (1,), generator=g))
    return " ".join(f"w{int(i)}" for i in torch.randint(2, 62, (n,), generator=g))


def _text(seed: int) -> dict[str, list]:
    g = torch.Generator().manual_seed(seed)
    prompts = [_words(g, 1, 6) for _ in range(2 * B)]
    completions = [" " + _words(g, 1, 7) for _ in range(2 * B)]
    return {"prompt": prompts, "completion": completions, "label": [True] * B + [False] * B}


@pytest.fixture(scope="module")
def kto_trainer(tmp_path_factory):
    """``kto_trainer(beta, desirable_weight, undesirable_weight)``: a real KTOTrainer, built once per setting."""
    cache: dict[tuple, object] = {}

    def get(beta: float, desirable: float, undesirable: float):
        key = (beta, desirable, undesirable)
        if key not in cache:
            args = trl.KTOConfig(
                output_dir=str(tmp_path_factory.mktemp("kto")),
                beta=beta,
                desirable_weight=desirable,
                undesirable_weight=undesirable,
                per_device_train_batch_size=2 * B,
                precompute_ref_log_probs=True,
                max_length=None,
                use_cpu=True,
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                **NO_CHECKPOINTING,
            )
            data, tokenizer = Dataset.from_dict(_text(99)), _tokenizer()
            cache[key] = trl.KTOTrainer(model=_tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
        return cache[key]

    return get


def _trl_rows(trainer, seed: int) -> list[dict]:
    """TRL's prepared rows of seed's text: prompt_ids, completion_ids, KL_completion_ids, label."""
    prepared = trainer._prepare_dataset(Dataset.from_dict(_text(seed)), trainer.processing_class, trainer.args, "x")
    rows = [dict(row) for row in prepared]
    assert [r["label"] for r in rows] == [True] * B + [False] * B  # nothing reordered
    return rows


def _with_references(trainer, rows: list[dict], seed: int, beta: float, kl_sign: float) -> dict[str, torch.Tensor]:
    """A batch by TRL's collator with reference log-probs set off the policy's own, as TRL's
    ``compute_ref_log_probs`` gives them: β·r ~ N(0, 2) for each row, so no loss saturates (TRL's float32
    1 - σ(x) keeps few digits of a saturated gradient), and a KL estimate of about ``kl_sign`` × 1.5."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        logps, kl_logps = trainer.compute_ref_log_probs(trainer.model, trainer.data_collator(rows))
    for row, logp, kl in zip(rows, logps.tolist(), kl_logps.tolist(), strict=True):
        row["ref_logps"] = logp - 2.0 / beta * float(torch.randn((), generator=g, dtype=torch.float64))
        row["ref_KL_logps"] = kl - kl_sign * 1.5 + 0.3 * float(torch.randn((), generator=g, dtype=torch.float64))
    return trainer.data_collator(rows)


def _trl_loss(trainer, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """TRL's loss by its real ``compute_loss``, and every forward's per-token log-probs (mismatched, then matched)."""
    seen: list[torch.Tensor] = []
    handle = trainer.model.register_forward_hook(lambda _m, _a, out: seen.append(out.log_probs))
    try:
        loss = trainer.compute_loss(trainer.model, batch)
    finally:
        handle.remove()
    assert len(seen) == 2, "TRL's KTO should run the mismatched forward, then the matched one"
    return loss, seen


def _sequences(token_logps: torch.Tensor, completion_mask: torch.Tensor) -> SequenceLogProbs:
    return SequenceLogProbs.from_tokens(token_logps, completion_mask[:, 1:].bool())


def _our_record(batch, kl_tokens: torch.Tensor, tokens: torch.Tensor) -> PairRecord:
    rows = _sequences(tokens, batch["completion_mask"])
    mismatched = _sequences(kl_tokens, batch["KL_completion_mask"])
    ref_kl = SequenceLogProbs(sum=batch["ref_KL_logps"].to(mismatched.sum.dtype), count=mismatched.count)
    estimate = mismatched_log_ratio(mismatched, ref_kl, gather=lambda value: value)  # one process

    def part(k: int, values: SequenceLogProbs) -> SequenceLogProbs:
        fields = (values.sum, values.count, values.tokens, values.mask)
        return SequenceLogProbs(*(t[k * B : (k + 1) * B] for t in fields))

    ref = batch["ref_logps"].to(rows.sum.dtype)
    ref_chosen = SequenceLogProbs(sum=ref[:B], count=rows.count[:B])
    ref_rejected = SequenceLogProbs(sum=ref[B:], count=rows.count[B:])
    return PairRecord(part(0, rows), part(1, rows), ref_chosen, ref_rejected, kl_estimate=estimate)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kl_sign", [1.0, -1.0])  # an estimate above 0, and one the clamp sets to 0
@pytest.mark.parametrize(("beta", "desirable", "undesirable"), SETTINGS)
def test_kto_matches_kto_trainer(kto_trainer, beta, desirable, undesirable, kl_sign: float, seed: int) -> None:
    trainer = kto_trainer(beta, desirable, undesirable)
    batch = _with_references(trainer, _trl_rows(trainer, seed), seed, beta, kl_sign)
    theirs, (kl_tokens, tokens) = _trl_loss(trainer, batch)
    record = _our_record(batch, kl_tokens, tokens)
    assert (record.kl_estimate > 0) == (kl_sign > 0)  # both branches of the clamp are exercised
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(max(0.0, float(record.kl_estimate)), abs=1e-6)

    spec = f"kto(beta={beta}, desirable_weight={desirable}, undesirable_weight={undesirable})"
    ours = parse(spec)(record).loss.mean()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)

    mask = batch["completion_mask"][:, 1:].bool()
    (token_ours,) = torch.autograd.grad(ours, tokens, retain_graph=True)
    (token_theirs,) = torch.autograd.grad(theirs, tokens, retain_graph=True)
    torch.testing.assert_close(token_ours[mask], token_theirs[mask], atol=ATOL, rtol=RTOL)
    param_ours, param_theirs = flat_param_grad(ours, trainer.model), flat_param_grad(theirs, trainer.model)
    assert param_theirs.norm() > 0
    assert (param_ours - param_theirs).norm() <= ATOL + RTOL * param_theirs.norm()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_our_mismatched_rows_are_trls(kto_trainer, seed: int) -> None:
    """Our batcher's mismatched rows are TRL's ``KL_input_ids`` (the same rotation), and our log-probs of them
    (our batch layouts, our response-only head) are TRL's ``_compute_kl_logps``."""
    trainer = kto_trainer(*SETTINGS[0])
    rows = _trl_rows(trainer, seed)
    pairs = [
        TokenizedPair(
            rows[i]["prompt_ids"],
            rows[i]["completion_ids"],
            rows[B + i]["completion_ids"],
            Origin("x", i),
            rejected_prompt_ids=rows[B + i]["prompt_ids"],
        )
        for i in range(B)
    ]
    groups = mismatched_groups(pairs)
    ours = [groups[r % B].branch(r // B) for r in range(2 * B)]  # row k·B + i: response k of group i
    theirs = [(row["prompt_ids"], row["KL_completion_ids"]) for row in rows]
    assert ours == theirs
    assert any(row["KL_completion_ids"] != row["completion_ids"] for row in rows)

    with torch.no_grad():
        kl_theirs = trainer._compute_kl_logps(trainer.model, trainer.data_collator(rows)).to(torch.float64)
        for layout in ("padded", "shared"):
            batch = build_batch(pairs, range(B), PAD, layout, mismatched=True)
            record = response_logprobs(trainer.model, batch.mismatched, with_tokens=False)
            kl_ours = record.sum.T.reshape(-1)  # [B, C] -> rows k·B + i
            torch.testing.assert_close(kl_ours, kl_theirs, atol=1e-5, rtol=1e-6)  # TRL's head is float32
