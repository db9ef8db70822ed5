# The README's two commands: `make run` and `make test`. Each sets up what it
# needs (a virtualenv in .venv, the project, the default model) and is safe to
# repeat: finished steps are skipped.
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 50051
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= ACTIVE

.PHONY: setup model run test clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(BIN)/.installed

model: setup
	$(BIN)/livefim models install

run: model
	$(BIN)/livefim serve --port $(PORT)

test: model
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) *.egg-info
