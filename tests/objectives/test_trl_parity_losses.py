"""Parity with TRL 1.16 on its other preference losses (issue 24), every TRL number from TRL's own code.

``DPOTrainer``'s losses (``robust``, ``exo_pair``, ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``aot``,
``aot_unpaired``, ``apo_zero``, ``apo_down``, ``discopop``, ``sigmoid_norm``) and its settings (f-divergences,
``ld_alpha``, WPO's ``use_weighting``) are only reachable through ``DPOTrainer._compute_loss``, which reads its
per-token log-probs from the model's fused LM head in float32. To compare in float64, a real ``DPOTrainer`` with a
separate reference model is given *inputs*: forward hooks on the policy and the reference replace the head's
``log_probs`` (and the policy's ``log_sum_sq_probs``, WPO's normaliser) with random float64 per-token values, zero off
the completion as the head gives them. Every step after that (sums, ``ld_alpha``'s split, f-divergence, loss, WPO
weight, batch mean) is TRL's own code; the loss is ``trainer.compute_loss``. Values and gradients (with respect to each
per-token log-prob) agree to 1e-6 relative. The α-divergence is the exception: TRL's clamp table knows float16,
bfloat16 and float32 only, so that case runs in float32 at the float32 tolerance of test_trl_parity.py. A last test
runs each loss through the real model, unpatched (float32, gradients to the weights).

CPO (and SimPO, AlphaPO) come from ``CPOTrainer``: ``cpo_loss`` on float64 per-sequence scores, and the whole loss with
its NLL term from ``get_batch_loss_metrics`` on a float64 model. ORPO comes from ``ORPOTrainer``: ``odds_ratio_loss``
casts to float32 (so float32 tolerance), and ``get_batch_loss_metrics`` gives the whole loss, whose NLL also counts
the prompt's tokens (docs/methods.md §2.7): it is tested against ours plus exactly that difference.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from datasets import Dataset

from preftune.errors import SpecError
from preftune.objectives import PairRecord, SequenceLogProbs, parse
from tests.objectives.test_trl_parity import NO_CHECKPOINTING, TRAIN_TEXT, VOCAB, _tiny_model, _tokenizer

trl = pytest.importorskip("trl")

RTOL, ATOL = 1e-6, 1e-9  # float64 on both sides; ATOL for values that cancel to near 0 (EXO near its minimum)
RTOL32, ATOL32 = 1e-6, 1e-6  # float32 (TRL's fused head, α-divergence, ORPO's odds ratio)
BETAS = [0.01, 0.1, 5.0]
SCALES = [1.0, 10.0]  # the reference's spread per token: margins of a few nats, and large ones (|β·h| in the 100s)

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


@pytest.fixture(scope="module")
def dpo_trainer(tokenizer, tmp_path_factory):
    """``dpo_trainer(loss_type, beta, **settings)``: a real DPOTrainer with its own reference model, cached."""
    cache: dict[tuple, object] = {}

    def get(loss_type: str | list[str], beta: float, precompute: bool = False, **settings):
        key = (str(loss_type), beta, precompute, repr(sorted(settings.items())))
        if key not in cache:
            args = trl.DPOConfig(
                output_dir=str(tmp_path_factory.mktemp("dpo")),
                loss_type=loss_type,
                beta=beta,
                precompute_ref_log_probs=precompute,
                use_cpu=True,
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                **settings,
                **NO_CHECKPOINTING,
            )
            cache[key] = trl.DPOTrainer(
                model=_tiny_model(),
                ref_model=None if precompute else _tiny_model(),
                args=args,
                train_dataset=Dataset.from_dict(TRAIN_TEXT),
                processing_class=tokenizer,
            )
        return cache[key]

    return get


# ------------------------------------------------------------------------------------- injected float64 inputs


def inputs(trainer, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64, pairs: int = 6):
    """A batch from TRL's collator (random ids, ragged), and random per-token values for it.

    Returns ``(batch, mask, policy, reference, collision)``: ``mask [2B, T-1]`` the completion tokens TRL scores,
    ``policy`` a leaf with gradient, the reference ``policy + scale·noise`` per token, ``collision`` (log Σ_v π²)
    a little below the policy's values. Rows are ``[chosen; rejected]`` as in TRL.
    """
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    ids = lambda n: torch.randint(2, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    examples = [
        {"prompt_ids": ids(draw(1, 6)), "chosen_ids": ids(draw(1, 8)), "rejected_ids": ids(draw(1, 8))}
        for _ in range(pairs)
    ]
    batch = trainer.data_collator(examples)
    mask = batch["completion_mask"][:, 1:].bool()
    policy = (-6.0 * torch.rand(mask.shape, generator=g, dtype=dtype)).requires_grad_(True)
    reference = policy.detach() + scale * torch.randn(mask.shape, generator=g, dtype=dtype)
    collision = policy.detach() - torch.rand(mask.shape, generator=g, dtype=dtype)
    return batch, mask, policy, reference, collision


def trl_loss(trainer, batch, mask, policy, reference, collision) -> torch.Tensor:
    """``trainer.compute_loss`` with the head's per-token values replaced by ours (zero off the completion)."""

    def on_policy(_module, _args, output):
        output.log_probs = policy * mask
        if getattr(output, "log_sum_sq_probs", None) is not None:
            output.log_sum_sq_probs = collision * mask
        return output

    def on_reference(_module, _args, output):
        output.log_probs = reference * mask
        return output

    hooks = [trainer.model.register_forward_hook(on_policy), trainer.ref_model.register_forward_hook(on_reference)]
    try:
        return trainer.compute_loss(trainer.model, batch)
    finally:
        for hook in hooks:
            hook.remove()


