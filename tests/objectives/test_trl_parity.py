"""Parity with TRL, the peer library, on the losses both implement (test-only dependency).

Every TRL number here comes from TRL's own code, never from its formulas typed out again:

- ``sigmoid`` (DPO), ``hinge``, ``ipo`` and ``sft`` come from a real ``trl.DPOTrainer`` built around a tiny
  random Llama and an in-memory word-level tokenizer (nothing is downloaded). Batches are made by the trainer's own
  collator from random token ids; the reference log-probs are random numbers injected through
  ``precompute_ref_log_probs=True``, which makes ``_compute_loss`` read ``ref_chosen_logps``/``ref_rejected_logps``
  from the batch. The loss is ``trainer.compute_loss(trainer.model, batch)``.
- Label-smoothed DPO (cDPO) is not in ``DPOTrainer`` in TRL 1.16 (its ``sigmoid`` ignores ``label_smoothing``); it
  comes from ``CPOTrainer.cpo_loss`` of a real ``trl.experimental.cpo.CPOTrainer``, fed the log-ratios
  S_w - S_ref,w and S_l - S_ref,l, so that its ``logits`` are DPO's margin h.

Our side is ``parse(spec)(record).loss.mean()``: TRL reports the batch mean of the per-example losses. The
formula tests give our objective the per-token log-probs TRL itself computed (read with a forward hook, which only
observes), so both sides start from the same numbers; ``test_end_to_end_with_our_own_log_probs`` instead computes them
from the model our own way. Values and gradients (per token and per model parameter) agree to 1e-6 absolute or 1e-6
relative, whichever is larger: TRL works in float32 (see ``ATOL``).

One difference in definitions, not a bug: TRL's ``sft`` is a token mean over the whole batch, our ``mle`` a token mean
per example; they agree when the chosen responses have equal lengths, and otherwise after weighting ours by length.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from preftune.objectives import PairRecord, SequenceLogProbs, parse

trl = pytest.importorskip("trl")

# TRL's fused LM head returns float32 log-probs whatever the model's dtype, and TRL's loss arithmetic follows in
# float32, whose resolution is 1.2e-7 relative: a loss of 25 (IPO at β = 0.1) is only known to about 2e-6. So values
# agree to 1e-6 absolute or 1e-6 relative (8 float32 ulps), whichever is larger. A wrong formula misses by orders of
# magnitude more. Paths that run in float64 on both sides (cDPO) are held to the same bound, with room to spare.
ATOL = 1e-6
RTOL = 1e-6
VOCAB = 64
PAD, EOS = 0, 1
SEEDS = [0, 1, 2]
BETAS = [0.1, 0.5, 2.0]

# TRL turns activation (gradient) checkpointing on by default. transformers 5 renamed the option and warns on the old
# name; either way it only trades memory for recomputation, so it is switched off to keep the tests quick and quiet.
_ARG_NAMES = {f.name for f in dataclasses.fields(trl.DPOConfig)}
NO_CHECKPOINTING = {
    "activation_checkpointing" if "activation_checkpointing" in _ARG_NAMES else "gradient_checkpointing": False
}

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


# --------------------------------------------------------------------------------------------------- tiny real parts


def _tokenizer() -> PreTrainedTokenizerFast:
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(VOCAB - 2)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def _tiny_model() -> LlamaForCausalLM:
    """The same seeded random Llama on every call, in float64.

    ``initializer_range=0.5`` (not 0.02) so next-token distributions are far from uniform: per-token log-probs then
    differ enough between positions that a shift or mask off by one would show.
    """
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.5,
        pad_token_id=PAD,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return LlamaForCausalLM(config).to(torch.float64)


# Only needed to construct a trainer (it precomputes reference log-probs for it at init); tests use their own batches.
TRAIN_TEXT = {"prompt": ["w1 w2 w3", "w4"], "chosen": [" w5 w6", " w7"], "rejected": [" w8", " w9 w10"]}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return _tokenizer()


@pytest.fixture(scope="module")
def dpo_trainer(tokenizer, tmp_path_factory):
    """``dpo_trainer(loss_types, beta, weights=None)``: a real DPOTrainer, built once per setting.

    Each trainer gets its own fresh copy of the tiny model, because DPOTrainer patches the model's forward.
    """
    cache: dict[tuple, object] = {}

    def get(loss_types: tuple[str, ...], beta: float, weights: tuple[float, ...] | None = None):
        key = (loss_types, beta, weights)
        if key not in cache:
            args = trl.DPOConfig(
                output_dir=str(tmp_path_factory.mktemp("dpo")),
                loss_type=list(loss_types),
                loss_weights=None if weights is None else list(weights),
                beta=beta,
                precompute_ref_log_probs=True,
                use_cpu=True,
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                **NO_CHECKPOINTING,
            )
            cache[key] = trl.DPOTrainer(
                model=_tiny_model(),
                args=args,
                train_dataset=Dataset.from_dict(TRAIN_TEXT),
                processing_class=tokenizer,
            )
        return cache[key]

    return get


@pytest.fixture(scope="module")
def cpo_trainer(tokenizer, tmp_path_factory):
    """``cpo_trainer(beta, label_smoothing)``: a real CPOTrainer, ``loss_type="sigmoid"``, built once per setting.

    ``cpo_loss`` reads ``self.alpha`` (0: plain log-prob rewards), ``self.loss_type``, ``self.beta``,
    ``self.label_smoothing`` and ``self.accelerator.device``, all set by the real constructor from ``CPOConfig``.
    """
    with warnings.catch_warnings():
        # Importing from ``trl.experimental`` warns that its API is unstable; CPOTrainer lives there in TRL 1.16.
        warnings.simplefilter("ignore")
        trl_cpo = pytest.importorskip("trl.experimental.cpo")
    cache: dict[tuple, object] = {}

    def get(beta: float, label_smoothing: float):
        key = (beta, label_smoothing)
        if key not in cache:
            args = trl_cpo.CPOConfig(
                output_dir=str(tmp_path_factory.mktemp("cpo")),
                loss_type="sigmoid",
                beta=beta,
                label_smoothing=label_smoothing,
                max_length=32,
                use_cpu=True,
                report_to="none",
                disable_tqdm=True,
                **NO_CHECKPOINTING,
            )
            cache[key] = trl_cpo.CPOTrainer(
                model=_tiny_model(),
                args=args,
                train_dataset=Dataset.from_dict(TRAIN_TEXT),
                processing_class=tokenizer,
            )
        return cache[key]

    return get


# ----------------------------------------------------------------------------------------------------------- batches


def random_batch(trainer, seed: int, pairs: int = 5, equal_chosen: bool = False) -> dict[str, torch.Tensor]:
    """A batch made by TRL's own collator from random token ids, with random reference log-probs.

    Prompts have 1 to 5 tokens, so a completion never starts at position 0 (see ``our_record``); completions 1 to 6
    (with ``equal_chosen``, every chosen response has one length, 2 to 6).
    The reference log-probs are the model's rough scale (about -4 nats a token) plus noise, so margins are O(1)-O(10)
    and, for β ≥ 0.5 (and β = 0.1 with seed 1), some examples sit in the hinge's flat region and some do not.
    """
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(2, VOCAB, (n,), generator=g).tolist()

    chosen_len = int(torch.randint(2, 7, (1,), generator=g))  # shared length: ≥ 2, so a sum is not its mean
    examples = []
    for _ in range(pairs):
        n_w = chosen_len if equal_chosen else int(torch.randint(1, 7, (1,), generator=g))
        n_l = int(torch.randint(1, 7, (1,), generator=g))
        examples.append(
            {
                "prompt_ids": ids(int(torch.randint(1, 6, (1,), generator=g))),
                "chosen_ids": ids(n_w),
                "rejected_ids": ids(n_l),
                "ref_chosen_logps": float(-4.0 * n_w + 2.0 * torch.randn((), generator=g)),
                "ref_rejected_logps": float(-4.0 * n_l + 2.0 * torch.randn((), generator=g)),
            }
        )
    return trainer.data_collator(examples)


# ------------------------------------------------------------------------------------------------------ both sides


def trl_loss(trainer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's loss from its real ``compute_loss``, and the per-token log-probs its fused LM head produced.

    The log-probs are read with a forward hook (an observer: it changes nothing). They are TRL's
    ``outputs.log_probs``, ``[2B, T-1]``, rows ``[chosen; rejected]``, zero off the completion, still attached to the
    graph, so a loss built on them can be differentiated to the model's parameters alongside TRL's.
    """
    seen: dict[str, torch.Tensor] = {}

    def record(_module, _args, output) -> None:  # returns None, so the output is left as it is
        seen["log_probs"] = output.log_probs

    handle = trainer.model.register_forward_hook(record)
    try:
        loss = trainer.compute_loss(trainer.model, batch)
    finally:
        handle.remove()
    return loss, seen["log_probs"]


