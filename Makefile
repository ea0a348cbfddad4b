# Every target installs into .venv on first use: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install train test lint bench clean

install: $(INSTALLED)

# torch comes from PyPI with its CUDA libraries (it also runs on the CPU); torchvision's PyPI wheels need it
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster]"
	touch $(INSTALLED)

train: $(INSTALLED)  ## the embedded default: digits + CBAM, offline
	$(BIN)/attnbench train

test: $(INSTALLED)
	$(BIN)/python -m pytest

bench: $(INSTALLED)  ## step cost, trainer overhead, module parity, attention scaling, run efficiency (README: Performance)
	$(BIN)/attnbench bench

lint: $(INSTALLED)
	$(BIN)/ruff check attnbench tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
