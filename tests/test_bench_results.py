"""The benchmarks rewrite only their own section of RESULTS.md."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from results import update_section  # noqa: E402


def test_a_section_is_replaced_in_place_and_a_new_one_appended(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n\n<!-- a -->\n## A\n\nold a\n<!-- /a -->\n\n<!-- b -->\n## B\n\nb\n<!-- /b -->\n")
    update_section("a", "A (script)", "| x |\n|---|\n| 1 |", path)
    update_section("c", "C", "new c", path)
    text = path.read_text()
    assert "old a" not in text and "| 1 |" in text
    assert text.index("<!-- a -->") < text.index("<!-- b -->") < text.index("<!-- c -->")
    assert text.count("<!-- a -->") == 1 and "intro" in text and "\nb\n" in text
    assert "CPU cores" in text[text.index("## A (script)"):text.index("<!-- /a -->")]
