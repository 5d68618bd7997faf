"""Sphinx extension: the references page labels each work as the chapters cite it, "[Goodfellow et al., 2014]".

The chapters cite with plain links that read the same in Colab and Jupyter ("[Makhzani et al., 2015](references)");
sphinxcontrib-bibtex's default style labels the list with abbreviations ("[MSJ+15]"), so a reader could not match
the two. This registers a pybtex style, `author_year` (set as bibtex_default_style in _config.yml): the plain
style's entries, sorted by author, year and title, labelled "Surname", "Surname and Surname" or "Surname et al.",
then the year.
"""

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def surname(person) -> str:
    """A person's last name as a reader sees it: LaTeX accents made letters ("Sch{\\"o}lkopf" -> "Schölkopf")."""
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


def cited_as(persons) -> str:
    if len(persons) == 1:
        return surname(persons[0])
    if len(persons) == 2:
        return f"{surname(persons[0])} and {surname(persons[1])}"
    return f"{surname(persons[0])} et al."


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            persons = entry.persons.get("author") or entry.persons.get("editor") or []
            names = cited_as(persons) if persons else entry.key
            yield f"{names}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
