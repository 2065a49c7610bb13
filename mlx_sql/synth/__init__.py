"""Question/SQL pairs for a database, with no human pairs as input (`mlx-sql synth`).

SQL comes from structure templates instantiated on the database (its foreign keys, its columns' kinds, its
stored values) and from a model prompted with the schema; every query runs read-only in the sandbox and only
new, non-empty results are kept. A model then writes the question back from the SQL, and a round trip checks
that the question means the SQL. Modules: `profile` (what the database holds), `templates` and `model_sql`
(where SQL comes from), `filters` (what is kept), `questions` (SQL to question, and the check), `pipeline`
(resumable run, report).
"""
