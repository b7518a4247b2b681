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
    "shut": "off",
    "open": "open", "close": "close", "shut_door": "close",
    "lock": "lock", "unlock": "unlock",
    "up": "up", "raise": "up", "increase": "up", "brighten": "up", "higher": "up",
    "brighter": "up", "warmer": "up", "louder": "up",
    "down": "down", "lower": "down", "decrease": "down", "dim": "down", "reduce": "down",
    "darker": "down", "cooler": "down", "quieter": "down",
    "play": "play", "resume": "play", "pause": "pause",
    "arm": "arm", "disarm": "disarm",
}  # fmt: skip

_NEGATIONS = {"not", "no", "never", "don't", "dont", "doesn't", "isn't", "aren't", "won't"}

_FILLER = {
    "a", "an", "the", "please", "could", "would", "can", "will", "you", "i", "me", "my", "we",
    "our", "us", "it", "its", "it's", "is", "are", "be", "was", "do", "does", "to", "for", "of",
    "in", "at", "into", "on_", "and", "hey", "hi", "ok", "okay", "now", "right", "just",
    "kindly", "thanks", "thank", "there", "this", "that", "what", "what's", "whats", "how",
    "tell", "let", "know", "want", "like", "need", "make", "turn", "switch", "set", "put",
    "change", "get", "give", "show", "check", "current", "currently", "all", "some", "up_",
    "quick", "quickly", "degree", "degrees", "percent", "%", "level", "value", "state",
    "status", "also", "so", "then", "with", "from", "by", "about", "any", "there's", "here",
    "much", "many", "mode", "again", "bit", "little",
}  # fmt: skip

_SYNONYMS = {
    "lamp": "light", "lights": "light", "lighting": "light", "bulb": "light",
    "thermostat": "temperature", "temp": "temperature", "heating": "temperature",
    "heat": "temperature", "warm": "temperature", "hot": "temperature", "cold": "temperature",
    "lounge": "living", "livingroom": "living", "bathroom": "bath", "loo": "bath",
    "garage_door": "garage", "tv": "television", "telly": "television",
    "music": "media", "song": "media", "track": "media", "speaker": "media", "volume": "media",
    "aircon": "ac", "air": "ac", "conditioning": "ac", "conditioner": "ac",
    "blinds": "cover", "blind": "cover", "shades": "cover", "shade": "cover",
    "curtains": "cover", "curtain": "cover", "shutters": "cover", "shutter": "cover",
    "front": "front", "doors": "door", "windows": "window", "fans": "fan",
    "bedroom": "bedroom", "kitchens": "kitchen", "rooms": "room", "room": "room",
    "weather": "weather", "forecast": "weather", "outside": "weather",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Signature:
    actions: frozenset[str]
    negated: bool
    numbers: tuple[str, ...]
    content: frozenset[str]


def _fold(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = _SYNONYMS.get(word[:-1], word[:-1])
    return word


def signature(text: str) -> Signature:
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    actions: set[str] = set()
    numbers: list[str] = []
    content: set[str] = set()
    negated = False
    for word in words:
        if word in _NEGATIONS or word.endswith("n't"):
            negated = True
        elif word.isdigit():
            numbers.append(str(int(word)))
        elif word in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[word])
        elif word in _ACTIONS:
            actions.add(_ACTIONS[word])
        elif word not in _FILLER:
            content.add(_fold(word))
    content.discard("room")  # "the kitchen" and "the kitchen room" name the same place
    return Signature(
        actions=frozenset(actions),
        negated=negated,
        numbers=tuple(sorted(numbers)),
        content=frozenset(content),
    )


def compatible(a: Signature, b: Signature) -> bool:
    """Whether two requests may share one answer (besides being similar enough)."""
    return a == b
