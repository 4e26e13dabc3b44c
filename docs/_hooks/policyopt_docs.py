"""MkDocs hooks for policyopt's site (mkdocs.yml: ``hooks``). Nothing here touches the network.

- ``<!-- policyopt-help: job submit -->`` on a line of its own becomes the ``--help`` text of
  that command, taken from the CLI itself at build time, so the CLI page cannot go stale; a
  command of the CLI that the page does not show is a build warning (a failure under --strict).
- A Markdown link to a file of the repository outside docs/ (``[x](../examples/jobs/)``: these
  pages are read on the forge too, where such links work) must point at a file or folder that
  exists, else it is a build warning; on the site it becomes its text, with the path when the
  text does not already say it.
- Sphinx roles in docstrings (``:class:`X```, ``:mod:`~a.b```) render as plain code.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.policyopt")

HELP_MARKER = re.compile(r"^<!-- policyopt-help: ([a-z][a-z0-9 -]*?) -->$", re.MULTILINE)
CLI_PAGE = "cli.md"
HELP_WIDTH = 100

# [text](target) not preceded by "!" (images) and with a relative target.
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref):"
    r"<code>(?P<short>~?)(?P<name>[^<]*)</code>"
)


def _cli_commands() -> dict[str, Any]:
    """Every command of the ``policyopt`` CLI by its full name ("optimize", "job submit")."""
    import typer.main

    from policyopt.cli import app

    root = typer.main.get_command(app)
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", None)  # a group (typer may vendor click)
        if subcommands is not None:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found[path] = command

    walk(root, "")
    return found


def _help_text(name: str, command: Any) -> str:
    ctx = command.context_class(
        command,
        info_name=f"policyopt {name}",
        terminal_width=HELP_WIDTH,
        max_content_width=HELP_WIDTH,
    )
    return command.get_help(ctx).rstrip()


def _expand_help(markdown: str, src_uri: str) -> str:
    if src_uri != CLI_PAGE and not HELP_MARKER.search(markdown):
        return markdown
    commands = _cli_commands()
    shown: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        command = commands.get(name)
        if command is None:
            log.warning("%s: no CLI command 'policyopt %s' (marker %r)", src_uri, name, match[0])
            return match[0]
        shown.add(name)
        return f"```text\n$ policyopt {name} --help\n{_help_text(name, command)}\n```"

    markdown = HELP_MARKER.sub(replace, markdown)
    if src_uri == CLI_PAGE:
        for name in sorted(set(commands) - shown):
            log.warning(
                "%s does not show 'policyopt %s': add <!-- policyopt-help: %s -->",
                CLI_PAGE,
                name,
                name,
            )
    return markdown


def _repo_links(markdown: str, page_path: Path, docs_dir: Path, src_uri: str) -> str:
    docs = Path(os.path.abspath(docs_dir))
    repo = docs.parent

    def replace(match: re.Match[str]) -> str:
        text, target = match.group("text"), match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):  # URL, anchor or absolute
            return match[0]
        # normpath, not resolve: a symlinked checkout stays itself
        linked = Path(os.path.normpath(page_path.parent / target.split("#", 1)[0]))
        if linked.is_relative_to(docs):
            return match[0]  # MkDocs checks links inside docs/ itself
        if not linked.is_relative_to(repo) or not linked.exists():
            log.warning("%s links to '%s', which is not a file of the repository", src_uri, target)
            return match[0]
        rel = linked.relative_to(repo).as_posix() + ("/" if linked.is_dir() else "")
        return text if rel.rstrip("/") in text else f"{text} (`{rel}`)"

    # Leave fenced code blocks alone.
    parts = re.split(r"(^```.*?^```)", markdown, flags=re.MULTILINE | re.DOTALL)
    return "".join(p if i % 2 else LINK.sub(replace, p) for i, p in enumerate(parts))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src_uri = page.file.src_uri
    docs_dir = Path(config["docs_dir"])
    markdown = _expand_help(markdown, src_uri)
    return _repo_links(markdown, Path(os.path.abspath(docs_dir / src_uri)), docs_dir, src_uri)


def _plain_role(match: re.Match[str]) -> str:
    name = match.group("name")
    return f"<code>{name.rsplit('.', 1)[-1] if match.group('short') else name}</code>"


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(_plain_role, html)