def our_record(mask, policy, reference, collision) -> PairRecord:
    """The same values as our record: policy and reference per token, chosen and rejected halves."""
    (m_w, m_l), (p_w, p_l), (r_w, r_l), (c_w, c_l) = (x.chunk(2) for x in (mask, policy, reference, collision))
    return PairRecord(
        SequenceLogProbs.from_tokens(p_w, m_w, c_w),
        SequenceLogProbs.from_tokens(p_l, m_l, c_l),
        SequenceLogProbs.from_tokens(r_w, m_w),
        SequenceLogProbs.from_tokens(r_l, m_l),
    )


def check(trainer, spec: str, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Our objective against TRL's loss on one injected batch: value and per-token gradient."""
    rtol, atol = (RTOL, ATOL) if dtype == torch.float64 else (RTOL32, ATOL32)
    batch, mask, policy, reference, collision = inputs(trainer, seed, scale, dtype)
    theirs = trl_loss(trainer, batch, mask, policy, reference, collision)
    ours_per_example = parse(spec)(our_record(mask, policy, reference, collision)).loss
    ours = ours_per_example.mean()
    assert theirs.dtype == ours.dtype == dtype
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)
    (grad_ours,) = torch.autograd.grad(ours, policy, retain_graph=True)
    (grad_theirs,) = torch.autograd.grad(theirs, policy)
    torch.testing.assert_close(grad_ours[mask], grad_theirs[mask], rtol=rtol, atol=atol)
    assert grad_theirs[mask].abs().max() > 0, "no gradient: the case would be vacuous"
    return ours_per_example.detach()


# (TRL loss_type, TRL settings, our objective) for DPOTrainer's losses
LOSSES = [
    ("sigmoid_norm", {}, "sigmoid_norm(beta={beta})"),
    ("robust", {"label_smoothing": 0.0}, "robust(beta={beta}, label_smoothing=0.0)"),
    ("robust", {"label_smoothing": 0.2}, "robust(beta={beta}, label_smoothing=0.2)"),
    ("exo_pair", {"label_smoothing": 1e-3}, "exo_pair(beta={beta}, label_smoothing=0.001)"),
    ("exo_pair", {"label_smoothing": 0.3}, "exo_pair(beta={beta}, label_smoothing=0.3)"),
    ("nca_pair", {}, "nca_pair(beta={beta})"),
    ("bco_pair", {}, "bco_pair(beta={beta})"),
    ("sppo_hard", {}, "sppo_hard(beta={beta})"),
    ("apo_zero", {}, "apo_zero(beta={beta})"),
    ("apo_down", {}, "apo_down(beta={beta})"),
    ("aot", {"label_smoothing": 0.0}, "aot(beta={beta})"),
    ("aot", {"label_smoothing": 0.25}, "aot(beta={beta}, label_smoothing=0.25)"),
    ("aot_unpaired", {"label_smoothing": 0.0}, "aot_unpaired(beta={beta})"),
    ("aot_unpaired", {"label_smoothing": 0.25}, "aot_unpaired(beta={beta}, label_smoothing=0.25)"),
    ("discopop", {"discopop_tau": 0.05}, "discopop(beta={beta})"),
    ("discopop", {"discopop_tau": 1.0}, "discopop(beta={beta}, tau=1.0)"),
]
LOSS_IDS = [f"{loss}-{'-'.join(f'{k}={v}' for k, v in s.items())}" for loss, s, _ in LOSSES]
# our names for DPOTrainer's three original losses, for the settings below
OURS = {"sigmoid": "dpo", "hinge": "hinge", "ipo": "ipo"}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize(("loss_type", "settings", "spec"), LOSSES, ids=LOSS_IDS)
def test_dpo_trainer_losses(dpo_trainer, loss_type: str, settings: dict, spec: str, beta: float, scale: float) -> None:
    check(dpo_trainer(loss_type, beta, **settings), spec.format(beta=beta), seed=int(scale), scale=scale)


