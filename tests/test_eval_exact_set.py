"""Spider's exact set match, component by component, on a schema with a foreign key."""

import pytest

from mlx_sql.data.schema import Column, ForeignKey, Schema, Table
from mlx_sql.eval.exact_set import exact_set_match

SCHEMA = Schema("music", [
    Table("singer", [Column("singer_id", "INT", True), Column("name"), Column("age"), Column("country")]),
    Table("concert", [Column("concert_id", "INT", True), Column("year"), Column("stadium")]),
    Table("singer_in_concert", [Column("singer_id"), Column("concert_id")]),
], [ForeignKey("singer_in_concert", "singer_id", "singer", "singer_id"),
    ForeignKey("singer_in_concert", "concert_id", "concert", "concert_id")])


@pytest.mark.parametrize("gold, pred", [
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),                           # select is a set
    ("SELECT name FROM singer WHERE age > 30", "SELECT name FROM singer WHERE age > 99"),         # values ignored
    ('SELECT name FROM singer WHERE country = "France"', "SELECT name FROM singer WHERE country = 'Italy'"),
    ("SELECT T1.name FROM singer AS T1", "SELECT singer.name FROM singer"),                       # aliases
    ("SELECT name FROM singer WHERE age > 1 AND country = 'a'", "SELECT name FROM singer WHERE country = 'b' AND age > 2"),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT singer.name FROM singer JOIN singer_in_concert ON singer_in_concert.singer_id = singer.singer_id"),
    ("SELECT count(*) FROM singer_in_concert GROUP BY singer_id",
     "SELECT count(*) FROM singer_in_concert GROUP BY singer_in_concert.singer_id"),
    ("SELECT singer_id FROM singer_in_concert", "SELECT singer_id FROM singer_in_concert"),
    ("SELECT T1.singer_id FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT T2.singer_id FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id"),  # FK ≡ PK
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 3", "SELECT name FROM singer ORDER BY age DESC LIMIT 1"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
     "SELECT T1.name FROM singer AS T1 WHERE T1.age > (SELECT avg(T2.age) FROM singer AS T2)"),
    # DISTINCT is ignored, as the official script's DISABLE_DISTINCT does
    ("SELECT DISTINCT name FROM singer", "SELECT name FROM singer"),
    ("SELECT count(DISTINCT country) FROM singer", "SELECT count(country) FROM singer"),
    ("SELECT name FROM singer WHERE country = 'a' INTERSECT SELECT name FROM singer WHERE age > 3",
     "SELECT name FROM singer WHERE country = 'x' INTERSECT SELECT name FROM singer WHERE age > 9"),
])
def test_equivalent_under_set_match(gold, pred):
    assert exact_set_match(gold, pred, SCHEMA)


@pytest.mark.parametrize("gold, pred, component", [
    ("SELECT name FROM singer", "SELECT name, age FROM singer", "select"),
    ("SELECT count(*) FROM singer", "SELECT max(age) FROM singer", "select aggregate"),
    ("SELECT name FROM singer WHERE age > 3", "SELECT name FROM singer WHERE age < 3", "where operator"),
    ("SELECT name FROM singer WHERE age > 3", "SELECT name FROM singer WHERE age > 3 OR country = 'a'", "where"),
    ("SELECT name FROM singer WHERE age > 3 AND country = 'a'", "SELECT name FROM singer WHERE age > 3 OR country = 'a'",
     "and/or"),
    ("SELECT name FROM singer WHERE country NOT IN (SELECT stadium FROM concert)",
     "SELECT name FROM singer WHERE country IN (SELECT stadium FROM concert)", "not"),
    ("SELECT country FROM singer GROUP BY country", "SELECT country FROM singer", "group by"),
    ("SELECT country FROM singer GROUP BY country HAVING count(*) > 2", "SELECT country FROM singer GROUP BY country",
     "having"),
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age DESC", "order direction"),
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY name", "order column"),
    ("SELECT name FROM singer ORDER BY age LIMIT 1", "SELECT name FROM singer ORDER BY age", "limit"),
    ("SELECT name FROM singer UNION SELECT stadium FROM concert",
     "SELECT name FROM singer INTERSECT SELECT stadium FROM concert", "set operation"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
     "SELECT name FROM singer WHERE age > (SELECT max(age) FROM singer)", "nested query"),
    ("SELECT name FROM singer", "SELECT name FROM singer JOIN concert ON 1 = 1", "tables"),
    ("SELECT name FROM singer", "SELECT T2.name FROM singer AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "self-join: tables are a multiset"),
    ("SELECT name FROM singer WHERE age > 3", "SELECT name FROM singer WHERE age > 3 AND age > 5", "where multiset"),
])
def test_differences_in_a_component_break_the_match(gold, pred, component):
    assert not exact_set_match(gold, pred, SCHEMA), component


def test_unparseable_never_matches():
    assert not exact_set_match("SELECT name FROM singer", "SELEC name FRM singer", SCHEMA)
