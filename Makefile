# autovi: `make install`, `make test`, `make run` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/autovi-plugin-*)
# examples/autovi-plugin-pixel-gaussian = `autovi new-plugin pixel_gaussian` (tests/test_scaffold.py)
EXAMPLES := $(wildcard examples/autovi-plugin-*)
STAMP := $(VENV)/.installed
# The torch build pip finds on this machine kind's disk (override for another CUDA or CPU build).
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Re-install only when a project file changed.
INSTALL_INPUTS := pyproject.toml $(wildcard plugins/*/pyproject.toml) $(wildcard examples/*/pyproject.toml)

.PHONY: install test run bench clean browser

install: $(STAMP) browser

# Headless Chromium from Debian's packages, for the HTML report's browser test (tests/test_report_browser.py);
# where apt cannot install it (not root, no apt), that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 && \
	  { echo "installing Debian's chromium (the report's browser test)"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium could not be installed here; the HTML report's browser test will be skipped"

# The CUDA build of torch alone is about 5.5 GB in the venv: stop with a clear message, not pip's OSError half-way.
MIN_FREE_GB ?= 8

$(STAMP): $(INSTALL_INPUTS)
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); test -x $(BIN)/python -o "$$free" -ge $(MIN_FREE_GB) || \
	  { echo "make install: $$free GB free here; a new .venv needs about $(MIN_FREE_GB) GB (torch's CUDA build). Free some space or set MIN_FREE_GB."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[test,ray,report,onnx]"
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip uninstall -q -y autovi-example-detector 2>/dev/null || true  # the example plugin before 1.0 (tests/example_plugin)
	$(BIN)/python -m pip install -q --no-build-isolation $(foreach p,$(EXAMPLES) $(PLUGINS),-e $(p))
	touch $(STAMP)

# One pytest-xdist worker per core; --dist loadscope keeps a test class (and its fitted fixture) on one worker.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	AUTOVI_NO_PROGRESS=1 $(BIN)/python -m pytest -q -n auto --dist loadscope --durations=15 tests plugins/*/tests examples/*/tests

RUN_DIR ?= runs/make-run-$(shell date +%Y%m%d-%H%M%S)
# make run EXECUTOR=ray: the experiments run concurrently
EXECUTOR ?= local

run: install
	$(BIN)/autovi run --all-plugins --save-maps --executor $(EXECUTOR) --output $(RUN_DIR)
	$(BIN)/autovi report $(RUN_DIR)
	$(BIN)/autovi report $(RUN_DIR) --format html

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-columns=min,mean,max,rounds

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
