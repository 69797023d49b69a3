"""Reading danlu's docs as the tests do: a page's section under a heading, its code blocks, a shell block's
commands. The README and docs/*.md are read the same way (tests/test_docs.py, tests/test_wheel.py)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def section(title: str, page: str = "README.md") -> str:
    """A page's text under a heading, up to the next heading of the same or a higher level (outside code blocks,
    where a `# comment` is no heading)."""
    lines = (ROOT / page).read_text().splitlines()
    level = len(title.split(" ", 1)[0])
    start = lines.index(title) + 1
    fenced = False
    for i in range(start, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", lines[i]):
            return "\n".join(lines[start:i]) + "\n"
    return "\n".join(lines[start:]) + "\n"


def headed(page: str) -> list[tuple[str, str]]:
    """A page cut at its headings (outside code blocks): (heading line, the text up to the next heading)."""
    parts: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in (ROOT / page).read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#+ ", line):
            parts.append((line, []))
        else:
            parts[-1][1].append(line)
    return [(h, "\n".join(body) + "\n") for h, body in parts]


def blocks(text: str, lang: str) -> list[str]:
    """The bodies of a text's fenced code blocks of a language."""
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    """A shell block's commands, one a line, without their trailing comments."""
    out = []
    for line in block.splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out
