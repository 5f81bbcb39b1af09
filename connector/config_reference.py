"""The connector.yml reference tables of the docs, generated from the key definitions (config_keys.py).

docs/configuration.md holds them between the BEGIN/END markers; a test keeps them equal to what this module
makes. After changing a key: `python -m connector.config_reference` (from a clone of the repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import config_keys as keys
from .config_keys import Key

BEGIN = "<!-- BEGIN generated from connector/config_keys.py: python -m connector.config_reference -->"
END = "<!-- END generated -->"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def reference() -> str:
    """Markdown: one table per section of connector.yml."""
    parts = [
        _table("Top level", "", keys.TOP),
        _table("`warehouse:`", "warehouse.", keys.WAREHOUSE),
        _table("`state:`", "state.", keys.STATE),
        _table("`tiktok:`", "tiktok.", keys.TIKTOK),
        _table("`syncs:` (one entry per event sync)", "syncs.NAME.", keys.SYNC),
        _table("`audiences:` (one entry per Custom Audience)", "audiences.NAME.", keys.AUDIENCE),
        _table("`targets:` (one entry per environment)", "targets.NAME.", keys.TARGET),
        "Set at the top level, these sync keys are the default of every sync: "
        + ", ".join(f"`{name}`" for name in keys.DEFAULTABLE)
        + "; of them, every audience takes " + ", ".join(f"`{name}`" for name in keys.AUDIENCE_DEFAULTABLE) + ".",
    ]
    return "\n\n".join(parts) + "\n"


def _table(title: str, prefix: str, definitions: dict[str, Key]) -> str:
    rows = [f"#### {title}", "", "| key | takes | default | meaning |", "|---|---|---|---|"]
    for name, key in definitions.items():
        rows.append(f"| `{prefix}{name}` | {_takes(key)} | {_default(key)} | {_escape(key.help)} |")
    return "\n".join(rows)


def _takes(key: Key) -> str:
    bounds = f" {_number(key.minimum)}–{_number(key.maximum)}" if key.minimum is not None and key.maximum is not None \
        else ""
    return {
        "int": f"whole number{bounds}", "float": f"number{bounds}", "bool": "`true` / `false`",
        "duration": f"duration (`2h`, `30m`, `1d`, or seconds; at most {keys.MAX_LOOKBACK_DAYS}d)",
        "enum": " / ".join(f"`{choice}`" for choice in key.choices), "secret": "text (a secret: never printed)",
        "url": "URL", "id": "id (text; a number is read as its digits)", "region": "region code (`US`)",
        "schema": "schema name", "vars": "mapping", "tags": "list of labels",
        "identifiers": "mapping", "section": "section",
    }.get(key.kind, "text")


def _default(key: Key) -> str:
    if key.required:
        return "required"
    if key.default in (None, (), {}):
        return {"vars": "`{}`", "tags": "`[]`"}.get(key.kind, "none")
    if isinstance(key.default, bool):
        return f"`{str(key.default).lower()}`"
    return f"`{_number(key.default)}`"


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def page_with_reference(page: str) -> str:
    """`page` with the text between the markers replaced by the current reference."""
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    return page[:start] + "\n\n" + reference() + "\n" + page[end:]


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    updated = page_with_reference(text)
    if updated != text:
        PAGE.write_text(updated, encoding="utf-8")
        print(f"updated {PAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
