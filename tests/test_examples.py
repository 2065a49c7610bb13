from types import SimpleNamespace

from mlx_lm.utils import load_tokenizer

from mlx_sql.data.benchmark import Question
from mlx_sql.data.examples import (PLAIN_TEMPLATE, QUESTION_HEADER, chat_messages, make_record, render_prompt,
                                   render_prompt_completion)

Q = Question("shop", "How many items?", "SELECT count(*) FROM item", index=3)
SCHEMA = "### Schema ###\nCREATE TABLE item (\n  id INTEGER PRIMARY KEY\n);"


def test_record_layout_schema_then_question():
    record = make_record(Q, SCHEMA, "Write SQL.")
    assert set(record) == {"instruction", "input", "output", "db_id", "question"}
    assert record["input"] == f"{SCHEMA}\n\n{QUESTION_HEADER}\nHow many items?"
    assert record["output"] == "SELECT count(*) FROM item"
    bird = make_record(Question("shop", "Cheap?", "SELECT 1", evidence="cheap = price < 3"), SCHEMA, "x")
    assert bird["input"].index("### Evidence ###") < bird["input"].index(QUESTION_HEADER)


def test_chat_messages_use_one_user_turn():
    msgs = chat_messages(make_record(Q, SCHEMA, "Write SQL."))
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"].startswith("Write SQL.\n\n### Schema ###")


def test_prompt_and_completion_split_through_the_chat_template(tiny_model):
    for arch, end in (("llama", "<|im_end|>"), ("gemma3_text", "<end_of_turn>"), ("phi3", "<|end|>")):
        tok = load_tokenizer(tiny_model(arch))
        record = make_record(Q, SCHEMA, "Write SQL.")
        prompt, completion = render_prompt_completion(tok, record)
        full = tok.apply_chat_template(chat_messages(record), tokenize=False)
        assert prompt + completion == full
        assert completion.startswith("SELECT count(*) FROM item" + end), (arch, completion)
        assert prompt == render_prompt(tok, record)


def test_plain_template_without_chat_template():
    tok = SimpleNamespace(chat_template=None, eos_token="</s>")
    record = make_record(Q, SCHEMA, "Write SQL.")
    prompt, completion = render_prompt_completion(tok, record)
    assert prompt == PLAIN_TEMPLATE.format(instruction="Write SQL.", input=record["input"])
    assert prompt.endswith("### Response:\n") and completion == "SELECT count(*) FROM item</s>"
