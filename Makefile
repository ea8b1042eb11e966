# Two commands on a fresh machine: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to the CPU wheel these machines carry; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Use the shared data folder beside the checkout when the caller did not name one.
export GATELAB_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,video]'
	# gatelab.defense's attacks; --no-deps because its declared torchvision (unused by its code) breaks beside this torch.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/gatelab reproduce --all --quick

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