F_DIVERGENCE_LOSSES = [
    ("sigmoid", {}, "dpo(beta={beta}"),
    ("hinge", {}, "hinge(beta={beta}"),
    ("ipo", {}, "ipo(beta={beta}"),
    ("sigmoid_norm", {}, "sigmoid_norm(beta={beta}"),
    ("robust", {"label_smoothing": 0.2}, "robust(beta={beta}, label_smoothing=0.2"),
    ("exo_pair", {"label_smoothing": 0.1}, "exo_pair(beta={beta}, label_smoothing=0.1"),
    ("discopop", {"discopop_tau": 0.05}, "discopop(beta={beta}"),
]


F_DIVERGENCES = [("forward_kl", None, torch.float64), ("js", None, torch.float64), ("alpha", 0.3, torch.float32)]


@pytest.mark.parametrize("beta", [0.1, 2.0])
@pytest.mark.parametrize(("divergence", "coef", "dtype"), F_DIVERGENCES, ids=["forward_kl", "js", "alpha-0.3-float32"])
@pytest.mark.parametrize(
    ("loss_type", "settings", "spec"), F_DIVERGENCE_LOSSES, ids=[x[0] for x in F_DIVERGENCE_LOSSES]
)
def test_f_divergences(dpo_trainer, loss_type, settings, spec, divergence, coef, dtype, beta) -> None:
    """TRL's ``f_divergence_type`` on each loss that allows one, against our ``divergence=`` setting."""
    if (loss_type, divergence, beta) == ("discopop", "alpha", 2.0):
        pytest.skip("TRL's value is NaN here: test_discopop_stays_finite_where_trl_overflows")
    check(
        _f_trainer(dpo_trainer, loss_type, beta, divergence, coef, settings),
        _f_spec(spec, beta, divergence, coef),
        3,
        dtype=dtype,
    )


def _f_trainer(dpo_trainer, loss_type: str, beta: float, divergence: str, coef: float | None, settings: dict):
    trl_name = {"js": "js_divergence", "alpha": "alpha_divergence"}.get(divergence, divergence)
    extra = {"f_alpha_divergence_coef": coef} if coef is not None else {}
    return dpo_trainer(loss_type, beta, f_divergence_type=trl_name, **settings, **extra)


def _f_spec(spec: str, beta: float, divergence: str, coef: float | None) -> str:
    return spec.format(beta=beta) + f", divergence='{divergence}'" + (f", divergence_alpha={coef})" if coef else ")")


def test_discopop_stays_finite_where_trl_overflows(dpo_trainer) -> None:
    """DiscoPOP computes σ(x/τ)·exp(-x); TRL multiplies the two, which in float32 is inf·0 = NaN once exp(-x)
    overflows (here with the α-divergence, which TRL runs in float32). Ours takes exp(-x + log σ(x/τ)): finite, and
    equal to the same objective evaluated in float64."""
    trainer = _f_trainer(dpo_trainer, "discopop", 2.0, "alpha", 0.3, {})
    batch, mask, policy, reference, collision = inputs(trainer, 3, dtype=torch.float32)
    theirs = trl_loss(trainer, batch, mask, policy, reference, collision)
    spec = _f_spec("discopop(beta={beta}", 2.0, "alpha", 0.3)
    ours = parse(spec)(our_record(mask, policy, reference, collision)).loss.mean()
    wide = [x.detach().double() for x in (mask, policy, reference, collision)]
    exact = parse(spec)(our_record(wide[0].bool(), *wide[1:])).loss.mean()
    assert torch.isnan(theirs) and torch.isfinite(ours)
    torch.testing.assert_close(ours.double(), exact, rtol=RTOL32, atol=ATOL32)


