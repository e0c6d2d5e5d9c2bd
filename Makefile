# Every command the README shows. `make help` lists them.
# `make demo` and `make test` set themselves up: scripts/bootstrap.py creates .venv with the locked CPU set on the
# first call (a few minutes) and returns at once while constraints.txt and pyproject.toml are unchanged.
# PY=<python> uses (and installs into) another environment, e.g. a conda env.
PYTHON3 ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
SETUP = $(PYTHON3) scripts/bootstrap.py --python $(PY)
EXPERIMENTS_IN_ORDER := main_qwen main_falcon lora_rank_matched state_offset scaling alpha_sweep_qwen \
	alpha_sweep_falcon layer_ablation data_efficiency passk prefix_control transfer_math500 transfer_gsm8k \
	transfer_code_to_math spider_boundary mechanism expressiveness

RESULTS ?= results/runs
OUT ?= paper_figures
TABLES := table1 table2 table3 table5 table6 table7 table8 table9 table10 table_app_d table_app_e_qwen \
	table_app_e_falcon table_app_h table_transfer table_prefix table_sec6 table_expressiveness
FIGURES := fig1 fig2 fig3 fig4 fig_expressiveness

.PHONY: help setup install install-cpu test-latest lint format test test-slow test-gpu demo plan reproduce-all tables figures \
	report paper-fixtures mechanism $(TABLES) $(FIGURES)

help:  ## list every target, one per line (this list)
	@grep -E '^[a-z][a-z0-9_-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  \1\t\2/' | expand -t 22

# The exact versions CI tests; installs take them as pip constraints.
LOCK := constraints.txt
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
LATEST_VENV := .venv-latest
# `make test-latest LATEST_TORCH=torch==2.13.0` keeps the locked torch and updates the rest.
LATEST_TORCH ?= torch
# pyproject.toml's dependencies (with dev) by name only: test-latest takes their newest releases, past the ranges.
LATEST_DEPS = $(shell $(PYTHON3) -c "import re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print(*(re.match(r'[A-Za-z0-9_.-]+', d).group() for d in p['dependencies'] + p['optional-dependencies']['dev']))")

setup:  ## create .venv if absent and install the locked CPU set once (demo and test do this themselves)
	@$(SETUP)

install-cpu:  ## CPU-only install of the locked versions (torch's CPU build), with the dev tools, even if current
	$(SETUP) --cpu --force

install:  ## GPU install: the locked versions but torch's CUDA build from PyPI, flash-linear-attention, dev tools
	$(SETUP) --gpu

# torch.txt keeps the torch build just installed: an eager upgrade of the rest would swap it for PyPI's CUDA build.
test-latest:  ## the CPU test suite on the newest releases of every dependency (no lock), in .venv-latest
	$(PYTHON3) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade '$(LATEST_TORCH)' --extra-index-url $(TORCH_CPU_INDEX)
	$(LATEST_VENV)/bin/python -m pip freeze | grep '^torch==' > $(LATEST_VENV)/torch.txt
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST_VENV)/torch.txt \
		$(filter-out torch,$(LATEST_DEPS))
	$(LATEST_VENV)/bin/python -m pip install -q --no-deps -e .
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|peft|accelerate)=='
	$(LATEST_VENV)/bin/python -m pytest

lint: setup  ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup  ## apply ruff's formatting and safe fixes
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint  ## lint, then the CPU test suite
	$(PY) -m pytest

test-slow: setup  ## the longer end-to-end tests (pytest -m slow): every experiment in smoke mode, the killed sweep, the demo
	$(PY) -m pytest -m slow

test-gpu:  ## GPU tests, on a CUDA machine (after make install)
	$(PY) -m pytest -m gpu

demo: setup  ## the whole pipeline on tiny models, offline, CPU, a few minutes
	$(PY) scripts/demo.py

plan: setup  ## every experiment's plan (summary, runs, GPU time: s0/run/cost.py), then make reproduce-all's GPU time
	@$(PY) scripts/plan_all.py $(EXPERIMENTS_IN_ORDER)

reproduce-all:  ## every experiment of the paper, in dependency order (GPU, days)
	@for e in $(EXPERIMENTS_IN_ORDER); do $(PY) run.py -m experiment=$$e || exit 1; done
	$(MAKE) report

