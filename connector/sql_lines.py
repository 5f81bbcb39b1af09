"""A warehouse error about a line of the SQL sent, told as the line of the query file the user wrote.

The connector wraps the rendered template in SQL of its own (the read window, the selected columns), so the
warehouse's line numbers are the wrapped query's. The rendered template sits verbatim inside it; its lines
are matched back to the template's with a line diff: exact for a plain template (`{{ }}` values change a
line's text, not the number of lines), a best guess where `{% %}` blocks, comments or includes add or
remove lines, and the message says which.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

# DuckDB, and PostgreSQL through psycopg2: "LINE 4: where nosuchcol > 1" and a caret line under it.
_LINE = re.compile(r"^LINE (?P<n>\d+): ", re.M)
_SENT_LINE = re.compile(r"\(line (?P<n>\d+) of the SQL sent\)")  # the connector's own note for PostgreSQL
_SNOWFLAKE_LINE = re.compile(r"\berror line (?P<n>\d+) at position\b")
_BLOCK = re.compile(r"\{%|\{#")


@dataclass(frozen=True)
class TemplateLine:
    line: int  # 1-based, in the template file
    exact: bool  # False: blocks, comments or includes moved lines; the line is the nearest the diff found


def template_file(queries_dir: Path, name: str, dialect: str) -> Path:
    """The file `query.render` reads: `queries/<dialect>/<name>` when it exists, else `queries/<name>`."""
    override = queries_dir / dialect / name
    return override if override.is_file() else queries_dir / name


def template_line(source: str, rendered: str, rendered_line: int) -> TemplateLine | None:
    """The line of `source` that line `rendered_line` (1-based) of `rendered` came from; None when out of range.

    Blank lines are left out of the diff: rendering strips the query's leading and trailing ones, and a block
    tag alone on its line leaves one behind."""
    out_all, src_all = rendered.splitlines(), source.splitlines()
    index = rendered_line - 1
    if not 0 <= index < len(out_all) or not out_all[index].strip():
        return None
    out_at = [i for i, line in enumerate(out_all) if line.strip()]
    src_at = [j for j, line in enumerate(src_all) if line.strip()]
    out, src = [out_all[i].strip() for i in out_at], [src_all[j].strip() for j in src_at]
    if not src:
        return None
    index = out_at.index(index)
    matcher = difflib.SequenceMatcher(a=out, b=src, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if not i1 <= index < i2:
            continue
        if tag == "equal":
            return TemplateLine(src_at[j1 + index - i1] + 1, True)
        if tag == "replace" and i2 - i1 == j2 - j1:
            return TemplateLine(src_at[j1 + index - i1] + 1, not any(_BLOCK.search(line) for line in src[j1:j2]))
        if tag == "replace":  # blocks added or removed lines here: the most similar line of the template's
            line = max(range(j1, j2), key=lambda j: (difflib.SequenceMatcher(a=out[index], b=src[j]).ratio(), -j))
            return TemplateLine(src_at[line] + 1, False)
        # Lines the template does not have as such (an include, a macro, a multi-line value): the nearest.
        return TemplateLine(src_at[min(j1, len(src) - 1)] + 1, False)
    return None


def located(text: str, sql: str | None, rendered: str | None, file: str, source: str | None) -> str:
    """`text` (a warehouse error) prefixed with the query file, and the line it names renumbered as the
    file's, when it names a line of the rendered template inside `sql` (the SQL sent)."""
    found = _first_line_number(text)
    if found is None or sql is None or rendered is None or source is None:
        return f"{file}: {text}"
    start = sql.find(rendered)
    if start < 0:
        return f"{file}: {text}"
    sent_line = found[1]
    line = template_line(source, rendered, sent_line - sql[:start].count("\n"))
    if line is None:
        return (f"{file}: {text} (line {sent_line} is in the SQL the connector wraps around the query: "
                "`tiktok-connector preview NAME` shows it)")
    where = f"{file} line {line.line}" + ("" if line.exact else
                                          " (about: the template's blocks or includes move lines)")
    return f"{where}: {_renumbered(text, found, line.line)}"


def _first_line_number(text: str) -> tuple[re.Match[str], int] | None:
    for pattern in (_LINE, _SENT_LINE, _SNOWFLAKE_LINE):
        match = pattern.search(text)
        if match:
            return match, int(match.group("n"))
    return None


def _renumbered(text: str, found: tuple[re.Match[str], int], line: int) -> str:
    match, _ = found
    if match.re is _SENT_LINE:
        return text[:match.start()].rstrip() + text[match.end():]  # the prefix names the file's line
    if match.re is _SNOWFLAKE_LINE:
        return text[:match.start()] + f"error line {line} of the query file at position" + text[match.end():]
    prefix = f"LINE {line}: "
    shift = len(prefix) - (match.end() - match.start())
    before, rest = text[:match.start()], text[match.end():]
    shown, newline, after = rest.partition("\n")
    if newline and after.lstrip(" ").startswith("^"):  # the caret line under the SQL: keep it under
        after = " " * shift + after if shift >= 0 else after[min(-shift, len(after) - len(after.lstrip(" "))):]
    return before + prefix + shown + newline + after
