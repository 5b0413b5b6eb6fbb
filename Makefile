# `make demo` and `make test` work on a fresh machine: each creates .venv and installs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
WORKERS ?= 2

.PHONY: install demo demo-data test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[beam,test]'
	@# PyTorch only writes a real torchvision state dict in one test. Only a CPU build that
	@# is already at hand is taken (registries host no '+cpu' versions), never the CUDA one.
	$(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu' 2>/dev/null \
	  || echo "no CPU build of PyTorch at hand: the torch reference test will be skipped"
	touch $(STAMP)

# The web page is tested in Debian's headless Chromium. Installed when missing and apt-get can
# (as root); otherwise the browser test says how to install it.
BROWSER_STAMP := $(VENV)/.browser-stamp
$(BROWSER_STAMP):
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	       apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "chromium not installed: apt-get install chromium chromium-driver"
	@mkdir -p $(VENV) && touch $(BROWSER_STAMP)

install: $(STAMP)

# The demo records with every view in its canonical layout (configs/demo.py trains on them).
demo-data: $(STAMP)
	$(BIN)/python -m preprocessing.build --dataset oscar_demo --config canonical \
	  --data_dir $(DATA_DIR) --workers $(WORKERS)

# Pretrains the CNN beside the frequency stream, trains the demo model from those codes into
# runs/demo (configs/demo.py), then runs the paper's Benchmark I
# and II on the demo test split (train split as distractors) for the model and every classical
# baseline, and prints the table (full report with Table 6: runs/demo/report.md) and the
# model's figures beside their spread over 3 seeds (docs/demo_seeds.json). Then builds
# the trusted database of the demo originals and attributes three images: a benign copy, a
# manipulated version and an unrelated scene. Running it again resumes or reuses.
demo: demo-data
	$(BIN)/oscar train --config configs/demo.py:pretrain \
	  --workdir runs/demo_pretrain --config.data_dir=$(DATA_DIR)
	$(BIN)/oscar train --config configs/demo.py --workdir runs/demo \
	  --config.data_dir=$(DATA_DIR) --config.init_from=runs/demo_pretrain \
	  --config.report_at_end=False
	$(BIN)/oscar evaluate --workdir runs/demo --distractors train \
	  --reference docs/demo_seeds.json
	$(BIN)/oscar attribute demo --workdir runs/demo
	$(BIN)/oscar attribute query --db runs/demo/trusted.sqlite --format text \
	  --explain runs/demo/attribution/queries/benign_copy.jpg \
	  runs/demo/attribution/queries/manipulated.png runs/demo/attribution/queries/unrelated.png

lint: $(STAMP)
	$(BIN)/ruff check .

# worksteal: a worker that runs out of tests takes half of the other's queue, so a run of
# slow training tests handed to one worker late in the suite does not hold the end.
test: $(STAMP) $(BROWSER_STAMP) lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal -q --durations=20

format: $(STAMP)
	$(BIN)/ruff format .

# Records per second of a from-scratch demo build, three runs (see BENCHMARKS.md).
bench: $(STAMP)
	for run in 1 2 3; do \
	  rm -rf /tmp/oscar-bench; \
	  $(BIN)/python -m preprocessing.build --dataset oscar_demo --data_dir /tmp/oscar-bench \
	    --workers $(WORKERS) 2>/dev/null | grep records/s; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
