"""The engine as a reusable part: P3's unified loop in a few lines (docs/methods.md §4).

Offline, a ``fit`` over a dataset; on-policy, the same ``trainer.fit`` over an ``OnPolicySource``
(rounds sampled from the policy and labelled as the fit goes). Runs on the tiny model in seconds:

    .venv/bin/python examples/trainer_api.py
"""

from preftune.data import Batcher, bundled_path, load_preference_data, tokenize_examples
from preftune.modeling import AdapterDisabledReference, apply_lora, load_model, load_tokenizer
from preftune.objectives import build
from preftune.training import (
    Callbacks,
    DatasetSource,
    OptimConfig,
    Progress,
    Trainer,
    make_accelerator,
    make_plan,
    responses_read,
)

tokenizer, model = load_tokenizer("tiny-random"), apply_lora(load_model("tiny-random"), rank=8)
pairs, _ = tokenize_examples(load_preference_data(bundled_path("hh-harmless"))[0][:64], tokenizer, 256)
objective, optim = build("dpo + 0.5*exmate"), OptimConfig(lr=5e-4, batch_size=8, mixed_precision="no")
trainer = Trainer(
    accelerator=make_accelerator(cpu=True),
    model=model,
    objective=objective,
    optim=optim,
    total_steps=8,  # the schedule's length: the fit ends there
    reference=AdapterDisabledReference(model),
)
plan = make_plan(pairs, optim, processes=1, group_by_length=False)
source = DatasetSource(pairs, Batcher(tokenizer.pad_token_id), plan, group_size=responses_read(objective))
result = trainer.fit(source, hooks=[Progress(), Callbacks([lambda step, stats: print(step, round(stats["loss"], 4))])])
print(f"{result.steps} steps, last loss {result.history[-1]['loss']:.4f}")
