"""MkDocs hooks: the parts of the site generated from the code at build time.

The settings table is rendered from :data:`sb_otel._settings.SETTINGS` (declared once, so the page cannot drift
from what the code reads), and every command of the click app is loaded before mkdocs-click walks it: the
group loads its commands lazily, and mkdocs-click lists a group's already-loaded ``commands`` when there are any,
so a partly loaded group would give a partial reference.
"""

from __future__ import annotations

from typing import Any

SETTINGS_MARKER = "<!-- settings-table -->"
"""Where the settings page wants the generated table."""


def settings_table() -> str:
    """The settings as a Markdown table: variable, default, meaning, in declaration order."""
    from sb_otel._settings import SETTINGS

    rows = [f"| `{setting.env}` | {setting.default} | {setting.description} |" for setting in SETTINGS]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows])


def load_every_command() -> None:
    """Register each lazily loaded command on the ``sb-otel`` group, so its reference lists them all."""
    import click

    from sb_otel._cli.app import cli

    context = click.Context(cli, info_name="sb-otel")
    for name in cli.list_commands(context):
        cli.get_command(context, name)


def on_config(config: Any) -> Any:
    load_every_command()
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if SETTINGS_MARKER in markdown:
        return markdown.replace(SETTINGS_MARKER, settings_table())
    return markdown
