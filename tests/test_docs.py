"""The docs match the code: the README is short and maps every page of docs/; every link between pages leads
somewhere; and every path, `danlu` command, config key and protocol method a page names exists. A page's sections
headed "Your ..." are about the user's own project (its conf/, its jobs/): their paths are not this repository's."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT
from tests.docs_text import blocks, headed

PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
FILE_SUFFIXES = (".json", ".html", ".png", ".yaml", ".py", ".txt", ".log", ".db", ".md", ".pkl", ".csv")


def _ours(page: str) -> str:
    """The page's text without the sections about the user's own project (and their subsections)."""
    out, skip = [], 0  # skip: the level of the "Your ..." heading being skipped, 0 when none
    for head, body in headed(page):
        level = len(head) - len(head.lstrip("#"))
        if skip and level and level <= skip:
            skip = 0
        if "Your " in head and not skip:
            skip = level
        if not skip:
            out.append(body)
    return "".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_the_readme_is_short_and_maps_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)[#)]", readme))
    assert linked == set(PAGES[1:]), "README's map of the docs names every page of docs/, and only those"
    assert "scripts/demo" in readme and "scripts/test" in readme


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_is_closed(page):
    fences = [line for line in (ROOT / page).read_text().splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0, f"{page}: a code block is never closed"


@pytest.mark.parametrize("page", PAGES)
def test_every_link_leads_to_a_page_and_a_heading_that_exist(page):
    where = (ROOT / page).parent
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (ROOT / page).read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        dest = (where / path) if path else ROOT / page
        if not dest.exists():
            broken.append(target)
        elif anchor and anchor not in {_slug(h) for h, _ in headed(str(dest.relative_to(ROOT))) if h}:
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES)
def test_every_path_a_page_names_exists(page):
    named = set(re.findall(r"`((?:orchestrator|conf|jobs|scripts|tests|docs)/[\w./*<>-]+)", _ours(page)))
    missing = [n for n in sorted(named) if not any(c in n for c in "*<") and not (ROOT / n.rstrip("/")).exists()
               and not (ROOT / (n.rsplit(".", 1)[0] + ".py")).exists()]  # module.function names a module
    assert missing == []


def _subcommands() -> set[str]:
    from orchestrator.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("page", PAGES)
def test_every_danlu_command_a_page_names_exists(page):
    text = _ours(page)
    code = "\n".join(blocks(text, "bash") + blocks(text, ""))
    # a command line (not danlu's output, "danlu plan: sweep ..."), or inline code that starts with one
    named = set(re.findall(r"^\s*(?:\$ )?danlu ([a-z]+)\b(?!:)", code, re.M)) | set(re.findall(r"`danlu ([a-z]+)\b", text))
    assert sorted(named - _subcommands()) == []


def _yaml_keys() -> set[str]:
    """Every dotted key that danlu's and this repository's config files define: a group's file under its group
    (job/model/mlp.yaml: job.model.*), a `# @package _global_` file at the root."""
    keys: set[str] = set()

    def walk(node, prefix):
        if OmegaConf.is_dict(node):
            for k in node.keys():
                if k == "defaults":
                    continue
                path = f"{prefix}{k}"
                keys.add(path)
                walk(node._get_node(k), path + ".")

    for base in (ROOT / "orchestrator" / "conf", ROOT / "conf"):
        for f in base.rglob("*.yaml"):
            rel = f.relative_to(base)
            text = f.read_text()
            group = ".".join(rel.parts[:-1])
            prefix = "" if "@package _global_" in text or not group else group + "."
            walk(OmegaConf.create(text), prefix)
    return keys


ROOTS = ("sweep", "failure", "checkpoint", "progress", "storage", "preflight", "submit", "scheduler", "search",
         "resources", "cluster", "tracking", "report", "job")


@pytest.mark.parametrize("page", PAGES)
def test_every_config_key_a_page_names_exists(page):
    from hydra_plugins.danlu_sweeper.danlu_sweeper import DanluSweeperConf

    text = _ours(page)
    pattern = rf"`(?:\+\+)?((?:{'|'.join(ROOTS)})\.[A-Za-z_][\w.]*?)(?=[=`: \[])"
    named = {k for k in re.findall(pattern, text) if not k.endswith(FILE_SUFFIXES)}
    keys = _yaml_keys()
    missing = sorted(k for k in named if k not in keys)
    sweeper = {f.name for f in __import__("dataclasses").fields(DanluSweeperConf)}
    missing += sorted(k for k in re.findall(r"`hydra\.sweeper\.(\w+)", text) if k not in sweeper)
    assert missing == []


def _protocols() -> dict[str, type]:
    found = {}
    for pkg in ("orchestrator.search", "orchestrator.scheduler", "orchestrator.report", "orchestrator.tracking"):
        module = importlib.import_module(pkg)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == pkg and not name.startswith("_"):
                found[name] = obj
    return found


def test_every_protocol_method_the_extending_page_names_exists_with_its_parameters():
    """In docs/extending.md, a `Name.method(params)` (or, in a protocol's table row, `method(params)`) is a method
    of that class with those parameters, in that order."""
    protocols = _protocols()
    text = (ROOT / "docs" / "extending.md").read_text()
    named = []
    for line in text.splitlines():
        owners = [n for n in re.findall(r"`(\w+)`", line) if n in protocols]
        for owner, meth, params in re.findall(r"`(?:(\w+)\.)?(\w+)\(([^)`]*)\)", line):
            owner = owner or (owners[0] if line.startswith("|") and owners else "")
            if owner in protocols:
                named.append((owner, meth, [p.split(":")[0].split("=")[0].strip() for p in params.split(",")
                                            if p.strip() and p.strip() != "..."]))
    assert len(named) >= 8, named
    wrong = []
    for owner, meth, params in named:
        fn = getattr(protocols[owner], meth, None)
        if fn is None:
            wrong.append(f"{owner}.{meth}: missing")
            continue
        actual = [p for p in inspect.signature(fn).parameters if p != "self"]
        if params and params != actual[:len(params)]:
            wrong.append(f"{owner}.{meth}({', '.join(params)}): is ({', '.join(actual)})")
    assert wrong == []


@pytest.mark.parametrize("page", PAGES)
def test_a_code_block_that_names_a_file_of_this_repository_is_in_it_word_for_word(page):
    """A worked example quotes the code it explains: a block whose first line is `# orchestrator/...` (or conf/,
    jobs/, scripts/) appears, below that line, in that file as it is."""
    quoted = [b for lang in ("python", "yaml") for b in blocks(_ours(page), lang)
              if re.match(r"# (?:orchestrator|conf|jobs|scripts)/\S+\n", b)]
    stale = [b.split("\n", 1)[0] for b in quoted
             if b.split("\n", 1)[1] not in (ROOT / b.split("\n", 1)[0][2:].strip()).read_text()]
    assert stale == []
    if page == "docs/extending.md":
        assert len(quoted) >= 3


def test_every_path_of_this_repository_the_code_names_exists():
    """Comments and docstrings name files of danlu (orchestrator/tracking/journal.py): a file that moved is named
    where it is now."""
    named: dict[str, str] = {}
    for folder in ("orchestrator", "scripts", "tests", "jobs"):
        for f in (ROOT / folder).rglob("*"):
            if f.suffix in (".py", ".yaml", "") and f.is_file() and "__pycache__" not in f.parts:
                for p in re.findall(r"\b((?:orchestrator|scripts|tests)/[\w/.-]+\.(?:py|yaml))\b", f.read_text(errors="replace")):
                    named.setdefault(p, str(f.relative_to(ROOT)))
    assert len(named) > 20
    assert {p: where for p, where in named.items() if "<" not in p and not (ROOT / p).exists()} == {}
