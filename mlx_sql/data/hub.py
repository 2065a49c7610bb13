"""Questions from the Hugging Face hub (or a local `datasets` folder) through `datasets`.

Hub copies of Spider carry only the questions (db_id, question, query); schemas
and databases still come from a Spider-layout folder.
"""

from __future__ import annotations

from pathlib import Path

from mlx_sql.data.benchmark import Question
from mlx_sql.errors import MlxSqlError


def load_hf_questions(dataset: str, split: str) -> list[Question]:
    """Load a split by hub id, local data folder, or a folder written by `save_to_disk`."""
    import datasets

    local = Path(dataset)
    try:
        if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            ds = datasets.load_from_disk(str(local))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(dataset, split=split)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise MlxSqlError(f"cannot load split '{split}': {exc}", dataset) from None
    columns = set(ds.column_names)
    query_key = "query" if "query" in columns else "SQL" if "SQL" in columns else None
    if query_key is None or not {"db_id", "question"} <= columns:
        raise MlxSqlError(f"expected columns db_id, question and query (or SQL); found {sorted(columns)}", dataset)
    return [Question(row["db_id"], row["question"].strip(), row[query_key].strip(),
                     (row.get("evidence") or "").strip(), i) for i, row in enumerate(ds)]