tables: setup  ## every table (Markdown, LaTeX, CSV) into paper_figures/
	$(PY) scripts/make_tables.py --results $(RESULTS) --out $(OUT)

figures: setup  ## every figure (PDF, PNG) into paper_figures/
	$(PY) scripts/make_figures.py --results $(RESULTS) --out $(OUT)

report: setup  ## report.md/.html: every table and figure, a verdict per claim, the runs behind each number
	$(PY) scripts/make_report.py --results $(RESULTS) --out $(OUT)

paper-fixtures: setup  ## the same from the paper's own values, into paper_figures/paper_fixtures/
	$(PY) scripts/make_report.py --paper-fixtures

mechanism: setup  ## Sec 6 analyses for finished mechanism runs (run.py experiment=mechanism does this itself)
	$(PY) scripts/mechanism.py --results $(RESULTS)

# What S0 learns in each conf/model entry, built on the meta device (no weights): NAMES="qwen3_5_4b mamba_2_8b" for some.
.PHONY: state-counts
state-counts: setup  ## S0 size per model: recurrence kind, layers, state shape and entries per layer, total (seconds)
	@$(PY) scripts/state_counts.py $(NAMES)

# Bundled already: GSM8K, MATH-500, Spider dev (s0/tasks/data). This adds Spider's train split and, from the
# Spider release's zip, its databases. Needs `pip install -e '.[data]'` and the hub.
DATA_DIR ?= data
SPIDER_ZIP ?=
.PHONY: data
data: setup  ## full GSM8K, MATH-500, Spider from the HF hub into DATA_DIR (default data/; SPIDER_ZIP=<zip>: + databases)
	@$(PY) scripts/fetch_data.py --out $(DATA_DIR) $(if $(SPIDER_ZIP),--spider-zip $(SPIDER_ZIP))

# One artifact each, from RESULTS into OUT (tables: .md, .tex, .csv; figures: .pdf, .png).
$(TABLES): setup
	$(PY) scripts/make_tables.py --results $(RESULTS) --out $(OUT) --only $@

$(FIGURES): setup
	$(PY) scripts/make_figures.py --results $(RESULTS) --out $(OUT) --only $@

table1:  ## Table 1: HumanEval pass@1, baseline / S0 / LoRA, Qwen3.5-4B and FalconH1-7B
table2:  ## Table 2: parameter-matched LoRA (r24, r48, r64) vs S0
table3:  ## Table 3: S0 vs per-step state-offset, paired
table5:  ## Table 5: S0 on early, middle, late or all GDN layers
table6:  ## Table 6: per-seed LoRA r24 results (Qwen3.5-4B)
table7:  ## Table 7: per-seed FalconH1-7B results
table8:  ## Table 8: per-seed LoRA r48 and r64
table9:  ## Table 9: sampled pass@1/5/10
table10:  ## Table 10: per-seed pass@k
table_app_d:  ## App D: data efficiency (10, 25, 50 solutions)
table_app_e_qwen:  ## App E: Qwen3.5-4B alpha sweep
table_app_e_falcon:  ## App E: FalconH1-7B alpha sweep
table_app_h:  ## App H: scaling across Qwen3.5 sizes
table_transfer:  ## Sec 5.6: transfer to MATH-500, GSM8K, Spider
table_prefix:  ## Sec 5.8: prefix tuning on the pure Transformer Qwen2.5-3B
table_sec6:  ## Sec 6: mechanism numbers (KL ratio, divergence, probe AUCs)
table_expressiveness:  ## issue 15: S0 vs rank-matched LoRA by recurrence kind (Sec 8 hypothesis; no paper values)
fig1:  ## Figure 1: cross-architecture comparison (a), first-character divergence (b)
fig2:  ## Figure 2: the model's layer graph with S0 in each recurrent layer
fig3:  ## Figure 3: scaling (a) and FalconH1 alpha sweep (b)
fig4:  ## Figure 4: first-divergence positions (a) and their cumulative distribution (b)
fig_expressiveness:  ## issue 15: S0 - LoRA gap vs state entries per layer, matrix vs diagonal
