# The two commands of the README: `make demo` and `make test`. Both build the
# virtual environment in .venv first (idempotent: re-runs only when setup.cfg changes).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser demo test test-fast test-avx2 coreml-parity docs docs-serve clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,export,web,docs]'
	touch $@

# The web app's browser runtimes (LiteRT.js, ONNX Runtime Web), exactly as package-lock.json pins them.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $@

# The browser the web tests drive: Debian's Chromium, installed when missing (needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(BIN)/mdistill demo

# One worker per core, a test file per worker (module fixtures are built once): 2 cores halve the wall time.
test: setup browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The edit-test loop: every test but those marked slow (6 s or more, or needing a module fixture
# that long): 293 tests in about 1.3 min on 2 cores. `make test` stays the whole suite.
test-fast: setup browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

# The test files whose assertions depend on what training learned or on the parity gate's verdict,
# again on the AVX2 kernels: an Intel machine then takes the code paths of an AMD one without
# AVX-512, so a threshold that holds on one CPU's rounding only fails here (CI runs both: .ci/run).
CPU_SENSITIVE := tests/test_train.py tests/test_export.py tests/test_qat.py tests/test_quantization.py \
	tests/test_bench.py tests/test_distill_train.py tests/test_distributed.py tests/test_architectures.py \
	tests/test_android.py tests/test_sampler_config.py tests/test_timm_students.py tests/test_asymmetric.py \
	tests/test_web.py tests/test_selection.py tests/test_executorch.py
test-avx2: setup browser
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q -n auto --dist loadfile $(CPU_SENSITIVE)

# The macOS workflow's job (.github/workflows/coreml-macos.yml): the demo trains and exports the
# default student; both it and the demo's teacher are exported to CoreML and gated. On macOS the
# gate runs Core ML itself and cross-checks the reference interpreter; elsewhere the interpreter.
coreml-parity: setup
	$(BIN)/mdistill demo --quiet
	$(BIN)/mdistill export runs/student/last.pt --format coreml --out runs/coreml-parity/student --quiet
	$(BIN)/mdistill export runs/teacher/last.pt --format coreml --out runs/coreml-parity/teacher --quiet
	$(BIN)/python -m pytest -q tests/test_coreml_reference.py tests/test_export.py -k "coreml or verify"

# The documentation site (docs/, mkdocs.yml), built strictly: a broken link or anchor fails.
docs: setup
	$(BIN)/mkdocs build --strict

docs-serve: setup
	$(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) build *.egg-info node_modules site
