"""Ollama Modelfile: the GGUF, a Go TEMPLATE that renders the prompt the model was trained on, stop tokens.

The template family is read off the model's own chat template (ChatML, Gemma turns, Phi-3,
Zephyr/TinyLlama), and models without one get mlx-sql's plain Instruction/Input/Response layout.
Where the model's template inserts a default system prompt (SmolLM2 does), that text becomes the
Modelfile's SYSTEM, so Ollama renders exactly what training saw.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_sql.data.examples import PLAIN_TEMPLATE
from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import write_text

TEMPLATES = {
    "chatml": ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n", ["<|im_end|>"]),
    "gemma": ("{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
              "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n", ["<end_of_turn>"]),
    "phi3": ("{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n", ["<|end|>"]),
    "zephyr": ("{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n", ["</s>"]),
    "plain": (PLAIN_TEMPLATE.replace("{instruction}", "{{ .System }}").replace("{input}", "{{ .Prompt }}"),
              ["### Instruction:"]),
}


def template_family(chat_template: str | None) -> str:
    t = chat_template or ""
    if "<|im_start|>" in t:
        return "chatml"
    if "<start_of_turn>" in t:
        return "gemma"
    if "<|assistant|>" in t and "<|end|>" in t:
        return "phi3"
    if "<|assistant|>" in t and "</s>" in t:
        return "zephyr"
    if t:
        raise MlxSqlError("the model's chat template is none of ChatML, Gemma, Phi-3 or Zephyr; "
                          "write its Ollama TEMPLATE by hand")
    return "plain"


def default_system(tokenizer: Any, family: str) -> str:
    """The system prompt the model's template adds on its own (SmolLM2's), or ''."""
    if family != "chatml":
        return ""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = "<|im_start|>system\n"
    return rendered[len(head):rendered.index("<|im_end|>")] if rendered.startswith(head) else ""


@dataclass
class ModelfileResult:
    path: Path
    family: str
    created: bool
    command: str


def modelfile_text(gguf: Path, family: str, system: str, num_ctx: int, instruction: str) -> str:
    template, stops = TEMPLATES[family]
    if family == "plain":
        system = instruction
    lines = [
        "# Made by mlx-sql. Send one user message: the schema as CREATE TABLE statements under '### Schema ###',",
        "# then '### Question ###' and the question, after the instruction the model was trained with:",
        f"#   {instruction}",
        f"FROM ./{gguf.name}",
        f'TEMPLATE """{template}"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {num_ctx}"]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: Path, tokenizer: Any, name: str, num_ctx: int, instruction: str,
                    create: bool = True) -> ModelfileResult:
    """Write <gguf folder>/Modelfile; run `ollama create` when ollama is on PATH."""
    from mlx_sql.models.gguf_import import gguf_architecture

    try:
        architecture = gguf_architecture(gguf)
    except MlxSqlError:  # unreadable here: Ollama itself will judge the file
        architecture = ""
    if architecture == "t5":
        raise MlxSqlError("Ollama cannot run encoder-decoder (T5) models: it loads them but fails on the first "
                          "prompt (ollama/ollama#10666). Use `mlx-sql ask`/`eval` (MLX, or --backend llamacpp "
                          "with this GGUF) or llama.cpp's `llama-cli -m` instead", gguf)
    family = template_family(getattr(tokenizer, "chat_template", None))
    path = gguf.parent / "Modelfile"
    write_text(path, modelfile_text(gguf, family, default_system(tokenizer, family), num_ctx, instruction))
    command = f"ollama create {name} -f {path}"
    exe = shutil.which("ollama")
    if create and exe:
        result = subprocess.run([exe, "create", name, "-f", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise MlxSqlError(f"ollama create failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}",
                              path)
        return ModelfileResult(path, family, True, command)
    return ModelfileResult(path, family, False, command)


@dataclass
class ModelfileSettings:
    name: str
    context_window: int
    instruction: str


def modelfile_settings(gguf: Path) -> ModelfileSettings:
    """Name, context window and instruction for a GGUF: from the recipe saved with the adapter it was fused
    from (`adapters/<run>/fused/model.gguf` → `adapters/<run>/recipe.toml`), else the defaults."""
    from mlx_sql.recipe import DataConfig, OllamaConfig, load_recipe

    fused = gguf.parent.name == "fused"
    recipe_file = gguf.parent.parent / "recipe.toml" if fused else gguf.parent / "recipe.toml"
    if recipe_file.is_file():
        recipe = load_recipe(recipe_file, check_data=False)
        return ModelfileSettings(recipe.export.ollama_name or recipe.name, recipe.ollama.context_window,
                                 recipe.data.instruction)
    name = gguf.parent.parent.name if fused else gguf.stem
    return ModelfileSettings(name, OllamaConfig().context_window, DataConfig().instruction)
