"""Training/eval examples: the record format and how a model sees it.

A record is `{"instruction", "input", "output", "db_id", "question"}`; `input`
is the schema, then the question, always in that order, so that every question
of one database shares the same prompt prefix (the trainer and the evaluator
compute that prefix once).
"""

from __future__ import annotations

from typing import Any

from mlx_sql.data.benchmark import Question

QUESTION_HEADER = "### Question ###"
EVIDENCE_HEADER = "### Evidence ###"
VALUES_HEADER = "### Values ###"  # the database's values the question names (data.question_values)
SQL_HEADER = "### SQL ###"  # a query a model is asked to write the question for (mlx-sql synth)
SEGMENT_HEADERS = (VALUES_HEADER, QUESTION_HEADER, SQL_HEADER)  # a database's shared prompt prefix ends at the first
RECORD_KEYS = ("instruction", "input", "output")

# For tokenizers without a chat template (base models): an Alpaca-style layout.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def render_input(schema_text: str, question: str, evidence: str = "", values: str = "") -> str:
    """Schema, evidence, the values block (it starts with VALUES_HEADER), then the question."""
    parts = [schema_text]
    if evidence:
        parts.append(f"{EVIDENCE_HEADER}\n{evidence}")
    if values:
        parts.append(values)
    parts.append(f"{QUESTION_HEADER}\n{question}")
    return "\n\n".join(parts)


def segment_start(text: str) -> int:
    """Where the per-question part of a prompt begins: its values block, else its question."""
    found = [i for i in (text.find(h) for h in SEGMENT_HEADERS) if i >= 0]
    return min(found) if found else len(text)


def make_record(q: Question, schema_text: str, instruction: str, values: str = "") -> dict[str, Any]:
    return {
        "instruction": instruction,
        "input": render_input(schema_text, q.question, q.evidence, values),
        "output": q.query,
        "db_id": q.db_id,
        "question": q.question,
    }


def user_message(record: dict[str, Any]) -> str:
    return f"{record['instruction']}\n\n{record['input']}"


def chat_messages(record: dict[str, Any], with_answer: bool = True) -> list[dict[str, str]]:
    """One user turn (Gemma's templates reject a system role) and, for training, the answer."""
    messages = [{"role": "user", "content": user_message(record)}]
    if with_answer:
        messages.append({"role": "assistant", "content": record["output"]})
    return messages


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, record: dict[str, Any]) -> str:
    """The text a model is given to answer the record, ending where the SQL should begin."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(chat_messages(record, with_answer=False), tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(instruction=record["instruction"], input=record["input"])


def render_prompt_completion(tokenizer: Any, record: dict[str, Any]) -> tuple[str, str]:
    """Split the full training text into the prompt (no loss) and the completion (SQL + end of turn).

    The completion is what the chat template appends after the generation prompt,
    so it carries the template's own end-of-turn marker.
    """
    prompt = render_prompt(tokenizer, record)
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template(chat_messages(record), tokenize=False)
        if full.startswith(prompt):
            return prompt, full[len(prompt):]
        # Some templates render the last assistant turn differently from the generation prompt.
        return prompt, record["output"] + (tokenizer.eos_token or "")
    return prompt, record["output"] + (getattr(tokenizer, "eos_token", None) or "")