def independent_token_logps(trainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs of the same model by the textbook route: full logits, log_softmax, gather.

    Position t scores token t+1 (``logits[:, :-1]`` against ``input_ids[:, 1:]``), as in TRL's fused head, which
    shifts its labels by one (``labels[:, 1:]``). Called without ``fused_lm_head``, the patched forward is the
    model's original one and returns logits.
    """
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)


def our_record(token_logps: torch.Tensor, batch: dict[str, torch.Tensor]) -> PairRecord:
    """Our PairRecord from per-token log-probs ``[2B, T-1]`` aligned with ``input_ids[:, 1:]``, in their dtype.

    The response mask is ``completion_mask[:, 1:]``, the labels TRL scores. Its row sums equal
    ``completion_mask.sum(1)``, the count TRL's IPO divides by, because every prompt has at least one token. The
    reference is only a sum per sequence, so its record is (sum, count) with the response's count.
    """
    mask = batch["completion_mask"][:, 1:].bool()
    chosen_t, rejected_t = token_logps.chunk(2)
    chosen_m, rejected_m = mask.chunk(2)
    chosen = SequenceLogProbs.from_tokens(chosen_t, chosen_m)
    rejected = SequenceLogProbs.from_tokens(rejected_t, rejected_m)
    ref_chosen = SequenceLogProbs(sum=batch["ref_chosen_logps"], count=chosen.count)
    ref_rejected = SequenceLogProbs(sum=batch["ref_rejected_logps"], count=rejected.count)
    return PairRecord(chosen, rejected, ref_chosen, ref_rejected)


def flat_param_grad(loss: torch.Tensor, model) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


def assert_parity(trainer, spec: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our objective against TRL's loss on one batch, in value and in gradient; returns our per-example loss.

    Our objective reads TRL's own float32 per-token log-probs, so both sides start from the same numbers and
    differ only by float32 rounding in the loss arithmetic (see ``ATOL``/``RTOL``). Gradients are compared twice:
    per response token (dL/d log π, the weight each token gets), and on the model's parameters.
    """
    theirs, token_logps = trl_loss(trainer, batch)
    per_example = parse(spec)(our_record(token_logps, batch)).loss
    ours = per_example.mean()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)

    mask = batch["completion_mask"][:, 1:].bool()
    (token_ours,) = torch.autograd.grad(ours, token_logps, retain_graph=True)
    (token_theirs,) = torch.autograd.grad(theirs, token_logps, retain_graph=True)
    # Off the response TRL's own sum reaches the (zero) log-probs, ours masks them; neither reaches the model there.
    torch.testing.assert_close(token_ours[mask], token_theirs[mask], atol=ATOL, rtol=RTOL)

    param_ours, param_theirs = flat_param_grad(ours, trainer.model), flat_param_grad(theirs, trainer.model)
    assert param_theirs.norm() > 0
    assert (param_ours - param_theirs).norm() <= ATOL + RTOL * param_theirs.norm()
    return per_example.detach()


