# Two commands on a fresh clone: `make demo` (the main job on the embedded default) and
# `make test` (ruff check, ruff format --check, then the test suite). Both create .venv and
# install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU wheel of torch is enough for both; override on a GPU machine, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,diffusion,render,metrics,viewer,ray,matting,export
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test lint install sysdeps clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@bash scripts/sysdeps.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps "lpips>=0.1.4"
	touch $@

demo: install
	$(VENV)/bin/gen4d demo --out $(DEMO_OUT)

# Lint and format checks first (the same as .pre-commit-config.yaml), then the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
