"""Judges by name, as the command line gives them: ``longer``, ``shorter``, ``random[:SEED]``,
``function:MODULE:FUNCTION``, ``local:MODEL``, ``api:BASE_URL,model=M,...`` or ``api:FILE.yaml``.
One place, so every command that takes a judge (``judge=``, ``eval.judges``, a labeller's
``judge:``) reads it alike."""

from __future__ import annotations

from preftune.errors import PreftuneError
from preftune.judging.base import PairwiseJudge
from preftune.judging.functions import FunctionJudge, RandomJudge, longer_is_better, shorter_is_better

JUDGES = (
    "longer | shorter | random[:SEED] | function:MODULE:FUNCTION | local:MODEL | local-debiased:MODEL"
    " | api:BASE_URL,model=NAME[,api_key_env=VAR,...] | api:FILE.yaml | rm:PATH"
)


def make_judge(spec: str) -> PairwiseJudge:
    """A judge from its command-line name (see ``JUDGES``); an unknown name is one clear error."""
    if spec == "longer":
        return FunctionJudge(longer_is_better)
    if spec == "shorter":
        return FunctionJudge(shorter_is_better)
    if spec == "random" or spec.startswith("random:"):
        seed = spec.partition(":")[2] or "0"
        if not seed.isdigit():
            raise PreftuneError(f"judge={spec}: the seed must be a whole number")
        return RandomJudge(int(seed))
    if spec.startswith("function:"):
        return FunctionJudge(spec.removeprefix("function:"))
    if spec.startswith(("local:", "local-debiased:")):
        from preftune.judging.local import LocalJudge  # torch and the model code only when asked for

        kind, _, model = spec.partition(":")
        if not model:
            raise PreftuneError(f"judge={spec}: name the model, e.g. {kind}:smollm2-135m-instruct")
        return LocalJudge(model, debias=kind == "local-debiased")
    if spec.startswith("api:"):
        from preftune.judging.api import ApiJudge, parse_spec

        return ApiJudge(parse_spec(spec))
    if spec.startswith("rm:"):
        from preftune.judging.reward_model import RewardModelJudge  # torch only when asked for

        path = spec.removeprefix("rm:")
        if not path:
            raise PreftuneError(f"judge={spec}: name the reward model's folder, e.g. rm:out/rm")
        return RewardModelJudge(path)
    raise PreftuneError(f"unknown judge '{spec}' (expected {JUDGES})")
