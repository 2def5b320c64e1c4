"""Win rates during training (docs/methods.md §6): the policy's greedy answers to held-out prompts
against a baseline's, by pairwise judges — ``preftune evaluate --generate`` as a periodic evaluation.

    eval.judges: [longer, "rm:out/rm"]   # any judge= of preftune rank or win-rate
    eval.baseline: start                 # start | chosen
    eval.win_rate_every: 20              # steps; 0: at the end of each stage only
    eval.win_rate_prompts: 24            # the first held-out prompts (distinct)

The baseline is ``start`` (the run's starting policy, answered once before its first step and kept
in ``win_rate_baseline.jsonl`` in the run folder, so a resumed run compares against the same
answers) or ``chosen`` (the held-out pairs' chosen responses). Each evaluation judges both orders
(ties half), reports the win rate with a bootstrap interval, the length-controlled win rate (no
interval: its bootstrap refits a GLM hundreds of times) and the mean lengths, on the console, in the
trackers (``eval/win_rate/JUDGE``, ``eval/lc_win_rate/JUDGE``, ``eval/mean_length``) and in the
stage's record (``outcome.json``, ``summary.md``). Where the length-controlled rate cannot be
estimated (fewer than :data:`~preftune.evaluation.generative.MIN_PROMPTS` prompts, or verdicts that
length separates: :func:`~preftune.evaluation.generative.length_controlled_win_rate`), the record's
``lc_reason`` says why, its ``lc_win_rate`` is NaN, the console and ``summary.md`` give the reason
and the trackers get no ``eval/lc_win_rate`` value. The model's latest answers are in the stage
folder's ``win_rate_outputs.jsonl``. Only the main process generates and judges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from preftune.errors import PreftuneError
from preftune.evaluation.generate_eval import response_text
from preftune.evaluation.generative import length_controlled_win_rate, win_rate, win_scores
from preftune.files import strict_json, write_atomic
from preftune.generation.prompts import encode_prompt, prompt_key
from preftune.generation.sampling import SamplingConfig, sample
from preftune.judging.labellers import prompt_text
from preftune.training.hooks import Fit, RecordingHook
from preftune.training.settings import EvalConfig

BASELINE_FILE, OUTPUTS_FILE = "win_rate_baseline.jsonl", "win_rate_outputs.jsonl"
WIN_RATE_BASELINES = ("start", "chosen")


def distinct_prompts(examples: Sequence[Any], limit: int) -> list[Any]:
    """The first ``limit`` held-out examples with distinct prompts."""
    seen: set[str] = set()
    out = []
    for example in examples:
        key = prompt_key(example.prompt)
        if key not in seen:
            seen.add(key)
            out.append(example)
        if len(out) == limit:
            break
    return out


class WinRateEvaluation(RecordingHook):
    """Win rates against the baseline every ``config.win_rate_every`` steps and at the end of a fit
    (see the module docstring).

    Args:
        examples: held-out examples (``prompt``, ``chosen``); the first ``config.win_rate_prompts``
            distinct prompts are answered.
        tokenizer: the policy's (chat template, decoding).
        judges: ``(spec, judge)`` pairs, built before the policy loaded.
        config: the run's ``eval`` section.
        run_dir: the run folder (where the ``start`` baseline is kept).
        stage_dir: the stage folder (the latest answers).
    """

    name = "win_rates"

    def __init__(
        self,
        examples: Sequence[Any],
        tokenizer: Any,
        judges: Sequence[tuple[str, Any]],
        config: EvalConfig,
        run_dir: Path,
        stage_dir: Path,
        console: Console | None = None,
    ) -> None:
        super().__init__()
        self.examples = distinct_prompts(examples, config.win_rate_prompts)
        if not self.examples:
            raise PreftuneError("eval.judges needs held-out prompts: set data.eval_size > 0 or data.eval")
        self.prompt_ids = [encode_prompt(tokenizer, e.prompt) for e in self.examples]
        self.texts = [prompt_text(e.prompt) for e in self.examples]
        self.tokenizer, self.judges, self.config = tokenizer, list(judges), config
        self.baseline_path, self.outputs_path = Path(run_dir) / BASELINE_FILE, Path(stage_dir) / OUTPUTS_FILE
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.baseline: list[str] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.baseline = state.get("baseline")

    def start(self, fit: Fit) -> None:
        with fit.trainer.whole_parameters():  # the main process answers alone: no shard exchanged meanwhile
            if self.baseline is None and fit.trainer.accelerator.is_main_process:
                self.baseline = self._baseline(fit)
            fit.trainer.accelerator.wait_for_everyone()

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        done, every = fit.trainer.global_step, self.config.win_rate_every
        if every and done % every == 0 and done < fit.end_step:
            self.log(fit)

    def end(self, fit: Fit) -> None:
        self.log(fit)

    def _baseline(self, fit: Fit) -> list[str]:
        if self.config.baseline == "chosen":
            return [response_text(e.chosen) for e in self.examples]
        if self.baseline_path.exists():
            rows = [json.loads(line) for line in self.baseline_path.read_text(encoding="utf-8").splitlines()]
            if [r["prompt"] for r in rows] == [e.prompt for e in self.examples]:
                return [r["completion"] for r in rows]
        if fit.trainer.global_step > 0:
            raise PreftuneError(
                f"{self.baseline_path} (the starting policy's answers) is missing or for other "
                "prompts: a resumed run cannot answer as its starting policy"
            )
        answers = self.answers(fit.trainer)  # before the first step: the starting policy
        rows = [{"prompt": e.prompt, "completion": a} for e, a in zip(self.examples, answers, strict=True)]
        write_atomic(self.baseline_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return answers

    def answers(self, trainer: Any) -> list[str]:
        """The policy's greedy answer to each prompt."""
        config = SamplingConfig(
            n=1, temperature=0.0, max_new_tokens=self.config.max_new_tokens, batch_size=self.config.batch_size
        )
        model = trainer.accelerator.unwrap_model(trainer.model)
        return [s.text for s in sample(model, self.tokenizer, self.prompt_ids, config)]

    def log(self, fit: Fit) -> list[dict[str, Any]]:
        """Evaluate now (main process); the records kept (``fit.result.records["win_rates"]`` at the end)."""
        trainer = fit.trainer
        records: list[dict[str, Any]] = []
        with trainer.whole_parameters():  # the main process answers alone: no shard exchanged meanwhile
            if trainer.accelerator.is_main_process:
                records = self._log_here(trainer)
            trainer.accelerator.wait_for_everyone()
        return records

    def _log_here(self, trainer: Any) -> list[dict[str, Any]]:
        """Answer, judge, record and show (the main process)."""
        assert self.baseline is not None
        records = self.evaluate(trainer.global_step, self.answers(trainer), self.baseline)
        self.records.extend(records)
        for record in records:
            spec = record["judge"]
            values = {f"eval/win_rate/{spec}": record["win_rate"], "eval/mean_length": record["mean_length"]}
            if record["lc_reason"] is None:
                values[f"eval/lc_win_rate/{spec}"] = record["lc_win_rate"]
            trainer.accelerator.log(values, step=trainer.global_step)
            self.console.print(format_record(record, trainer.total_steps, self.config.baseline), highlight=False)
        return records

    def evaluate(self, step: int, outputs: list[str], baseline: list[str]) -> list[dict[str, Any]]:
        lengths, base_lengths = [len(t) for t in outputs], [len(t) for t in baseline]
        rows, records = [], []
        for spec, judge in self.judges:
            scores = win_scores(judge, self.texts, outputs, baseline)
            raw = win_rate(scores, lengths, base_lengths, seed=step)
            lc = length_controlled_win_rate(scores, lengths, base_lengths, bootstrap=0)
            records.append(
                {
                    "step": step,
                    "judge": spec,
                    "win_rate": raw.win_rate,
                    "ci_low": raw.ci_low,
                    "ci_high": raw.ci_high,
                    "lc_win_rate": lc.win_rate,
                    "lc_reason": lc.reason,
                    "wins": raw.wins,
                    "ties": raw.ties,
                    "losses": raw.losses,
                    "failed": raw.failed,
                    "mean_length": raw.mean_length,
                    "baseline_mean_length": raw.baseline_mean_length,
                }
            )
            rows.append(scores)
        lines = [
            {
                "step": step,
                "prompt": e.prompt,
                "completion": o,
                "scores": {s: strict_json(r[i]) for (s, _), r in zip(self.judges, rows, strict=True)},
            }
            for i, (e, o) in enumerate(zip(self.examples, outputs, strict=True))
        ]
        write_atomic(self.outputs_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
        return records


def format_record(record: dict[str, Any], total_steps: int, baseline: str) -> str:
    """One console line of a win-rate record."""
    reason = record.get("lc_reason")
    lc = f"{record['lc_win_rate']:.3f}" if reason is None else f"cannot be estimated ({reason})"
    return (
        f"win rate at step {record['step']}/{total_steps} against {baseline}, judge {record['judge']}: "
        f"{record['win_rate']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}], "
        f"LC {lc}; {record['wins']} wins, {record['ties']} ties, {record['losses']} losses; "
        f"mean length "
        f"{record['mean_length']:.0f} characters (baseline {record['baseline_mean_length']:.0f})"
    )
