"""Terms that name a cluster: tokens per language and class-based TF-IDF over clusters.

Chinese (and any CJK run) has no spaces: its tokens are character bigrams (``提现`` ``现三``…),
which catch two-character words without a segmenter. Everything else is split into words
(letters and digits, NFKC, casefolded), minus a short stop-word list per language and pure
numbers (amounts and hours say nothing about a cause). A mixed message (``提现 still pending``)
gives both kinds.

c-TF-IDF (Grootendorst, BERTopic) treats each cluster as one document: a term scores
``tf(t, c) * log(1 + A / f(t))`` where ``tf`` is its share of the cluster's tokens, ``f`` its count
over all clusters and ``A`` the mean tokens per cluster, so a term frequent in one cluster and rare
elsewhere ranks first. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["STOPWORDS", "ctfidf", "tokens", "top_terms"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]+")
_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Short lists: words that appear in complaints about anything. Their union is applied to every
# text, because users mix languages in one message and a detector's label covers the main one.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        """a about after again all already also am an and any are as at be been before but by can
        cant could did didnt do does doesnt dont even ever every for from get got had has hasnt have
        havent he her here him his how i im in is isnt it its ive just me my no nobody not now of
        on one or our out please so still that thats the their them then there theres they this to
        too up us very was wasnt we were what whats when where which who why will with wont would
        you your youre yet lol bro guys hello hi help"""
    ),
    "ru": _words(
        """а без в во вы да для до его ее же за и из или им их к как когда ко уже ли мне мой моя мои
        на не нет ни но о об от по при с со так то у уже что это я вы вас вам меня мне был была было
        были есть все всё просто ещё еще"""
    ),
    "es": _words(
        """a al algo con de del el en es esta está este esto ha hace han hay la las le lo los me mi mis
        muy nada ni no nos o para pero por que qué se sin su sus te todo un una uno y ya yo"""
    ),
    "pt": _words(
        """a ao as com da das de do dos e em é eu isso já mas me meu minha na no nos o os para pela
        pelo por que se sem seu sua um uma você"""
    ),
    "tr": _words(
        """ama bir bu çok da de daha gibi hiç için ile mi mı mu mü ne neden o ve veya ya yok benim
        bana beni siz sizin"""
    ),
    "vi": _words(
        """anh bị các cho có của đã để em gì là mà này nào những rồi sao thì tôi và vậy với vẫn
        được ạ à"""
    ),
}
_STOP = frozenset().union(*STOPWORDS.values())


def tokens(text: str) -> list[str]:
    """The text's terms: character bigrams of CJK runs, other words minus stop words."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    for part in _CJK.split(folded):
        out.extend(w for w in _WORD.findall(part) if len(w) > 1 and not w.isdigit() and w not in _STOP)
    for run in _CJK.findall(folded):
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


def ctfidf(docs: Sequence[Sequence[str]], labels: Sequence[int]) -> tuple[dict[str, int], npt.NDArray[np.float64]]:
    """The vocabulary (term -> column) and the clusters x terms c-TF-IDF matrix; ``labels`` are
    cluster numbers 0..k-1, one per document."""
    vocab: dict[str, int] = {}
    for doc in docs:
        for t in doc:
            vocab.setdefault(t, len(vocab))
    k = max(labels, default=-1) + 1
    counts = np.zeros((k, len(vocab)), dtype=np.float64)
    for doc, label in zip(docs, labels, strict=True):
        for t in doc:
            counts[label, vocab[t]] += 1
    if not vocab:
        return vocab, counts
    per_cluster = counts.sum(axis=1, keepdims=True)
    tf = np.divide(counts, per_cluster, out=np.zeros_like(counts), where=per_cluster > 0)
    mean_tokens = counts.sum() / k
    idf = np.log(1 + mean_tokens / counts.sum(axis=0))
    return vocab, tf * idf


def top_terms(
    docs: Sequence[Sequence[str]], langs: Sequence[str], labels: Sequence[int], k: int = 5
) -> list[dict[str, tuple[str, ...]]]:
    """Per cluster, per language of its members (most members first): the ``k`` terms of that
    language's members that score highest for the cluster."""
    vocab, scores = ctfidf(docs, labels)
    out: list[dict[str, tuple[str, ...]]] = []
    for c in range(scores.shape[0]):
        by_lang: dict[str, set[str]] = {}
        members: dict[str, int] = {}
        for doc, lang, label in zip(docs, langs, labels, strict=True):
            if label == c:
                by_lang.setdefault(lang, set()).update(doc)
                members[lang] = members.get(lang, 0) + 1
        found: dict[str, tuple[str, ...]] = {}
        for lang in sorted(members, key=lambda x: (-members[x], x)):
            ranked = sorted(by_lang[lang], key=lambda t: (-scores[c, vocab[t]], t))
            if ranked:
                found[lang] = tuple(ranked[:k])
        out.append(found)
    return out
