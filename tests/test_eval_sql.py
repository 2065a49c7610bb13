import json

import pytest

from mlx_sql.eval.hardness import hardness, level
from mlx_sql.eval.normalize import canonical, fix_double_quoted_strings, has_order_by, remove_distinct

NAMES = ["singer", "concert", "singer_in_concert", "name", "country", "age", "singer_id", "concert_id", "year"]


def same(a, b, **kw):
    return canonical(a, NAMES, **kw) == canonical(b, NAMES, **kw) is not None


@pytest.mark.parametrize("a, b", [
    ("SELECT name FROM singer", "select NAME from Singer;"),                                  # case, semicolon
    ("SELECT name FROM singer", "SELECT  name\n  FROM   singer"),                               # whitespace
    ('SELECT "name" FROM singer', "SELECT name FROM singer"),                                  # quoting
    ("SELECT T1.name FROM singer AS T1", "SELECT singer.name FROM singer"),                    # table aliases
    ("SELECT name AS n FROM singer ORDER BY n", "SELECT name FROM singer ORDER BY name"),     # column aliases
    ("SELECT name FROM singer ORDER BY age ASC", "SELECT name FROM singer ORDER BY age"),     # explicit ASC
    ("SELECT name FROM singer WHERE age > 3 AND country = 'x'",
     "SELECT name FROM singer WHERE country = 'x' AND age > 3"),                              # AND order
    ("SELECT name FROM singer WHERE age > 3 OR age < 1", "SELECT name FROM singer WHERE age < 1 OR age > 3"),
    ("SELECT name FROM singer WHERE age IN (3, 1, 2)", "SELECT name FROM singer WHERE age IN (1, 2, 3)"),
    ('SELECT name FROM singer WHERE country = "France"', "SELECT name FROM singer WHERE country = 'France'"),
])
def test_normalisation_rules(a, b):
    assert same(a, b)


def test_different_queries_stay_different():
    assert not same("SELECT name FROM singer WHERE age > 3", "SELECT name FROM singer WHERE age >= 3")
    assert not same("SELECT name FROM singer ORDER BY age DESC", "SELECT name FROM singer ORDER BY age")
    assert not same("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'Spain'")
    assert same("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'Spain'",
                mask_values=True)


def test_unparseable_is_none():
    assert canonical("SELEC name FRM singer", NAMES) is None


def test_double_quotes_only_become_strings_when_they_name_nothing():
    assert fix_double_quoted_strings('SELECT "name" FROM singer WHERE country = "It\'s"', NAMES) == \
        "SELECT \"name\" FROM singer WHERE country = 'It''s'"
    assert fix_double_quoted_strings("SELECT 'say \"hi\"' FROM singer", NAMES) == "SELECT 'say \"hi\"' FROM singer"


def test_distinct_removal_and_order_detection():
    assert remove_distinct("SELECT DISTINCT name, count(DISTINCT age) FROM singer").split() == \
        ["SELECT", "name,", "count(", "age)", "FROM", "singer"]
    assert has_order_by("SELECT name FROM singer ORDER BY age")
    assert not has_order_by("SELECT name FROM singer WHERE age IN (SELECT age FROM singer ORDER BY age LIMIT 1)")


@pytest.mark.parametrize("sql, level", [
    ("SELECT count(*) FROM singer", "easy"),
    ("SELECT name FROM singer WHERE age > 20", "easy"),
    ("SELECT name, country, age FROM singer ORDER BY age DESC", "medium"),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id", "easy"),
    ("SELECT T2.name, T2.age FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id", "medium"),
    ("SELECT country, count(*) FROM singer GROUP BY country", "medium"),
    ("SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)", "hard"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
    ("SELECT T2.name, count(*) FROM concert AS T1 JOIN singer AS T2 ON T1.concert_id = T2.singer_id "
     "GROUP BY T2.name ORDER BY count(*) DESC LIMIT 1", "extra"),
    ("SELECT name FROM singer WHERE country = 'a' INTERSECT SELECT name FROM singer WHERE country = 'b'", "hard"),
    ("SELECT T2.name FROM concert AS T1 JOIN singer AS T2 ON T1.concert_id = T2.singer_id WHERE T1.year = 2014 "
     "INTERSECT SELECT name FROM singer", "extra"),
    ("SELECT name FROM singer WHERE age > 1 UNION SELECT name FROM singer", "hard"),
])
def test_hardness_of_known_queries(sql, level):
    assert hardness(sql) == level


# --- Spider's own hardness, from the parsed `sql` field of dev.json, as an oracle ------------------------

def _official_hardness(sql):
    def count_agg(units):
        return len([u for u in units if u[0] != 0])

    def nested(s):
        out = []
        for cond in s["from"]["conds"][::2] + s["where"][::2] + s["having"][::2]:
            out += [v for v in (cond[3], cond[4]) if isinstance(v, dict)]
        return out + [s[k] for k in ("intersect", "except", "union") if s[k] is not None]

    c1 = bool(s_where := sql["where"]) + bool(sql["groupBy"]) + bool(sql["orderBy"]) + (sql["limit"] is not None)
    c1 += max(0, len(sql["from"]["table_units"]) - 1)
    connectors = sql["from"]["conds"][1::2] + s_where[1::2] + sql["having"][1::2]
    c1 += connectors.count("or")
    c1 += len([c for c in sql["from"]["conds"][::2] + s_where[::2] + sql["having"][::2] if c[1] == 9])
    c2 = len(nested(sql))
    aggs = count_agg(sql["select"][1]) + count_agg(s_where[::2]) + count_agg(sql["groupBy"])
    if sql["orderBy"]:
        aggs += count_agg([u[1] for u in sql["orderBy"][1] if u[1]] + [u[2] for u in sql["orderBy"][1] if u[2]])
    aggs += count_agg(sql["having"])
    others = (aggs > 1) + (len(sql["select"][1]) > 1) + (len(s_where) > 1) + (len(sql["groupBy"]) > 1)
    return level(c1, c2, others)  # the thresholds are shared; the counts above come from Spider's own parse


@pytest.mark.spider
def test_hardness_agrees_with_spiders_own_on_dev(spider_dir):
    dev = json.loads((spider_dir / "dev.json").read_text())
    disagree = [q["query"] for q in dev if hardness(q["query"]) != _official_hardness(q["sql"])]
    print(f"{len(disagree)} of {len(dev)} differ: {disagree[:5]}")
    assert not disagree
