"""Markdown files with YAML front matter <-> articles, with every problem named.

Layout: ``<dir>/<article id>/<lang>.md``, one file per variant (other files, such as a README
beside the article folders, are not read). A file::

    ---
    id: withdrawal-times
    lang: en
    title: How long withdrawals take
    tags: [withdrawal, network]
    groups: [payments, general]
    auto: true
    ---
    The body, in Markdown.

A knowledge base with any error is refused whole (``KBError`` lists every error, one line each,
``path: reason``), so a caller keeps the version it had in force.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from kb.article import LANGS, Article, KnowledgeBase, Variant

__all__ = ["FIELDS", "KBError", "dump_variant", "export_dir", "load_dir", "parse_variant"]

FIELDS = ("id", "lang", "title", "tags", "groups", "auto")
ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TAG = re.compile(r"[^\s,\[\]]{1,40}")
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)


class KBError(ValueError):
    """A knowledge base that cannot be used, with every reason (``errors``: one line each)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def parse_variant(text: str, where: str, groups: Collection[str]) -> tuple[dict[str, Any], str]:
    """The checked front matter and the body of one file; ``KBError`` with every problem."""
    m = _FRONT.match(text.lstrip("\ufeff"))
    if m is None:
        raise KBError([f"{where}: no front matter (the file must start with a '---' line and close it with another)"])
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        raise KBError([f"{where}: front matter is not valid YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(meta, dict):
        raise KBError([f"{where}: front matter must be a mapping of {', '.join(FIELDS)}"])
    errors = [f"{where}: missing field {f!r}" for f in FIELDS if f not in meta]
    errors += [f"{where}: unknown field {f!r} (fields: {', '.join(FIELDS)})" for f in meta if f not in FIELDS]
    errors += [f"{where}: {e}" for e in _field_errors(meta, groups)]
    body = m.group(2).strip("\r\n")
    if not body.strip():
        errors.append(f"{where}: empty body")
    if errors:
        raise KBError(errors)
    return meta, body


def _field_errors(meta: Mapping[str, Any], groups: Collection[str]) -> list[str]:
    errors = []
    if "id" in meta and not (isinstance(meta["id"], str) and ID.fullmatch(meta["id"])):
        errors.append(f"id {meta['id']!r} must be lowercase letters, digits and '-' (at most 64)")
    if "lang" in meta and meta["lang"] not in LANGS:
        errors.append(f"lang {meta['lang']!r} is not one of {', '.join(LANGS)}")
    if "title" in meta and not (isinstance(meta["title"], str) and meta["title"].strip()):
        errors.append("title must be a non-empty text")
    if "tags" in meta:
        tags = meta["tags"]
        if not (isinstance(tags, list) and all(isinstance(t, str) and TAG.fullmatch(t) for t in tags)):
            errors.append(f"tags must be a list of words (no spaces or commas), not {tags!r}")
    if "groups" in meta:
        gs = meta["groups"]
        if not (isinstance(gs, list) and gs and all(isinstance(g, str) for g in gs)):
            errors.append(f"groups must be a non-empty list of group ids, not {gs!r}")
        else:
            unknown = [g for g in gs if g not in groups]
            if unknown:
                errors.append(f"unknown group(s) {', '.join(unknown)} (groups: {', '.join(sorted(groups))})")
    if "auto" in meta and not isinstance(meta["auto"], bool):
        errors.append(f"auto must be true or false, not {meta['auto']!r}")
    return errors


def load_dir(directory: Path, groups: Collection[str]) -> KnowledgeBase:
    """The knowledge base in ``directory``; ``KBError`` with every problem found (nothing partial).
    ``groups``: the group ids an article may serve (the rule set's groups)."""
    if not directory.is_dir():
        raise KBError([f"{directory}: not a directory"])
    errors: list[str] = []
    articles = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            articles.append(_load_article(folder, groups))
        except KBError as exc:
            errors += exc.errors
    if not articles and not errors:
        errors.append(f"{directory}: no articles (expected <id>/<lang>.md files)")
    if errors:
        raise KBError(errors)
    return KnowledgeBase(articles)


def _load_article(folder: Path, groups: Collection[str]) -> Article:
    errors: list[str] = []
    variants: dict[str, Variant] = {}
    shared: tuple[Any, ...] | None = None
    files = sorted(folder.glob("*.md"))
    if not files:
        raise KBError([f"{folder}: no <lang>.md files"])
    for path in files:
        where = str(path)
        try:
            meta, body = parse_variant(path.read_text(encoding="utf-8"), where, groups)
        except KBError as exc:
            errors += exc.errors
            continue
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{where}: cannot be read ({exc})")
            continue
        if meta["id"] != folder.name:
            errors.append(f"{where}: id {meta['id']!r} differs from its folder's name {folder.name!r}")
        if meta["lang"] != path.stem:
            errors.append(f"{where}: lang {meta['lang']!r} differs from the file's name {path.name!r}")
        these = (tuple(meta["tags"]), tuple(meta["groups"]), meta["auto"])
        if shared is None:
            shared, first = these, path.name
        elif these != shared:
            names = ("tags", "groups", "auto")
            what = ", ".join(n for n, a, b in zip(names, these, shared, strict=True) if a != b)
            errors.append(f"{where}: {what} differ from {first}'s (variants of an article must agree)")
        variants[meta["lang"]] = Variant(meta["lang"], meta["title"].strip(), body)
    if errors:
        raise KBError(errors)
    assert shared is not None
    tags, gs, auto = shared
    return Article(folder.name, tags, gs, auto, {x: variants[x] for x in LANGS if x in variants})


def dump_variant(article: Article, lang: str) -> str:
    """One variant's file (the format ``load_dir`` reads)."""
    v = article.variants[lang]
    tags = ", ".join(_scalar(t, in_list=True) for t in article.tags)
    groups = ", ".join(_scalar(g, in_list=True) for g in article.groups)
    front = f"id: {article.id}\nlang: {lang}\ntitle: {_scalar(v.title)}\ntags: [{tags}]\ngroups: [{groups}]\n"
    return f"---\n{front}auto: {'true' if article.auto else 'false'}\n---\n{v.body}\n"


def _scalar(text: str, in_list: bool = False) -> str:
    """``text`` as a YAML scalar: plain where YAML reads it back as the same text, else a
    double-quoted (JSON) string, the way people write it by hand."""
    try:
        plain = yaml.safe_load(f"[{text}]") == [text] if in_list else yaml.safe_load(f"x: {text}") == {"x": text}
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text, ensure_ascii=False)


def export_dir(kb: KnowledgeBase, directory: Path) -> list[Path]:
    """Writes every variant of ``kb`` under ``directory`` (folders made as needed); the paths written."""
    written = []
    for article in kb.articles:
        folder = directory / article.id
        folder.mkdir(parents=True, exist_ok=True)
        for lang in article.variants:
            path = folder / f"{lang}.md"
            path.write_text(dump_variant(article, lang), encoding="utf-8")
            written.append(path)
    return written
