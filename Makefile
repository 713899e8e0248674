# The two commands: `make run` (Deep RFM on the bundled digits, with figures)
# and `make test` (the test suite). Both create the environment first.
PYTHON ?= python3
VENV ?= .venv
OUT ?= runs/digits

.PHONY: run test env clean-env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $@

run: env
	$(VENV)/bin/python bin/deep_rfm --out $(OUT) --overwrite

test: env
	$(VENV)/bin/python -m pytest -q --durations=15 $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
