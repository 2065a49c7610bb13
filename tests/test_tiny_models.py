import mlx.core as mx
import pytest
from mlx_lm import load

from tiny_models import ARCHITECTURES


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tiny_model_loads_in_mlx_lm_and_runs(tiny_model, arch):
    model, tok = load(str(tiny_model(arch)))
    assert model.model_type == ARCHITECTURES[arch][1]["model_type"]
    ids = tok.encode("SELECT count(*) FROM books")
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(tok.vocab))
    assert bool(mx.all(mx.isfinite(logits)))
    assert bool(tok.chat_template) == (ARCHITECTURES[arch][0] != "codegen")  # Phi-2 has no chat template
    assert tok.decode(ids).endswith("SELECT count(*) FROM books")
    hidden = model.args.hidden_size
    assert hidden <= 64 and len(model.layers) == 2
