# The README's two commands: `make run` and `make test`. Each sets up what it
# needs (a virtualenv in .venv, the project, the default model) and is safe to
# repeat: finished steps are skipped.
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 50051
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= ACTIVE

VSCODE := editor-plugins/vscode

.PHONY: setup model run test tools plugins clean

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

# Debian's neovim for the Neovim plugin's end-to-end test (installed when we may; the test skips without it).
tools:
	@command -v nvim >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq neovim >/dev/null) ; } || echo "note: no nvim; the Neovim plugin test will skip"

# The VS Code extension: type-check, unit tests, and a .vsix package (needs npm).
plugins:
	@if command -v npm >/dev/null; then \
	  cd $(VSCODE) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent check && npm test && npm run --silent package; \
	else echo "note: no npm; the VS Code extension is not built or tested"; fi

test: model tools
	$(BIN)/python -m pytest -ra
	$(MAKE) plugins

clean:
	rm -rf $(VENV) *.egg-info $(VSCODE)/node_modules $(VSCODE)/dist $(VSCODE)/out