LD_LOSSES = ["sigmoid", "hinge", "ipo", "sigmoid_norm", "nca_pair", "bco_pair", "sppo_hard", "apo_down", "aot"]
LD_LOSSES += ["aot_unpaired"]


@pytest.mark.parametrize("ld_alpha", [0.0, 0.5])
@pytest.mark.parametrize("loss_type", LD_LOSSES)
def test_ld_alpha(dpo_trainer, loss_type: str, ld_alpha: float) -> None:
    """LD-DPO's ``ld_alpha``: the tail of the longer response weighted, for the policy and the reference."""
    trainer = dpo_trainer(loss_type, 0.5, ld_alpha=ld_alpha)
    check(trainer, f"{OURS.get(loss_type, loss_type)}(beta=0.5, ld_alpha={ld_alpha})", seed=4)


WPO_LOSSES = ["sigmoid", "ipo", "sigmoid_norm", "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down"]
WPO_LOSSES += ["discopop", "robust"]


@pytest.mark.parametrize("loss_type", WPO_LOSSES)
def test_wpo_weighting(dpo_trainer, loss_type: str) -> None:
    """WPO's ``use_weighting``: each pair's loss times w(y_w)·w(y_l), no gradient through the weights."""
    trainer = dpo_trainer(loss_type, 0.5, use_weighting=True, label_smoothing=0.2)
    smoothing = ", label_smoothing=0.2" if loss_type == "robust" else ""
    check(trainer, f"{OURS.get(loss_type, loss_type)}(beta=0.5, wpo=True{smoothing})", seed=5)


def test_wpo_hinge_value(dpo_trainer) -> None:
    """``hinge`` with WPO: values only. TRL 1.16 multiplies ``relu``'s output in place (``per_sequence_loss *=``),
    so its own backward pass fails; ours differentiates (the gradient is WPO's weight times hinge's)."""
    trainer = dpo_trainer("hinge", 0.5, use_weighting=True)
    batch, mask, policy, reference, collision = inputs(trainer, seed=5)
    theirs = trl_loss(trainer, batch, mask, policy, reference, collision)
    record = our_record(mask, policy, reference, collision)
    ours = parse("hinge(beta=0.5, wpo=True)")(record).loss
    torch.testing.assert_close(ours.mean(), theirs, rtol=RTOL, atol=ATOL)
    (grad,) = torch.autograd.grad(ours.sum(), policy, retain_graph=True)
    plain = parse("hinge(beta=0.5)")(record).loss
    (plain_grad,) = torch.autograd.grad(plain.sum(), policy)
    weight = (ours / plain).detach().nan_to_num()  # [B], where hinge > 0
    torch.testing.assert_close(grad, plain_grad * torch.cat([weight, weight])[:, None], rtol=RTOL, atol=ATOL)
    with pytest.raises(RuntimeError, match="inplace operation"):
        theirs.backward()


def test_every_setting_at_once_and_a_weighted_list(dpo_trainer) -> None:
    """ld_alpha, an f-divergence and WPO together, on a weighted list of losses (TRL's ``loss_weights``)."""
    trainer = dpo_trainer(
        ["sigmoid", "robust", "ipo"],
        0.3,
        loss_weights=[1.0, 0.5, 0.25],
        label_smoothing=0.1,
        ld_alpha=0.3,
        f_divergence_type="js_divergence",
        use_weighting=True,
    )
    common = "beta=0.3, ld_alpha=0.3, divergence='js', wpo=True"
    check(trainer, f"dpo({common}) + 0.5*robust({common}, label_smoothing=0.1) + 0.25*ipo({common})", seed=6)


def test_aot_depends_on_the_batch(dpo_trainer) -> None:
    """Batch-sorted: one pair's loss changes with the other pairs in its batch (said in its docstring)."""
    _, mask, policy, reference, collision = inputs(dpo_trainer("aot", 0.5), seed=7, scale=10.0)
    record = our_record(mask, policy.detach(), reference, collision)
    whole = parse("aot(beta=0.5)")(record).loss.mean()
    halves = [parse("aot(beta=0.5)")(_rows(record, rows)).loss.mean() for rows in (slice(0, 3), slice(3, 6))]
    assert not torch.isclose(whole, sum(halves) / 2)
    assert parse("aot").sorts_batch and not parse("dpo").sorts_batch


