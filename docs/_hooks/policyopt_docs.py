"""MkDocs hooks for policyopt's site (mkdocs.yml: ``hooks``). Nothing here touches the network.

- ``<!-- readme: Chat prompts -->`` on a line of its own becomes the text of README.md's section
  of that title (up to its next heading of any level): the guides are the README split into
  pages, never a copy that drifts. Inside it, README's relative links are made relative to
  docs/, ``see "Faults" below`` becomes a link to the page that holds that section, and a
  ``docs/x.md`` code span a link to that page. ``<!-- readme-item: Ablations -->`` takes the
  README's top-level bullet that starts ``- **Ablations**``. A marker naming no section, and a
  README section that no page takes, are build warnings (failures under --strict).
- ``<!-- policyopt-help: job submit -->`` on a line of its own becomes the ``--help`` text of
  that command, taken from the CLI itself at build time, so the CLI page cannot go stale; a
  command of the CLI that the page does not show is a build warning.
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


# --- README sections -------------------------------------------------------------------------

README_MARKER = re.compile(r"^<!-- readme(?P<item>-item)?: (?P<title>.+?) -->$", re.MULTILINE)
HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*$")
SEE_SECTION = re.compile(r'\bsee(?P<space>\s+)"(?P<title>[^"`]{2,80})"(?:\s+(?:below|above)\b)?')


class _Readme:
    """README.md's sections by title, and which page of the site includes each."""

    def __init__(self) -> None:
        self.sections: dict[str, str] = {}
        self.items: dict[str, str] = {}
        self.where: dict[str, str] = {}  # section title -> "page.md#anchor"
        self.included: set[str] = set()

    def load(self, readme: Path, docs_dir: Path, pages: list[str]) -> None:
        self.sections, self.items, self.where, self.included = {}, {}, {}, set()  # per build
        title, body, fenced = "", [], False
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                fenced = not fenced
            heading = None if fenced else HEADING.match(line)
            if heading:
                if heading["title"] in self.sections or heading["title"] == title:
                    log.warning("README.md has two sections '%s'", heading["title"])
                self.sections[title] = "\n".join(body).strip("\n")
                title, body = heading["title"], []
            else:
                body.append(line)
        self.sections[title] = "\n".join(body).strip("\n")
        self.sections.pop("", None)
        for text in self.sections.values():
            for item in re.finditer(
                r"^- \*\*(?P<name>[^*]+)\*\*.*?(?=^- |^\S|\Z)", text, re.MULTILINE | re.DOTALL
            ):
                self.items[item["name"].rstrip(".:")] = item[0].rstrip("\n")
        for page in pages:  # where each section lives: the heading above its marker
            heading_above: tuple[int, str] | None = None
            for line in (docs_dir / page).read_text(encoding="utf-8").splitlines():
                if heading := HEADING.match(line):
                    heading_above = (len(heading["hashes"]), heading["title"])
                elif (marker := README_MARKER.match(line)) and not marker["item"]:
                    anchor = ""
                    if heading_above and heading_above[0] > 1:
                        anchor = "#" + _slug(heading_above[1])
                    self.where.setdefault(marker["title"], page + anchor)

    def expand(self, markdown: str, src_uri: str) -> str:
        def replace(match: re.Match[str]) -> str:
            title, item = match["title"], bool(match["item"])
            text = (self.items if item else self.sections).get(title)
            if text is None:
                kind = "top-level bullet '- **%s**'" if item else "section '%s'"
                log.warning("%s: README.md has no " + kind, src_uri, title)
                return match[0]
            if item:
                text = "\n".join(line.removeprefix("  ") for line in text.split("\n"))
                text = text.removeprefix("- ")
            else:
                self.included.add(title)
            return self._adapt(text, src_uri)

        return README_MARKER.sub(replace, markdown)

    def _adapt(self, text: str, src_uri: str) -> str:
        """README's links, made right for a page of docs/ (top level: one ../ up)."""
        up = "../" * (src_uri.count("/") + 1)
        here = src_uri.count("/") * "../"

        def link(match: re.Match[str]) -> str:
            target = match["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
                return match[0]
            new = here + target.removeprefix("docs/") if target.startswith("docs/") else up + target
            return f"[{match['text']}]({new})"

        def see(match: re.Match[str]) -> str:
            words = " ".join(match["title"].split())
            for title, where in self.where.items():
                if title == words or re.match(re.escape(words) + r"\W", title):
                    return f"see{match['space']}[{match['title']}]({here}{where})"
            return match[0]

        def doc_span(match: re.Match[str]) -> str:
            return f"[{match[0]}]({here}{match['name']})"

        def prose(part: str) -> str:
            part = LINK.sub(link, part)  # README's own links first, then the ones made here
            part = re.sub(r"(?<!\[)`docs/(?P<name>[\w.-]+\.(?:md|json))`(?!\])", doc_span, part)
            return SEE_SECTION.sub(see, part)

        parts = re.split(r"(^```.*?^```)", text, flags=re.MULTILINE | re.DOTALL)
        return "".join(p if i % 2 else prose(p) for i, p in enumerate(parts))

    def check_all_included(self) -> None:
        for title in self.sections:
            if title not in self.included:
                log.warning(
                    "README.md's section '%s' is on no page of the site: add "
                    "<!-- readme: %s --> to a page of docs/",
                    title,
                    title,
                )


def _slug(title: str) -> str:
    from markdown.extensions.toc import slugify

    return slugify(re.sub(r"[`*]", "", title), "-")


README = _Readme()


def on_files(files: Any, config: Any) -> Any:
    docs_dir = Path(config["docs_dir"])
    pages = sorted(f.src_uri for f in files.documentation_pages())
    README.load(docs_dir.parent / "README.md", docs_dir, pages)
    return files


def on_post_build(config: Any) -> None:
    README.check_all_included()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src_uri = page.file.src_uri
    docs_dir = Path(config["docs_dir"])
    markdown = README.expand(markdown, src_uri)
    markdown = _expand_help(markdown, src_uri)
    return _repo_links(markdown, Path(os.path.abspath(docs_dir / src_uri)), docs_dir, src_uri)


def _plain_role(match: re.Match[str]) -> str:
    name = match.group("name")
    return f"<code>{name.rsplit('.', 1)[-1] if match.group('short') else name}</code>"


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(_plain_role, html)
