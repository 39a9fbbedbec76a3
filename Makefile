# The two commands of the README: `make demo` and `make test`. Each creates or reuses .venv/ in the checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# shap's dependency `slicer` (PyPI) and slicer-core share site-packages/slicer/: slicer-core's __init__ must win.
	$(BIN)/python -m pip install -q --force-reinstall --no-deps slicer-core
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/dpet-response demo --out demo_output

test: $(STAMP)
	$(BIN)/ruff check DPETResponseLib DPETResponse Testing benchmarks
	$(BIN)/python -m pytest Testing -q -p no:cacheprovider
