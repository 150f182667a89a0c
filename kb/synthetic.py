"""A knowledge base grown to N articles for the benchmark: the real articles, then generated
ones (seeded, so every run measures the same base).

A generated article is about a topic the default articles do not cover (staking, card
payments, launchpad, ...), one aspect of it (fees, limits, eligibility, ...) and one coin: 25
topics x 8 aspects x 30 coins give 6,000 distinct articles, the way a real base grows by specific
articles. Each has one English variant of 4-6 sentences drawn from templates and a pool of
generic support sentences, so its length (~70 words) and vocabulary are those of a short real
article; embedding cost grows with length, so this keeps the 5,000-article build to minutes.
"""

from __future__ import annotations

import itertools
import random

from kb.article import Article, KnowledgeBase, Variant

__all__ = ["grow"]

TOPICS = (
    "staking", "savings", "launchpad", "copy trading", "trading bots", "margin borrowing", "options",
    "NFT marketplace", "crypto card", "fiat on-ramp", "referral program", "VIP program", "proof of reserves",
    "tax reports", "sub-accounts", "convert", "dual investment", "auto-invest", "crypto loans", "gift cards",
    "airdrops", "token listing", "delisting", "mining pool", "web3 wallet",
)  # fmt: skip
ASPECTS = (
    "getting started",
    "fees",
    "limits",
    "risks",
    "reward schedule",
    "eligibility",
    "troubleshooting",
    "statements",
)
COINS = (
    "BTC", "ETH", "USDT", "USDC", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "TON", "DOT", "MATIC", "LTC", "AVAX",
    "LINK", "ATOM", "XLM", "NEAR", "APT", "ARB", "OP", "FIL", "ETC", "BCH", "UNI", "AAVE", "SUI", "SHIB", "PEPE",
)  # fmt: skip
TEMPLATES = (
    "This article explains {aspect} for {topic} with {coin}.",
    "{topic} with {coin}: the {aspect} you should know before you start.",
    "The {aspect} of {topic} depend on the product and can change; the product page shows the current values.",
    "For {coin}, {topic} follows the same rules as for other coins unless the product page says otherwise.",
    "Open the {topic} page, pick {coin} and read the {aspect} section before you confirm.",
)
GENERIC = (
    "Values shown in the app are the ones that apply to your account.",
    "If something looks wrong, take a screenshot and keep it for our team.",
    "Rewards and fees are calculated in the coin you use, not in USD.",
    "Some products are not available in every country.",
    "You can stop at any time; the app shows what happens to amounts in progress.",
    "History and statements can be exported as CSV from the orders page.",
    "If you need help, reply 'agent' or press 'talk to a person'.",
    "Changes are announced on the announcements page a few days in advance.",
)
GROUPS = ("payments", "trading", "general", "security", "complaints")


def grow(kb: KnowledgeBase, articles: int, seed: int = 1, groups: tuple[str, ...] = GROUPS) -> KnowledgeBase:
    """``kb`` plus generated articles up to ``articles`` in all (``kb`` itself if it has that many).
    ``groups``: those a generated article may serve (they must be the rule set's)."""
    rng = random.Random(seed)
    combos = list(itertools.product(TOPICS, ASPECTS, COINS))
    rng.shuffle(combos)
    wanted = max(0, articles - len(kb))
    if wanted > len(combos):
        raise ValueError(f"at most {len(kb) + len(combos)} articles can be generated")
    made = []
    for n, (topic, aspect, coin) in enumerate(combos[:wanted]):
        values = {"topic": topic, "aspect": aspect, "coin": coin}
        sentences = [t.format(**values) for t in rng.sample(TEMPLATES, 3)] + rng.sample(GENERIC, rng.randint(1, 3))
        title = f"{topic.capitalize()} with {coin}: {aspect}"
        tags = (topic.replace(" ", "-").lower(), coin.lower())
        made.append(
            Article(
                id=f"gen-{n:05d}",
                tags=tags,
                groups=(rng.choice(groups),),
                auto=rng.random() < 0.9,
                variants={"en": Variant("en", title, " ".join(sentences))},
            )
        )
    return KnowledgeBase([*kb.articles, *made])
