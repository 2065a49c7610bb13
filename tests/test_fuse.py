"""Fusing an adapter into its base gives the same model as base + adapter."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import load
from mlx_lm.tuner.utils import load_adapters

from mlx_sql.errors import MlxSqlError
from mlx_sql.export.fuse import fuse_adapter
from mlx_sql.models.loading import load_model
from mlx_sql.train.trainer import train



@pytest.fixture
def trained(tiny_recipe):
    def make(arch, *overrides):
        recipe = tiny_recipe(arch, "train.iters=3", "train.lr=1e-2", "data.max_examples=12",
                             'train.target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]',
                             *overrides)
        train(recipe)
        return recipe
    return make


def logits_with_adapter(recipe, ids):
    model, _, _ = load_model(recipe.model)
    load_adapters(model, str(recipe.adapter_dir))
    model.eval()
    return np.array(model(ids))


@pytest.mark.parametrize("arch, method", [("llama", "lora"), ("gemma3_text", "dora"), ("phi3", "lora"),
                                          ("phi", "lora")])
def test_fused_logits_equal_base_plus_adapter(trained, tmp_path, arch, method):
    recipe = trained(arch, f"train.method={method}")
    result = fuse_adapter(recipe.adapter_dir, tmp_path / "fused")
    assert result.fused_layers > 0 and not result.quantized
    fused, tok = load(str(result.out_dir))
    ids = mx.array([tok.encode("SELECT name FROM singer WHERE age > 3")])
    np.testing.assert_allclose(np.array(fused(ids).astype(mx.float32)), logits_with_adapter(recipe, ids),
                               rtol=1e-4, atol=1e-4)
    assert not any("lora" in k for k in mx.load(str(result.out_dir / "model.safetensors")))


def test_fuse_into_a_quantized_base(trained, tmp_path):
    recipe = trained("llama", "model.quantize=4")
    ids_text = "SELECT count(*) FROM books"
    dequantized = fuse_adapter(recipe.adapter_dir, tmp_path / "deq", dequantize=True)
    model, tok = load(str(dequantized.out_dir))
    ids = mx.array([tok.encode(ids_text)])
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    np.testing.assert_allclose(np.array(model(ids)), logits_with_adapter(recipe, ids), rtol=1e-4, atol=1e-4)
    requantized = fuse_adapter(recipe.adapter_dir, tmp_path / "q4")
    assert requantized.quantized
    model4, _ = load(str(requantized.out_dir))
    assert sum(isinstance(m, nn.QuantizedLinear) for _, m in model4.named_modules()) == 2 * 7
    reference = logits_with_adapter(recipe, ids)
    assert np.mean(np.argmax(np.array(model4(ids)), -1) == np.argmax(reference, -1)) >= 0.8


def test_fuse_needs_an_adapter_folder(tmp_path):
    with pytest.raises(MlxSqlError, match="not a trained adapter folder"):
        fuse_adapter(tmp_path)
