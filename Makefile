# autovi: `make install`, `make test`, `make run` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/autovi-plugin-*)
STAMP := $(VENV)/.installed
# The torch build pip finds on this machine kind's disk (override for another CUDA or CPU build).
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Re-install only when a project file changed.
INSTALL_INPUTS := pyproject.toml tests/example_plugin/pyproject.toml $(wildcard plugins/*/pyproject.toml)

.PHONY: install test run bench clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q --no-build-isolation -e tests/example_plugin $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

test: install
	AUTOVI_NO_PROGRESS=1 $(BIN)/python -m pytest -q tests plugins/*/tests

RUN_DIR ?= runs/make-run-$(shell date +%Y%m%d-%H%M%S)
# make run EXECUTOR=ray: the experiments run concurrently
EXECUTOR ?= local

run: install
	$(BIN)/autovi run --all-plugins --executor $(EXECUTOR) --output $(RUN_DIR)
	$(BIN)/autovi report $(RUN_DIR)

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-columns=min,mean,max,rounds

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