def _rows(record: PairRecord, rows: slice) -> PairRecord:
    def take(s: SequenceLogProbs) -> SequenceLogProbs:
        return SequenceLogProbs.from_tokens(s.tokens[rows], s.mask[rows])

    return PairRecord(*(take(s) for s in (record.chosen, record.rejected, record.ref_chosen, record.ref_rejected)))


@pytest.mark.parametrize(
    ("trl_settings", "ours", "message"),
    [
        ({"loss_type": "nca_pair", "f_divergence_type": "js_divergence"}, "nca_pair(divergence='js')", "no parameter"),
        ({"loss_type": "aot", "use_weighting": True}, "aot(wpo=True)", "sorts the batch"),
        ({"loss_type": "exo_pair", "label_smoothing": 0.0}, "exo_pair(label_smoothing=0.0)", "must be in"),
    ],
)
def test_what_trl_refuses_we_refuse(dpo_trainer, trl_settings: dict, ours: str, message: str) -> None:
    settings = dict(trl_settings)
    loss_type = settings.pop("loss_type")
    with pytest.raises((ValueError, NotImplementedError)):
        dpo_trainer(loss_type, 0.1, **settings)
    with pytest.raises(SpecError, match=message):
        parse(ours)


def test_alpha_divergence_is_trls_parameterisation_not_the_papers() -> None:
    """TRL's ψ(u) = (u^(α-1) - 1)/(α-1); f-DPO's Table 1 writes (1 - u^(-α))/α: the same with α ↦ 1 - α."""
    from preftune.objectives.margin import f_prime

    r = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for trl_alpha in (0.1, 0.3, 0.5, 0.9):
        paper_alpha = 1 - trl_alpha
        torch.testing.assert_close(f_prime(r, "alpha", trl_alpha), (1 - torch.exp(-paper_alpha * r)) / paper_alpha)
    # and the limits: α → 1 (TRL) is the reverse KL, α → 0 the forward KL
    torch.testing.assert_close(f_prime(r, "alpha", 1 - 1e-7), r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f_prime(r, "alpha", 1e-9), f_prime(r, "forward_kl", 0.5), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("loss_type", "settings", "spec"), list({loss: (loss, s, spec) for loss, s, spec in LOSSES}.values())
)
def test_through_the_real_model(dpo_trainer, loss_type: str, settings: dict, spec: str) -> None:
    """Unpatched: TRL's own float32 log-probs from the model, gradients to the model's weights (float32 tolerance)."""
    from tests.objectives.test_trl_parity import assert_parity, random_batch

    trainer = dpo_trainer(loss_type, 0.5, precompute=True, **settings)
    assert_parity(trainer, spec.format(beta=0.5), random_batch(trainer, seed=0, pairs=6))


# ------------------------------------------------------------------------------------- CPO, SimPO, AlphaPO, ORPO


