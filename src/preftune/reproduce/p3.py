"""Reproduce P3's didactic claims (Tajwar et al. 2024, *Preference Fine-Tuning of LLMs Should Leverage
Suboptimal, On-Policy Data*; docs/methods.md §3, §4, §7) and write a Markdown report with its figures.

:func:`reproduce_p3` runs, at a chosen scale:

- the bandit with the reward peak far from the reference's and near it
  (:mod:`preftune.reproduce.p3_bandit`), and its sequence variant (a tiny transformer emitting L tokens
  with a per-token reward, :mod:`preftune.lab.sequence_bandit`) judged by the same rules;
- the forward vs reverse KL toy, with gradient descent and Adam at several step sizes
  (:mod:`preftune.reproduce.p3_kl`);
- the synthetic length study, when given one (``length``: a callable that returns its section;
  without it the section says "not run");
- two short training runs, ``dpo`` and ``mle``, that measure Lemma 6.2's gradient cosine
  (:mod:`preftune.reproduce.p3_lemma`);

then writes ``report.md``, its PNGs and ``results.json`` to the output folder. Every verdict is
computed from the measured numbers by the rules of :mod:`preftune.reproduce.verdicts`.

Scales: ``small`` fits two CPU cores in about half an hour; ``full`` has more seeds and steps and
full fine-tuning of the embedded model (one GPU); ``test`` is minimal, for the test suite only.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from preftune import __version__
from preftune.errors import SpecError
from preftune.files import strict_json, write_atomic, write_json_atomic
from preftune.lab.bandit import METHODS, BanditConfig, BanditResult, run_bandit
from preftune.lab.kl_toy import KLToyConfig, KLToyResult
from preftune.lab.plots import bandit_histogram_figure, bandit_reward_figure, kl_toy_figure, save_png
from preftune.reproduce.p3_bandit import bandit_contrasts, bandit_section
from preftune.reproduce.p3_kl import (
    BIMODAL_P0,
    BIMODAL_Q,
    DROP,
    EXCLUDED,
    EXCLUDING_Q,
    FAR,
    FAR_LEVEL,
    LEVEL,
    MODE,
    NEAR,
    kl_section,
    run_kl_sweep,
)
from preftune.reproduce.p3_lemma import lemma_section, run_lemma_study
from preftune.reproduce.plots import contrast_figure, gradient_cosine_figure, kl_sweep_figure
from preftune.reproduce.report import ClaimSection, machine, not_run_section, render_report
from preftune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, PARTLY

T = TypeVar("T")
Say = Callable[[str], Any]
LengthStudy = Callable[[str, Path, Say], ClaimSection]
"""``(scale, out, say) -> section``: runs the length study at ``scale``, writes its figures to ``out``."""

LENGTH_TITLE = "Length: on-policy DPO reaches the length target fastest on min and skew length, all alike on mode"
LENGTH_CLAIM = (
    "On synthetic tasks where the preferred response is the shorter one (min length), or the shorter one from a "
    "truncated, skewed dataset (skew length), on-policy DPO drives the mean length to its target faster than "
    "offline or positive-only methods; where the preferred length is the dataset's most common one (mode length), "
    "all methods behave alike."
)


@dataclass(frozen=True)
class P3Scale:
    """How big each study of :func:`reproduce_p3` is.

    Attributes:
        name: ``test``, ``small`` or ``full``.
        bandit_seeds, bandit_steps, bandit_methods: the bandit's seeds, Adam steps and objectives (both peaks).
        kl_steps, kl_sgd_lrs, kl_adam_lrs: the KL toy's steps and its step sizes for gradient descent and Adam.
        training: the Lemma 6.2 runs' settings by :class:`~preftune.run.config.RunConfig` section.
        margin: δ of the verdict rules, in units of true reward (0..1).
        sequence_seeds, sequence_steps, sequence_length: the sequence bandit's seeds, Adam steps and
            response length L (both peaks, every method of ``bandit_methods``).
    """

    name: str
    bandit_seeds: int
    bandit_steps: int
    kl_steps: int
    kl_sgd_lrs: tuple[float, ...]
    kl_adam_lrs: tuple[float, ...]
    training: dict[str, dict[str, Any]]
    bandit_methods: tuple[str, ...] = METHODS
    margin: float = 0.05
    sequence_seeds: int = 3
    sequence_steps: int = 200
    sequence_length: int = 3


_TINY_TRAINING = {
    "model": {"name": "tiny-random"},
    "lora": {"rank": 4, "alpha": 8},
    "data": {"train": "bundled:hh-harmless", "eval_size": 2, "train_size": 8, "max_length": 64},
    "optim": {"lr": 1e-2, "batch_size": 4, "max_steps": 2, "warmup_ratio": 0.0, "mixed_precision": "no"},
    "eval": {"batch_size": 4, "gradient_cosine_every": 1, "gradient_cosine_pairs": 2},
}
_SMALL_TRAINING = {
    "model": {"name": "smollm2-135m-instruct"},
    "lora": {"rank": 8, "alpha": 16, "last_layers": 2},
    "data": {"train": "bundled:hh-harmless", "eval_size": 8, "train_size": 64, "max_length": 128},
    "optim": {"lr": 1e-3, "batch_size": 4, "max_steps": 16, "warmup_ratio": 0.1, "mixed_precision": "no"},
    "eval": {"batch_size": 8, "gradient_cosine_every": 4, "gradient_cosine_pairs": 8},
}
_FULL_TRAINING = {
    "model": {"name": "smollm2-135m-instruct"},
    "lora": {"enabled": False},
    "data": {"train": "bundled:hh-harmless", "eval_size": 64, "train_size": None, "max_length": 512},
    "optim": {"lr": 5e-6, "batch_size": 16, "max_steps": 140, "warmup_ratio": 0.1, "mixed_precision": "auto"},
    "eval": {"batch_size": 16, "gradient_cosine_every": 10, "gradient_cosine_pairs": 64},
}

SCALES = {
    "test": P3Scale(
        "test",
        2,
        12,
        20,
        (0.5,),
        (0.1,),
        _TINY_TRAINING,
        bandit_methods=("bon", "bon_neg", "dpo"),
        sequence_seeds=2,
        sequence_steps=20,
        sequence_length=2,
    ),
    "small": P3Scale("small", 5, 300, 300, (0.1, 0.5, 2.0), (0.01, 0.1), _SMALL_TRAINING),
    "full": P3Scale(
        "full",
        10,
        1000,
        300,
        (0.05, 0.1, 0.5, 1.0, 2.0),
        (0.01, 0.03, 0.1),
        _FULL_TRAINING,
        sequence_seeds=10,
        sequence_steps=500,
        sequence_length=4,
    ),
}


def get_scale(name: str) -> P3Scale:
    """The scale called ``name``; an unknown one is refused with the known ones."""
    if name not in SCALES:
        raise SpecError(f"unknown scale '{name}'; choose from {', '.join(s for s in SCALES if s != 'test')}")
    return SCALES[name]


def _bandit(scale: P3Scale, peak: str, out: Path, say: Say) -> tuple[BanditResult, ClaimSection]:
    """The bandit at ``peak``: run, figures, section."""
    config = BanditConfig(peak=peak, methods=scale.bandit_methods, seeds=scale.bandit_seeds, steps=scale.bandit_steps)
    say(f"bandit, {peak} peak: {len(config.methods)} methods × 2 regimes × {config.seeds} seeds × {config.steps} steps")
    result = run_bandit(config)
    figures = (f"bandit_{peak}_reward.png", f"bandit_{peak}_histograms.png")
    save_png(bandit_reward_figure(result), out / figures[0])
    save_png(bandit_histogram_figure(result), out / figures[1])
    say(f"bandit, {peak} peak: done in {result.seconds:.0f} s")
    return result, bandit_section(result, scale.margin, figures)


def _sequence_bandit(scale: P3Scale, peak: str, out: Path, say: Say) -> ClaimSection:
    """The sequence variant at ``peak``: run, figures, section."""
    from preftune.lab.plots import sequence_bandit_figures
    from preftune.lab.sequence_bandit import SequenceBanditConfig, run_sequence_bandit

    config = SequenceBanditConfig(
        peak=peak,
        methods=scale.bandit_methods,
        seeds=scale.sequence_seeds,
        steps=scale.sequence_steps,
        length=scale.sequence_length,
    )
    say(f"sequence bandit, {peak} peak: {len(config.methods)} methods × 2 regimes × {config.seeds} seeds")
    result = run_sequence_bandit(config)
    figures = (f"sequence_bandit_{peak}_reward.png", f"sequence_bandit_{peak}_tokens.png")
    for figure, name in zip(sequence_bandit_figures(result), figures, strict=True):
        save_png(figure, out / name)
    say(f"sequence bandit, {peak} peak: done in {result.seconds:.0f} s")
    return bandit_section(result, scale.margin, figures, sequence=True)


def _kl(scale: P3Scale, out: Path, say: Say) -> ClaimSection:
    """The KL toy sweeps (P3's pair, a ruled-out category, a bimodal target): runs, figures, section."""
    say(f"KL toy: {len(scale.kl_sgd_lrs)} gradient-descent and {len(scale.kl_adam_lrs)} Adam step sizes")
    lrs = (scale.kl_steps, scale.kl_sgd_lrs, scale.kl_adam_lrs)
    runs = run_kl_sweep(*lrs)
    excluding = run_kl_sweep(*lrs, q=EXCLUDING_Q)
    bimodal = run_kl_sweep(*lrs, q=BIMODAL_Q, p0=BIMODAL_P0)
    first = runs[0]
    figures = ("kl_toy.png", "kl_toy_sweep.png", "kl_toy_excluding.png", "kl_toy_bimodal.png")
    toy = KLToyResult(KLToyConfig(steps=scale.kl_steps, lr=first.lr), first.forward, first.reverse)
    save_png(kl_toy_figure(toy), out / figures[0])
    save_png(kl_sweep_figure(runs), out / figures[1])
    save_png(kl_sweep_figure(excluding, mode=EXCLUDED, covered=MODE), out / figures[2])
    save_png(kl_sweep_figure(bimodal, mode=NEAR, covered=FAR), out / figures[3])
    return kl_section(runs, figures, excluding, bimodal)


def _lemma(scale: P3Scale, out: Path, say: Say) -> ClaimSection:
    """The two Lemma 6.2 training runs: records, figure, section."""
    say(f"Lemma 6.2: training {scale.training['model']['name']} with dpo and with mle")
    runs = run_lemma_study(scale.training)
    figure = "gradient_cosine.png"
    save_png(gradient_cosine_figure({k: v["gradient_cosines"] for k, v in runs.items()}), out / figure)
    return lemma_section(runs, scale.training, (figure,))


def _contrasts_png(far: BanditResult, near: BanditResult, margin: float, out: Path) -> str:
    """The forest plot of both peaks' contrasts; its file name."""
    panels = {}
    for result in (far, near):
        rows = [(c.name, c.interval.estimate, c.interval.low, c.interval.high) for c in bandit_contrasts(result)]
        panels[f"{result.config.peak} peak"] = rows
    name = "bandit_contrasts.png"
    save_png(contrast_figure(panels, margin), out / name)
    return name


def reproduce_p3(scale: str, out: Path | str, say: Say = print, length: LengthStudy | None = None) -> dict[str, Any]:
    """Run P3's studies at ``scale`` and write ``report.md``, PNGs and ``results.json`` to ``out``.

    Args:
        scale: ``small`` (two CPU cores, about half an hour), ``full`` (one GPU) or ``test`` (minimal).
        out: the output folder (created; files in it with the same names are replaced).
        say: where progress lines go.
        length: the length study (see :data:`LengthStudy`); ``None``: its section says "not run".
    Returns:
        What ``results.json`` holds: the scale, timings, and each section's verdict, reason and numbers.
    """
    settings = get_scale(scale)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    far, far_section = _timed(seconds, "bandit_far", lambda: _bandit(settings, "far", out, say))
    near, near_section = _timed(seconds, "bandit_near", lambda: _bandit(settings, "near", out, say))
    near_section = replace(
        near_section, figures=(*near_section.figures, _contrasts_png(far, near, settings.margin, out))
    )
    far_sequence = _timed(seconds, "sequence_far", lambda: _sequence_bandit(settings, "far", out, say))
    near_sequence = _timed(seconds, "sequence_near", lambda: _sequence_bandit(settings, "near", out, say))
    kl = _timed(seconds, "kl_toy", lambda: _kl(settings, out, say))
    length_claim = _timed(seconds, "length", lambda: length_section(length, scale, out, say))
    lemma = _timed(seconds, "lemma", lambda: _lemma(settings, out, say))
    seconds["total"] = time.perf_counter() - began
    sections = [far_section, near_section, far_sequence, near_sequence, kl, length_claim, lemma]
    results = _results(settings, sections, seconds)
    write_atomic(
        out / "report.md",
        render_report(_title(settings), _preamble(settings, seconds), sections, _appendix(settings)).encode("utf-8"),
    )
    write_json_atomic(out / "results.json", results)
    say(f"wrote {out / 'report.md'} and {out / 'results.json'} in {seconds['total']:.0f} s")
    return results


def _timed(seconds: dict[str, float], key: str, work: Callable[[], T]) -> T:
    """``work()``, its wall time recorded as ``seconds[key]``."""
    clock = time.perf_counter()
    try:
        return work()
    finally:
        seconds[key] = time.perf_counter() - clock


def length_section(length: LengthStudy | None, scale: str, out: Path, say: Say) -> ClaimSection:
    """The length claim's section: ``length``'s, or "not run" without one."""
    if length is None:
        return not_run_section("length", LENGTH_TITLE, LENGTH_CLAIM, "no length study was given to this run.")
    say("length study")
    return length(scale, out, say)


def _results(settings: P3Scale, sections: list[ClaimSection], seconds: dict[str, float]) -> dict[str, Any]:
    return strict_json(
        {
            "paper": "P3",
            "scale": settings.name,
            "settings": asdict(settings),
            "preftune": __version__,
            "seconds": seconds,
            "claims": {section.key: section.to_json() for section in sections},
        }
    )


def _title(settings: P3Scale) -> str:
    return f"Reproducing P3 (Tajwar et al. 2024), scale `{settings.name}`"


def _preamble(settings: P3Scale, seconds: dict[str, float]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
    return (
        f"P3 is Tajwar et al. (2024), *Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data*. "
        f"This report was written by `preftune reproduce P3 --scale {settings.name}` ("
        f"{machine()}) on {now}, in "
        f"{seconds['total'] / 60:.1f} minutes ({parts}). The paper's claims are paraphrased, not quoted. Each "
        "verdict below is computed from the numbers by the rules under *How the verdicts are decided*; intervals are "
        "95%. `results.json` holds every number shown here."
    )


def _appendix(settings: P3Scale) -> str:
    margin = settings.margin
    return f"""## How the verdicts are decided

- A claim is a list of checks. **{HOLDS}**: every check passes; **{PARTLY}**: some do; **{DOES_NOT_HOLD}**: none.
- **Bandit score.** For each run (method × regime × seed): the exact true reward E_π[r(a)] averaged over the
  training steps 0..T, i.e. the normalised area under the reward curve. Reaching the peak sooner gives a larger score.
  The sequence variant evaluates its exact reward every few steps (evenly spaced, 0 and T included), and its score
  is the mean over those evaluations.
- **Bandit contrasts.** Per seed s, *on-policy − offline* = the mean over methods of the on-policy score minus the
  offline score; *negative gradient − none, in a regime* = the mean score of bon_neg, dpo, ipo and reinforce minus
  that of bon and rwr. Each seed's runs are independent of the other seeds', so these per-seed differences are
  i.i.d.; the contrast is their mean with a 95% Student-t interval over the seeds.
- **Far peak ("much sooner").** A check passes when a contrast's whole interval lies above +δ = {margin:g}.
- **Near peak ("all alike").** A check passes when a contrast's whole interval lies within ±δ = ±{margin:g}.
- **KL toy.** Deterministic (exact gradients, no sampling), so no intervals: for each optimiser and step size,
  the claim as docs/methods.md §7 states it. Check 1 passes when, towards q′ = {list(EXCLUDING_Q)}, reverse KL
  brings category {EXCLUDED}'s mass down to {DROP:g} in fewer steps than forward KL; check 2 passes when, from
  p0 = {list(BIMODAL_P0)} towards q = {list(BIMODAL_Q)}, forward KL brings the far mode (category {FAR})
  up to {FAR_LEVEL:g} in fewer steps than reverse KL. A tie fails. P3's own pair (reverse KL reaching category
  {MODE} ≥ {LEVEL:g} first) is shown as a worked example, outside the verdict.
- **Lemma 6.2.** A lemma holds by proof; we report how often its condition (cosine ≤ 0) holds on real pairs, with
  95% Wilson intervals, and give no verdict.
"""
