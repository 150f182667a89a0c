"""Labelled questions (JSON lines): ``{"id", "lang", "text", "article"}``, ``article`` null for a
question that no article answers. Read with every bad line named; several files (a tune set and its
supplements) are read as one set, an id repeated across them refused like one repeated in a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from kb.article import LANGS, KnowledgeBase
from kb.loader import KBError

__all__ = ["Question", "load_question_files", "load_questions"]


class Question(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    lang: str
    text: str
    article: str | None


def load_questions(path: Path, kb: KnowledgeBase | None = None) -> list[Question]:
    """The questions of ``path``; ``KBError`` naming every bad line (``path:line: reason``):
    not a question object, an unknown language, an empty text, a repeated id, or (given ``kb``)
    a label that is not one of its articles."""
    errors: list[str] = []
    questions: list[Question] = []
    seen: set[str] = set()
    decoder = msgspec.json.Decoder(Question)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KBError([f"{path}: cannot be read ({exc})"]) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            q = decoder.decode(line)
        except msgspec.DecodeError as exc:
            errors.append(f"{where}: not a question ({exc})")
            continue
        if q.lang not in LANGS:
            errors.append(f"{where}: lang {q.lang!r} is not one of {', '.join(LANGS)}")
        if not q.text.strip():
            errors.append(f"{where}: empty text")
        if q.id in seen:
            errors.append(f"{where}: id {q.id!r} repeated")
        if kb is not None and q.article is not None and q.article not in kb.ids():
            errors.append(f"{where}: article {q.article!r} is not in the knowledge base")
        seen.add(q.id)
        questions.append(q)
    if not questions and not errors:
        errors.append(f"{path}: no questions")
    if errors:
        raise KBError(errors)
    return questions


def load_question_files(paths: Sequence[Path], kb: KnowledgeBase | None = None) -> list[Question]:
    """The questions of every file in ``paths``, in order; ``KBError`` naming every problem of
    every file, and every id that another file already used."""
    errors: list[str] = []
    questions: list[Question] = []
    first: dict[str, Path] = {}
    for path in paths:
        try:
            batch = load_questions(path, kb)
        except KBError as exc:
            errors += exc.errors
            continue
        for q in batch:
            if q.id in first:
                errors.append(f"{path}: id {q.id!r} repeated (also in {first[q.id]})")
            first.setdefault(q.id, path)
        questions += batch
    if errors:
        raise KBError(errors)
    return questions