# ------------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", SEEDS)
def test_our_token_logps_match_trls_fused_head(dpo_trainer, seed: int) -> None:
    """Alignment first: TRL's per-token log-probs are the textbook ones, shifted by one, zero off the completion.

    TRL's fused LM head computes log-probs in float32 whatever the model's dtype, hence 1e-5 against float64 here.
    """
    trainer = dpo_trainer(("sigmoid",), 0.1)
    batch = random_batch(trainer, seed)
    _, theirs = trl_loss(trainer, batch)
    mask = batch["completion_mask"][:, 1:].bool()
    with torch.no_grad():
        ours = independent_token_logps(trainer, batch)
    assert theirs.dtype == torch.float32
    assert torch.all(theirs[~mask] == 0)
    torch.testing.assert_close(theirs.to(torch.float64)[mask], ours[mask], atol=1e-5, rtol=0)
    # The check has teeth: log-probs one position off differ by far more than the tolerance.
    assert (ours[:, 1:][mask[:, 1:]] - ours[:, :-1][mask[:, 1:]]).abs().max() > 0.1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize(
    ("loss_type", "spec"),
    [("sigmoid", "dpo(beta={beta})"), ("hinge", "hinge(beta={beta})"), ("ipo", "ipo(beta={beta})")],
)
def test_margin_losses_match_dpo_trainer(dpo_trainer, loss_type: str, spec: str, beta: float, seed: int) -> None:
    """DPO (sigmoid), hinge and IPO against DPOTrainer._compute_loss, value and gradient to the model's weights.

    Both sides read the same per-token log-probs (TRL's own) and the same reference values. IPO is token-averaged on
    both sides (TRL divides the summed log-ratios by the completion length; ours averages policy and reference).
    """
    trainer = dpo_trainer((loss_type,), beta)
    per_example = assert_parity(trainer, spec.format(beta=beta), random_batch(trainer, seed))
    assert (per_example > 0).any(), "every example sat in the hinge's flat region: the test would be vacuous"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("loss_type", "spec"),
    [("sigmoid", "dpo(beta=0.5)"), ("hinge", "hinge(beta=0.5)"), ("ipo", "ipo(beta=0.5)"), ("sft", "mle")],
)
def test_end_to_end_with_our_own_log_probs(dpo_trainer, loss_type: str, spec: str, seed: int) -> None:
    """The whole path: our per-token log-probs computed from the model (float64 logits, log_softmax, gather) rather
    than borrowed from TRL, so that the shift, the completion mask and the reference injection are all ours.

    TRL's log-probs are float32 (about 1e-6 off per token, see the alignment test), yet over 400 random batches the
    losses stayed within 0.4 of the ``ATOL``/``RTOL`` bound, so the same bound holds here.
    """
    trainer = dpo_trainer((loss_type,), 0.5)
    batch = random_batch(trainer, seed, equal_chosen=loss_type == "sft")
    theirs, _ = trl_loss(trainer, batch)
    with torch.no_grad():
        ours = parse(spec)(our_record(independent_token_logps(trainer, batch), batch)).loss.mean()
    torch.testing.assert_close(ours, theirs.detach().to(torch.float64), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_mle_matches_dpo_trainer_sft(dpo_trainer, seed: int) -> None:
    """``mle`` against DPOTrainer's ``sft`` loss, with chosen responses all of one length.

    TRL's ``sft`` is one token mean over every chosen token of the batch; ours is the per-example token mean,
    averaged over examples. The two are equal only when all chosen responses have the same length, hence
    ``equal_chosen=True`` (a documented difference in definitions, not a bug; see the next test).
    """
    trainer = dpo_trainer(("sft",), 0.1)
    assert_parity(trainer, "mle", random_batch(trainer, seed, equal_chosen=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_mle_token_weighted_matches_sft_for_ragged_lengths(dpo_trainer, seed: int) -> None:
    """With ragged chosen lengths TRL's batch token mean is our per-example loss weighted by token count."""
    trainer = dpo_trainer(("sft",), 0.1)
    batch = random_batch(trainer, seed)
    theirs, token_logps = trl_loss(trainer, batch)
    record = our_record(token_logps, batch)
    assert record.chosen.count.unique().numel() > 1, "lengths should be ragged here"
    per_example = parse("mle")(record).loss
    ours = (per_example * record.chosen.count).sum() / record.chosen.count.sum()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)
    # ... and not the plain mean, which is what the equal-length test above compares: the two differ here.
    assert not torch.isclose(per_example.mean(), theirs, atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_sum_matches_dpo_trainer_loss_list(dpo_trainer, seed: int) -> None:
    """A weighted sum of all four terms against DPOTrainer's ``loss_type`` list with ``loss_weights``."""
    beta = 0.5
    trainer = dpo_trainer(("sigmoid", "hinge", "ipo", "sft"), beta, (1.0, 0.5, 0.25, 2.0))
    spec = f"dpo(beta={beta}) + 0.5*hinge(beta={beta}) + 0.25*ipo(beta={beta}) + 2.0*mle"
    assert_parity(trainer, spec, random_batch(trainer, seed, equal_chosen=True))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
def test_label_smoothed_dpo_matches_cpo_loss(cpo_trainer, label_smoothing: float, beta: float, seed: int) -> None:
    """cDPO, -(1-ε) log σ(βh) - ε log σ(-βh), against ``CPOTrainer.cpo_loss`` of a real CPOTrainer.

    ``cpo_loss(chosen, rejected)`` takes per-sequence log-probs and uses ``logits = chosen - rejected`` with no
    reference; given the log-ratios S_w - S_ref,w and S_l - S_ref,l its logits are exactly DPO's summed margin h.
    Random ragged per-token log-probs in float64 (``cpo_loss`` keeps its inputs' dtype); value and gradient with
    respect to every per-token log-prob.
    """
    g = torch.Generator().manual_seed(seed)
    pairs, width = 6, 8

    def tokens() -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.randint(1, width + 1, (pairs,), generator=g)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        values = (-6.0 * torch.rand(pairs, width, generator=g, dtype=torch.float64)).masked_fill(~mask, 0.0)
        return values.requires_grad_(True), mask

    (chosen, chosen_mask), (rejected, rejected_mask) = tokens(), tokens()
    ref_chosen = chosen.detach().sum(-1) + 2.0 * torch.randn(pairs, generator=g, dtype=torch.float64)
    ref_rejected = rejected.detach().sum(-1) + 2.0 * torch.randn(pairs, generator=g, dtype=torch.float64)

    theirs_per_example, _, _ = cpo_trainer(beta, label_smoothing).cpo_loss(
        (chosen * chosen_mask).sum(-1) - ref_chosen, (rejected * rejected_mask).sum(-1) - ref_rejected
    )
    theirs = theirs_per_example.mean()
    record = PairRecord(
        SequenceLogProbs.from_tokens(chosen, chosen_mask),
        SequenceLogProbs.from_tokens(rejected, rejected_mask),
        SequenceLogProbs(sum=ref_chosen, count=chosen_mask.sum(-1).to(torch.float64)),
        SequenceLogProbs(sum=ref_rejected, count=rejected_mask.sum(-1).to(torch.float64)),
    )
    ours_per_example = parse(f"dpo(beta={beta}, label_smoothing={label_smoothing})")(record).loss
    torch.testing.assert_close(ours_per_example, theirs_per_example, atol=ATOL, rtol=0)
    ours = ours_per_example.mean()
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (chosen, rejected), retain_graph=True),
        torch.autograd.grad(theirs, (chosen, rejected)),
        strict=True,
    ):
        torch.testing.assert_close(g_ours, g_theirs, atol=ATOL, rtol=0)
