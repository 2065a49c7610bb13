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
RECORD_KEYS = ("instruction", "input", "output")

# For tokenizers without a chat template (base models): an Alpaca-style layout.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def render_input(schema_text: str, question: str, evidence: str = "") -> str:
    parts = [schema_text]
    if evidence:
        parts.append(f"{EVIDENCE_HEADER}\n{evidence}")
    parts.append(f"{QUESTION_HEADER}\n{question}")
    return "\n\n".join(parts)


def make_record(q: Question, schema_text: str, instruction: str) -> dict[str, Any]:
    return {
        "instruction": instruction,
        "input": render_input(schema_text, q.question, q.evidence),
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
