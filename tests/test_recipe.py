from pathlib import Path

import pytest

from mlx_sql.errors import MlxSqlError
from mlx_sql.recipe import dump_recipe, load_recipe, parse_override

from conftest import MINISPIDER, ROOT

GOOD = f"""
[model]
path = "org/some-model"
[data]
path = "{MINISPIDER}"
"""


def error_of(write_recipe, text, overrides=()):
    path = write_recipe(text)
    with pytest.raises(MlxSqlError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    text = recipe.read_text()
    if "../shared/spider" in text and not (ROOT.parent / "shared" / "spider").is_dir():
        pytest.skip("recipe points at ../shared/spider, absent here")
    cfg = load_recipe(recipe)
    assert cfg.name == recipe.stem
    assert cfg.train.lr > 0


def test_seed_hyperparameters_are_kept():
    if not (ROOT.parent / "shared" / "spider").is_dir():
        pytest.skip("these recipes point at ../shared/spider, absent here")
    t = load_recipe(ROOT / "recipes" / "gemma-2b-it.toml").train
    assert (t.rank, t.alpha, t.dropout, t.lr, t.batch_size, t.epochs, t.grad_accumulation, t.max_seq_length) == \
        (8, 16.0, 0.1, 2e-4, 1, 3, 8, 1024)
    t = load_recipe(ROOT / "recipes" / "gemma3-1b-it.toml").train
    assert (t.rank, t.alpha, t.lr, t.batch_size, t.epochs, t.grad_accumulation) == (4, 8.0, 1e-4, 2, 2, 4)
    assert load_recipe(ROOT / "recipes" / "phi3-mini-qlora.toml").model.quantize == 4


def test_defaults_and_derived_paths(write_recipe):
    cfg = load_recipe(write_recipe(GOOD, "my-run.toml"))
    assert cfg.name == "my-run"
    assert cfg.adapter_dir == Path("adapters/my-run")
    assert cfg.data_dir == Path("data/my-run")
    assert cfg.train.method == "lora" and cfg.model.quantize is None


def test_unknown_key_suggests_the_right_one(write_recipe):
    msg = error_of(write_recipe, GOOD + "[train]\nlearning_rat = 1e-4\nrnk = 4\n")
    assert "train.learning_rat: unknown key" in msg
    msg = error_of(write_recipe, GOOD + "[train]\nrnk = 4\n")
    assert "did you mean 'rank'?" in msg


def test_unknown_section(write_recipe):
    assert "did you mean 'train'?" in error_of(write_recipe, GOOD + "[trian]\nrank = 4\n")


def test_wrong_type(write_recipe):
    msg = error_of(write_recipe, GOOD + '[train]\nrank = "eight"\n')
    assert "train.rank: expected an integer, got str 'eight'" in msg
    assert "expected true or false" in error_of(write_recipe, GOOD + "[train]\ngrad_checkpoint = 1\n")
    assert "expected a list of str" in error_of(write_recipe, GOOD + '[train]\ntarget_modules = "q_proj"\n')


def test_out_of_range_and_choices(write_recipe):
    assert "train.lr: 5.0 is above the maximum 1.0" in error_of(write_recipe, GOOD + "[train]\nlr = 5.0\n")
    assert "train.rank: 0 is below the minimum 1" in error_of(write_recipe, GOOD + "[train]\nrank = 0\n")
    assert "'qlora' is not one of" in error_of(write_recipe, GOOD + '[train]\nmethod = "qlora"\n')
    assert "model.quantize: 3 is not one of 4, 8 or 'none'" in error_of(
        write_recipe, GOOD.replace('"org/some-model"', '"org/some-model"\nquantize = 3'))
    assert "unknown projection 'q_prj'" in error_of(write_recipe, GOOD + '[train]\ntarget_modules = ["q_prj"]\n')


def test_quantize_none_is_accepted(write_recipe):
    cfg = load_recipe(write_recipe(GOOD.replace('"org/some-model"', '"org/some-model"\nquantize = "none"')))
    assert cfg.model.quantize is None


def test_missing_required(write_recipe):
    assert "[data]: missing required section" in error_of(write_recipe, '[model]\npath = "x/y"\n')
    msg = error_of(write_recipe, f'[model]\ndtype = "float32"\n[data]\npath = "{MINISPIDER}"\n')
    assert "needs exactly one of path, gguf, ollama, gguf_package, gguf_parts (found: none)" in msg


def test_nonexistent_paths(write_recipe):
    assert "data.path: path 'no/such/dir' does not exist" in error_of(
        write_recipe, GOOD.replace(str(MINISPIDER), "no/such/dir"))
    assert "model.path: local folder './missing-model' does not exist" in error_of(
        write_recipe, GOOD.replace("org/some-model", "./missing-model"))


def test_relative_paths_resolve_beside_the_recipe(tmp_path):
    (tmp_path / "bench").symlink_to(MINISPIDER)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\npath = "a/b"\n[data]\npath = "bench"\n')
    assert Path(load_recipe(recipe).data.path) == tmp_path / "bench"


def test_invalid_toml(write_recipe):
    assert "invalid TOML" in error_of(write_recipe, "[model\npath = 1")


def test_overrides(write_recipe):
    cfg = load_recipe(write_recipe(GOOD), ["train.lr=3e-4", "train.method=dora", "data.sample_rows=3",
                                           "train.target_modules=['q_proj', 'v_proj']"])
    assert cfg.train.lr == 3e-4 and cfg.train.method == "dora" and cfg.data.sample_rows == 3
    assert cfg.train.target_modules == ["q_proj", "v_proj"]
    assert parse_override("eval.backend=ollama") == ("eval", "backend", "ollama")
    with pytest.raises(MlxSqlError, match="expected section.key=value"):
        parse_override("lr=1")
    assert "train.lr: 7.0 is above" in error_of(write_recipe, GOOD, ["train.lr=7"])
    with pytest.raises(MlxSqlError, match="unknown section 'trainn'"):
        load_recipe(write_recipe(GOOD), ["trainn.lr=1"])


def test_dump_round_trips(write_recipe, tmp_path):
    cfg = load_recipe(write_recipe(GOOD + '[train]\nrank = 16\n'), ["eval.timeout=3", 'data.instruction="Say \\"SQL\\""'])
    dumped = tmp_path / "resolved.toml"
    dumped.write_text(dump_recipe(cfg))
    again = load_recipe(dumped)
    assert again.to_dict() == cfg.to_dict()