def _experimental(module: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns that its API may change
        return pytest.importorskip(f"trl.experimental.{module}")


def _text(g: torch.Generator, n: int) -> str:
    return " ".join(f"w{int(i)}" for i in torch.randint(2, VOCAB - 2, (n,), generator=g))


def text_pairs(seed: int, pairs: int = 6, chosen_words: int = 4) -> dict[str, list[str]]:
    """Random word prompts and responses; every chosen response has ``chosen_words`` words (see CPO's NLL)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lambda: [int(n) for n in torch.randint(1, 7, (pairs,), generator=g)]  # noqa: E731
    return {
        "prompt": [_text(g, n) for n in lengths()],
        "chosen": [" " + _text(g, chosen_words) for _ in range(pairs)],
        "rejected": [" " + _text(g, n) for n in lengths()],
    }


@pytest.fixture(scope="module")
def experimental_trainer(tokenizer, tmp_path_factory):
    """``experimental_trainer("cpo" | "orpo", seed, **settings)``: a real CPOTrainer or ORPOTrainer over random text."""
    cache: dict[tuple, object] = {}

    def get(kind: str, seed: int, **settings):
        key = (kind, seed, tuple(sorted(settings.items())))
        if key not in cache:
            module = _experimental(kind)
            config, trainer = (
                (module.CPOConfig, module.CPOTrainer) if kind == "cpo" else (module.ORPOConfig, module.ORPOTrainer)
            )
            args = config(
                output_dir=str(tmp_path_factory.mktemp(kind)),
                max_length=64,
                per_device_train_batch_size=6,
                use_cpu=True,
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                **settings,
                **NO_CHECKPOINTING,
            )
            cache[key] = trainer(
                model=_tiny_model(),
                args=args,
                train_dataset=Dataset.from_dict(text_pairs(seed)),
                processing_class=tokenizer,
            )
        return cache[key]

    return get


def sequences(g: torch.Generator, pairs: int = 6, width: int = 8, low: float = -6.0):
    """Random float64 per-token log-probs with ragged lengths, ``(tokens leaf, mask)``."""
    lengths = torch.randint(1, width + 1, (pairs,), generator=g)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return (low * torch.rand(pairs, width, generator=g, dtype=torch.float64)).requires_grad_(True), mask


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [0.1, 2.0, 10.0])
@pytest.mark.parametrize(
    ("settings", "spec"),
    [
        ({"simpo_gamma": 0.5}, "simpo(beta={beta}, gamma=0.5)"),
        ({"simpo_gamma": 0.0, "label_smoothing": 0.2}, "simpo(beta={beta}, gamma=0.0, label_smoothing=0.2)"),
        ({"simpo_gamma": 1.0, "alpha": 0.25}, "simpo(beta={beta}, gamma=1.0, alpha=0.25)"),
        ({"simpo_gamma": 0.5, "alpha": -0.5}, "simpo(beta={beta}, gamma=0.5, alpha=-0.5)"),
    ],
    ids=["simpo", "simpo-smoothed", "alphapo", "alphapo-negative"],
)
def test_simpo_and_alphapo_match_cpo_loss(experimental_trainer, settings: dict, spec: str, beta: float, seed: int):
    """SimPO and AlphaPO against ``CPOTrainer.cpo_loss`` (``loss_type="simpo"``) on float64 per-token means."""
    trainer = experimental_trainer("cpo", 0, loss_type="simpo", cpo_alpha=0.0, beta=beta, **settings)
    g = torch.Generator().manual_seed(seed)
    (chosen, chosen_mask), (rejected, rejected_mask) = sequences(g), sequences(g)
    record = PairRecord(
        SequenceLogProbs.from_tokens(chosen, chosen_mask), SequenceLogProbs.from_tokens(rejected, rejected_mask)
    )
    theirs_per_example, _, _ = trainer.cpo_loss(record.chosen.mean, record.rejected.mean)
    ours_per_example = parse(spec.format(beta=beta))(record).loss
    torch.testing.assert_close(ours_per_example, theirs_per_example, rtol=RTOL, atol=ATOL)
    _same_gradients(ours_per_example.mean(), theirs_per_example.mean(), (chosen, rejected))


def _same_gradients(ours, theirs, leaves, rtol=RTOL, atol=ATOL) -> None:
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, leaves, retain_graph=True), torch.autograd.grad(theirs, leaves), strict=True
    ):
        torch.testing.assert_close(g_ours, g_theirs, rtol=rtol, atol=atol)


def model_record(model, batch: dict) -> tuple[PairRecord, torch.Tensor]:
    """Our record from the model, our own way (float64 logits, log_softmax, gather), on CPO/ORPO's batch;
    also the chosen rows' per-token log-probs over prompt and response (every attended token but the first)."""
    records, full = [], None
    for side in ("chosen", "rejected"):
        ids, attention, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        logps = model(input_ids=ids, attention_mask=attention).logits[:, :-1].log_softmax(-1)
        token_logps = logps.gather(-1, ids[:, 1:, None]).squeeze(-1)
        records.append(SequenceLogProbs.from_tokens(token_logps, labels[:, 1:] != -100))
        if side == "chosen":
            full = SequenceLogProbs.from_tokens(token_logps, attention[:, 1:].bool())
    return PairRecord(*records), full


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("settings", "spec"),
    [
        ({"beta": 0.1, "cpo_alpha": 1.0}, "cpo(beta=0.1, lam=1.0)"),
        ({"beta": 2.0, "cpo_alpha": 0.3, "label_smoothing": 0.2}, "cpo(beta=2.0, lam=0.3, label_smoothing=0.2)"),
        ({"beta": 0.5, "cpo_alpha": 0.0}, "cpo(beta=0.5, lam=0.0)"),
    ],
)
def test_cpo_matches_cpo_trainer(experimental_trainer, settings: dict, spec: str, seed: int) -> None:
    """CPO's whole loss (preference term and NLL) from ``get_batch_loss_metrics`` on a float64 model.

    TRL's NLL is one token mean over the batch's chosen tokens, ours a mean per example: equal here, where every
    chosen response has one length (as for ``mle`` against ``sft`` in test_trl_parity.py).
    """
    trainer = experimental_trainer("cpo", seed, loss_type="sigmoid", **settings)
    batch = next(iter(trainer.get_train_dataloader()))
    theirs, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    record, _ = model_record(trainer.model, batch)
    assert record.chosen.count.unique().numel() == 1
    ours = parse(spec)(record).loss.mean()
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    _same_gradients(ours, theirs, params)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_odds_ratio_matches_orpo_trainer(experimental_trainer, lam: float, seed: int) -> None:
    """ORPO's odds-ratio term against ``ORPOTrainer.odds_ratio_loss`` (which casts to float32: float32 tolerance),
    including means near 0 (likely responses, where log(1 - p) needs care)."""
    trainer = experimental_trainer("orpo", 0, beta=lam)
    g = torch.Generator().manual_seed(seed)
    (chosen, chosen_mask), (rejected, rejected_mask) = sequences(g, low=-6.0), sequences(g, low=-0.05 if seed else -6.0)
    record = PairRecord(
        SequenceLogProbs.from_tokens(chosen, chosen_mask), SequenceLogProbs.from_tokens(rejected, rejected_mask)
    )
    losses, *_ = trainer.odds_ratio_loss(record.chosen.mean, record.rejected.mean)
    theirs = -losses.mean()  # TRL's total is nll - mean(λ·log σ(log odds))
    ours = (parse(f"orpo(lam={lam})")(record).loss + record.chosen.mean).mean()  # the odds-ratio part alone
    torch.testing.assert_close(ours, theirs.to(torch.float64), rtol=RTOL32, atol=ATOL32)
    _same_gradients(ours, theirs, (chosen, rejected), RTOL32, ATOL32)


