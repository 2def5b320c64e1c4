"""The trainer as a reusable part: P3's unified loop in a few lines (docs/methods.md §4).

Offline, one round over a dataset; a round of on-policy samples would hand a ``BufferSource`` of
labelled ``TokenizedGroup``s to the same ``trainer.fit``. Runs on the tiny model in seconds:

    .venv/bin/python examples/trainer_api.py
"""

from accelerate import Accelerator

from preftune.data import Batcher, bundled_path, load_preference_data, tokenize_examples
from preftune.modeling import AdapterDisabledReference, apply_lora, load_model, load_tokenizer
from preftune.objectives import build
from preftune.training.config import OptimConfig
from preftune.training.hooks import Callbacks, Progress
from preftune.training.loop import Trainer, make_plan, responses_read
from preftune.training.sources import DatasetSource

tokenizer, model = load_tokenizer("tiny-random"), apply_lora(load_model("tiny-random"), rank=8)
pairs, _ = tokenize_examples(load_preference_data(bundled_path("hh-harmless"))[0][:64], tokenizer, 256)
objective, optim = build("dpo + 0.5*exmate"), OptimConfig(lr=5e-4, batch_size=8, mixed_precision="no")
plan = make_plan(pairs, optim, processes=1, group_by_length=False)
trainer = Trainer(accelerator=Accelerator(cpu=True), model=model, objective=objective, optim=optim, total_steps=8,
                  reference=AdapterDisabledReference(model))  # fmt: skip
source = DatasetSource(pairs, Batcher(tokenizer.pad_token_id), plan, 8, group_size=responses_read(objective))
result = trainer.fit(source, hooks=[Progress(), Callbacks([lambda step, stats: print(step, round(stats["loss"], 4))])])
print(f"{result.steps} steps, last loss {result.history[-1]['loss']:.4f}")
