"""The content guard of the semantic cache: what two requests must share to share an answer.

Sentence embeddings put "turn on the kitchen light" and "turn off the kitchen light" at cosine
0.91 (all-MiniLM-L6-v2), above most paraphrases, so no similarity threshold separates them. The
guard is a cheap exact comparison of what decides the answer of a home command:

- the action polarity (on/off, open/close, lock/unlock, up/down, ...), with synonyms folded;
- negation ("don't");
- every number (digits and number words), so "set to 21" never answers "set to 22";
- the set of content words (entities such as "kitchen", "bedroom", "thermostat"), after dropping
  filler ("please", "could you", articles) and folding plurals and a few home synonyms.

Its cost: a few microseconds of tokenising per request, and paraphrases that name a thing with a
word the synonym table does not know ("how warm is it" vs "what is the temperature") miss the
cache, so they are generated once more. A miss costs latency; a wrong hit would switch the wrong
light. bench/cache_sweep.py measures both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|%")

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "fifteen": "15", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "sixty": "60", "hundred": "100", "half": "50",
}  # fmt: skip

_ACTIONS = {
    "on": "on", "enable": "on", "activate": "on", "start": "on",
    "off": "off", "disable": "off", "deactivate": "off", "stop": "off", "kill": "off",
    "open": "open", "close": "close", "shut": "close",
    "lock": "lock", "unlock": "unlock",
    "up": "up", "raise": "up", "increase": "up", "brighten": "up", "higher": "up",
    "brighter": "up", "warmer": "up", "louder": "up",
    "down": "down", "lower": "down", "decrease": "down", "dim": "down", "reduce": "down",
    "darker": "down", "cooler": "down", "quieter": "down",
    "play": "on", "resume": "on", "pause": "pause",
    "locked": "lock", "unlocked": "unlock", "opened": "open", "closed": "close",
    "arm": "arm", "disarm": "disarm", "add": "on", "remove": "off", "delete": "off",
}  # fmt: skip

_NEGATIONS = {"not", "no", "never", "don't", "dont", "doesn't", "isn't", "aren't", "won't"}

_QUESTION_STARTS = {
    "is", "are", "was", "were", "what", "what's", "whats", "who", "who's", "whos", "how", "when",
    "where", "which", "did", "does", "do", "has", "have", "tell", "show", "check",
}  # fmt: skip
"""A question about a state ("is the garage door open") never shares an answer with the command
that changes it ("open the garage door"). "Can you ...", "could you ..." are polite commands."""

_POLITE = {"can", "could", "would", "will", "please"}

_MODIFIERS = {"all": "all", "every": "all", "each": "all", "except": "except", "but": "except",
              "without": "except", "only": "only"}  # fmt: skip

_FILLER = {
    "a", "an", "the", "please", "could", "would", "can", "will", "you", "i", "me", "my", "we",
    "our", "us", "it", "its", "is", "are", "be", "was", "were", "do", "does", "did", "to",
    "for", "of", "in", "at", "into", "and", "hey", "hi", "ok", "okay", "now", "right", "just",
    "kindly", "thanks", "thank", "there", "this", "that", "what", "whats", "how", "tell",
    "let", "know", "want", "like", "need", "make", "turn", "switch", "set", "put", "change",
    "get", "give", "show", "current", "currently", "some", "quick", "quickly", "degree",
    "percent", "%", "level", "value", "state", "status", "also", "so", "then", "with", "from",
    "by", "about", "any", "here", "much", "many", "mode", "again", "bit", "little", "have",
    "has", "sure", "should", "if", "check", "bring", "go", "going", "been", "anyone",
    "anybody", "someone", "somebody",
}  # fmt: skip

_SOFT = {
    "door", "system", "robot", "cleaner", "machine", "scene", "usage", "use", "brightness",
    "forecast", "device", "unit", "area", "room", "light",
}  # fmt: skip
"""Words one request may add without changing the answer ("open the garage [door]")."""

_SYNONYMS = {
    "lamp": "light", "lights": "light", "lighting": "light", "bulb": "light",
    "thermostat": "temperature", "temp": "temperature", "heating": "temperature",
    "heat": "temperature", "warm": "temperature",
    "lounge": "living", "livingroom": "living", "bathroom": "bath", "loo": "bath",
    "tv": "television", "telly": "television",
    "music": "media", "song": "media", "track": "media", "speaker": "media", "volume": "media",
    "aircon": "ac", "air": "ac", "conditioning": "ac", "conditioner": "ac",
    "blinds": "cover", "blind": "cover", "shades": "cover", "shade": "cover",
    "curtains": "cover", "curtain": "cover", "shutters": "cover", "shutter": "cover",
    "doors": "door", "windows": "window", "fans": "fan", "kitchens": "kitchen",
    "washer": "washing", "finished": "done", "complete": "done", "humid": "humidity",
    "electricity": "energy", "power": "energy", "vacuuming": "vacuum", "hoover": "vacuum",
}  # fmt: skip

_PHRASES = (
    ("shut off", "off"), ("shut down", "off"), ("power off", "off"), ("power on", "on"),
    ("turn up", "up"), ("turn down", "down"), ("bring down", "down"), ("living room", "living"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Signature:
    question: bool
    actions: frozenset[str]
    negated: bool
    numbers: tuple[str, ...]
    modifiers: frozenset[str]
    content: frozenset[str]


def _fold(word: str) -> str:
    word = word.removesuffix("'s")
    word = _SYNONYMS.get(word, word)
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = _SYNONYMS.get(word[:-1], word[:-1])
    return word


def signature(text: str) -> Signature:
    lowered = " " + text.lower().replace("\u2019", "'") + " "
    for phrase, replacement in _PHRASES:
        lowered = lowered.replace(f" {phrase} ", f" {replacement} ")
    words = _WORD.findall(lowered)
    first = words[0] if words else ""
    question = first in _QUESTION_STARTS or ("?" in text and first not in _POLITE)
    actions: set[str] = set()
    numbers: list[str] = []
    modifiers: set[str] = set()
    content: set[str] = set()
    negated = False
    for raw in words:
        word = raw if raw in _ACTIONS or raw in _NUMBER_WORDS else _fold(raw)
        if raw in _FILLER or word in _FILLER:
            continue
        if word in _NEGATIONS or word.endswith("n't"):
            negated = True
        elif word.isdigit():
            numbers.append(str(int(word)))
        elif word in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[word])
        elif word in _ACTIONS:
            actions.add(_ACTIONS[word])
        elif word in _MODIFIERS:
            modifiers.add(_MODIFIERS[word])
        elif raw not in _QUESTION_STARTS:
            content.add(word)
    if numbers:
        # "dim to 30 %", "set to 30 %" and "start a 10 minute timer" name their end state:
        # the target decides, the verb does not ("off" still differs: "off in 5 minutes").
        actions -= {"up", "down", "on"}
    return Signature(
        question=question,
        actions=frozenset(actions),
        negated=negated,
        numbers=tuple(sorted(numbers)),
        modifiers=frozenset(modifiers),
        content=frozenset(content),
    )


def compatible(a: Signature, b: Signature) -> bool:
    """Whether two requests may share one answer (besides being similar enough)."""
    # Question vs command only matters where an action is named: "today's weather" and
    # "what's the weather today" ask the same thing.
    return (
        (a.question == b.question or not (a.actions or b.actions))
        and a.actions == b.actions
        and a.negated == b.negated
        and a.numbers == b.numbers
        and a.modifiers == b.modifiers
        and (a.content ^ b.content) <= _SOFT
    )