@pytest.mark.parametrize("seed", [0, 1])
def test_orpo_whole_loss_counts_the_prompt_in_its_nll(experimental_trainer, seed: int) -> None:
    """TRL's ORPO loss = our ``orpo`` - our NLL + the NLL over prompt and response, one token mean over the batch:
    TRL counts the prompt's tokens, the paper (and ``orpo``) the response's only (docs/methods.md §2.7)."""
    trainer = experimental_trainer("orpo", seed, beta=0.2)
    batch = next(iter(trainer.get_train_dataloader()))
    theirs, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    record, full = model_record(trainer.model, batch)
    ours = parse("orpo(lam=0.2)")(record).loss.mean()
    response_nll = -record.chosen.mean.mean()
    full_nll = -full.sum.sum() / full.count.sum()
    torch.testing.assert_close(ours - response_nll + full_nll, theirs.to(torch.float64), rtol=RTOL32, atol=ATOL32)
    assert not math.isclose(float(ours), float(theirs), rel_tol=1e-3)  # the difference is real


def test_aot_pair_is_trls_older_name_of_aot_unpaired(capsys, monkeypatch) -> None:
    """``aot_pair`` (the issue's and TRL < 0.20's name) parses to the ``aot_unpaired`` term itself, with its name;
    ``preftune objectives`` lists it beside that term, not as a second one."""
    import argparse

    from preftune.cli import objectives as command
    from preftune.objectives import ALIASES, TERMS, AOTUnpaired, aot_pair, parse

    alias, same = parse("aot_pair(beta=0.2, label_smoothing=0.1)"), parse("aot_unpaired(beta=0.2, label_smoothing=0.1)")
    assert alias == same and isinstance(alias.terms[0], AOTUnpaired) and alias.labels() == ["aot_unpaired"]
    assert parse("0.5*AOT_PAIR + dpo").describe() == parse("0.5*aot_unpaired + dpo").describe()
    assert aot_pair is AOTUnpaired and ALIASES == {"aot_pair": "aot_unpaired"} and "aot_pair" not in TERMS
    with pytest.raises(SpecError, match="did you mean 'aot_pair'"):
        parse("aot_pairr")
    monkeypatch.setenv("COLUMNS", "400")
    assert command.run(argparse.Namespace(expression=None)) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "aot_pair" in line]
    assert len(rows) == 1 and "aot_unpaired (alias: aot_pair)" in rows[0]
