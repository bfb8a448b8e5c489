# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The app needs only the runtime dependencies; tests add torch/transformers (parity references),
# pytest-qt and PyInstaller.
APP_STAMP := $(VENV)/.installed-app
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench screenshots clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(APP_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $(APP_STAMP)

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP) $(APP_STAMP)

run: $(APP_STAMP)
	$(VENV)/bin/qwen-desk

test: $(TEST_STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# The benchmark compares against mlx-lm and writes test-style checkpoints: the test extra.
bench: $(TEST_STAMP)
	$(PY) bench/run.py

screenshots: $(TEST_STAMP)
	$(PY) packaging/screenshots.py

clean:
	rm -rf $(VENV) build dist
