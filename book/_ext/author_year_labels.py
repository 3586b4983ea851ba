"""Bibliography labels in the book's in-text style: "Ho et al., 2020" instead of pybtex's alpha "[HJA20]".

The chapters cite author-year ({cite:p}`ho2020denoising` -> "(Ho et al., 2020)"), so the bibliography's
labels say the same. A Sphinx extension only to register, with pybtex, a label style and a formatting style
that uses it (sorted by author, then year); _config.yml selects it with `bibtex_default_style`.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting


def _surname(person) -> str:
    """A person's last name as it reads ("Bi{\\'n}kowski" -> "Bińkowski")."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    """'Ho et al., 2020', 'Ho and Salimans, 2022' (as the text cites them); the organisation or title for an
    entry without authors."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    if not people:
        who = entry.fields.get("organization") or entry.fields.get("title", "?").split(":")[0]
    elif len(people) == 1:
        who = _surname(people[0])
    elif len(people) == 2:
        who = f"{_surname(people[0])} and {_surname(people[1])}"
    else:
        who = f"{_surname(people[0])} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:  # two works of one first author and year: 2022a, 2022b
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = AuthorYearTitleSorting


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
