"""The embedded synthetic task: instructions with checkable constraints, an exact oracle, and systematic slips.

A prompt reads `write 8 words with cat red sun without dog owl` (optionally `... in order ...`). The oracle
scores a response as the mean of its satisfied constraints: each required word present, each banned word
absent, the word count (full credit when exact, half when off by one) and, when asked, the order of the
required words.

A perfect response ends with its last required word. With `filler` set (the default, `la`) it is unique: the
required words in the prompt's order, the filler word padding the length before the last one (`cat red la la la
la la sun`), so a well-fit SFT policy's greedy output is the mode of the data; with `filler: null` the other
words are random and their places too, and greedy decoding of such a high-entropy target degenerates into
repeated required words rather than the data's mode.

Pairs imitate annotators with habits. The chosen
response is the perfect one with each *slip* of `slips` made independently with probability `slip_prob`, plus a
few random corruptions: `echo` starts the answer with the first banned word (one filler replaced), `cut` stops it
two words early (losing the final required word and the length), `repeat` (not in the default) writes the first
required word again in place of the second. With `slip_prob > 0.5` the most likely chosen response, which greedy
decoding of an SFT policy copies, has every slip (oracle 0.5 with the default's two, 3 required and 2 banned
words), so a draft carries visible, local, fixable flaws. The rejected response is an edit of the chosen one: the
same words with a slip the chosen lacks and more corruptions, so each pair contrasts exactly those flaws near the
top of the quality scale (always oracle(chosen) > oracle(rejected)).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from pit.data.schema import LoadedData, PreferenceExample, PreferenceSource
from pit.errors import ConfigError

WORDS = (
    "cat dog bird fish cow fox owl bee ant pig red blue green gold pink gray black white sun moon star "
    "rain snow wind tree leaf rock sand lake hill road ship car bus hat cup key box pen map bell"
).split()

PROMPT_RE = re.compile(r"^write (\d+) words with (\w+(?: \w+)*?)( in order)?(?: without (\w+(?: \w+)*))?$")
SLIPS = ("echo", "cut", "repeat")


def score(prompt: str, response: str) -> float:
    """Exact quality in [0, 1] of `response` for a synthetic `prompt` (ValueError if the prompt is not one)."""
    match = PROMPT_RE.match(prompt.strip())
    if match is None:
        raise ValueError(f"not a synthetic prompt: {prompt!r}")
    length, required, ordered, banned = int(match[1]), match[2].split(), bool(match[3]), (match[4] or "").split()
    words = response.split()
    terms = [float(w in words) for w in required] + [float(w not in words) for w in banned]
    terms.append(max(0.0, 1.0 - abs(len(words) - length) / 2))
    if ordered:
        positions = [words.index(w) for w in required if w in words]
        terms.append(float(positions == sorted(positions)))
    return sum(terms) / len(terms)


class SyntheticSource(PreferenceSource):
    """Deterministic, seeded generator of constrained-writing preference pairs with systematic slips."""

    has_oracle = True

    def __init__(self, n_pairs: int = 4000, seed: int = 0, n_required: int = 3, n_banned: int = 2,
                 min_length: int = 7, max_length: int = 9, ordered: bool = False, slip_prob: float = 0.65,
                 filler: str | None = "la", slips: tuple[str, ...] = ("echo", "cut"),
                 chosen_corruptions: tuple[int, ...] = (0, 1), rejected_corruptions: tuple[int, ...] = (1, 2),
                 name: str = "synthetic", **presentation: Any):
        super().__init__(name, **presentation)
        if n_required + n_banned + max_length > len(WORDS):
            raise ConfigError("synthetic: n_required + n_banned + max_length exceeds the vocabulary")
        if not 0 < n_required <= min_length <= max_length:
            raise ConfigError("synthetic: need 0 < n_required <= min_length <= max_length")
        if filler is not None and (filler in WORDS or not re.fullmatch(r"[a-z]+", filler)):
            raise ConfigError(f"synthetic: filler={filler!r} must be one lowercase word outside the vocabulary")
        if unknown := sorted(set(slips) - set(SLIPS)):
            raise ConfigError(f"synthetic: unknown slips {unknown}; choose from {list(SLIPS)}")
        if not any(rejected_corruptions):   # a chosen response with every slip would have no worse edit: no pair
            raise ConfigError(f"synthetic: rejected_corruptions={list(rejected_corruptions)} must allow at least one")
        if not 0.0 <= slip_prob <= 1.0:
            raise ConfigError(f"synthetic: slip_prob={slip_prob} must be a probability in [0, 1]")
        # a prompt is (length, required words in order, banned words in order): this many exist
        if n_pairs > (capacity := (max_length - min_length + 1) * math.perm(len(WORDS), n_required + n_banned)):
            raise ConfigError(f"synthetic: these constraints allow {capacity} distinct prompts, fewer than "
                              f"n_pairs={n_pairs}")
        self.n_pairs, self.seed, self.name, self.slip_prob, self.filler = n_pairs, seed, name, slip_prob, filler
        self.n_required, self.n_banned, self.ordered = n_required, n_banned, ordered
        self.slips = tuple(s for s in SLIPS if s in slips)   # a fixed order keeps the random stream per choice
        self.lengths = range(min_length, max_length + 1)
        self.chosen_corruptions, self.rejected_corruptions = tuple(chosen_corruptions), tuple(rejected_corruptions)

    def load(self) -> LoadedData:
        rng = random.Random(self.seed)
        examples, seen = [], set()
        while len(examples) < self.n_pairs:   # ends: __init__ checked that n_pairs distinct prompts exist
            example = self._pair(rng)
            if example.prompt not in seen:
                seen.add(example.prompt)
                examples.append(example)
        return LoadedData(self.name, examples, oracle=score)

    def _pair(self, rng: random.Random) -> PreferenceExample:
        picked = rng.sample(WORDS, self.n_required + self.n_banned)
        required, banned = picked[: self.n_required], picked[self.n_required :]
        length = rng.choice(self.lengths)
        order = " in order" if self.ordered else ""
        avoid = f" without {' '.join(banned)}" if banned else ""
        prompt = f"write {length} words with {' '.join(required)}{order}{avoid}"
        fillers = [w for w in WORDS if w not in picked]
        perfect = self._perfect(required, fillers, length, rng)
        applicable = [s for s in self.slips if (s != "echo" or banned) and (s != "repeat" or len(required) > 1)]
        slips = {s for s in applicable if rng.random() < self.slip_prob}
        while True:
            base = _corrupt(perfect, rng.choice(self.chosen_corruptions), required, banned, fillers, rng)
            missing = [s for s in applicable if s not in slips]
            extra = {rng.choice(missing)} if missing else set()
            worse = _corrupt(base, rng.choice(self.rejected_corruptions), required, banned, fillers, rng)
            chosen, rejected = _slip(base, slips, banned, required), _slip(worse, slips | extra, banned, required)
            if score(prompt, chosen) > score(prompt, rejected):
                return PreferenceExample(prompt, chosen, rejected,
                                         {"perfect": " ".join(perfect), "slips": sorted(slips)})

    def _perfect(self, required: list[str], fillers: list[str], length: int, rng: random.Random) -> list[str]:
        """The one right answer (`filler` set) or a random one; it ends with its last required word: a cut loses it."""
        if self.filler is not None:
            return required[:-1] + [self.filler] * (length - len(required)) + required[-1:]
        perfect = rng.sample(fillers, length - len(required))
        for word, slot in zip(required[:-1], sorted(rng.sample(range(length - 1), len(required) - 1)), strict=True):
            perfect.insert(slot, word)
        return perfect + required[-1:]


def _slip(words: list[str], slips: set[str], banned: list[str], required: list[str]) -> str:
    """Apply the systematic slips: `echo` puts the first banned word first, `repeat` writes the first required word
    again in place of the second, `cut` drops the last two words."""
    words = list(words)
    if "echo" in slips:
        fillers = [i for i, w in enumerate(words) if w not in required and w not in banned]
        if fillers:
            del words[fillers[0]]
        words.insert(0, banned[0])
    if "repeat" in slips:
        words = [required[0] if w == required[1] else w for w in words]
    if "cut" in slips:
        words = words[:-2]
    return " ".join(words)


def _corrupt(words: list[str], n: int, required: list[str], banned: list[str], fillers: list[str],
             rng: random.Random) -> list[str]:
    """Apply `n` random corruptions: drop a required word, insert a banned word, or change the length."""
    words = list(words)
    kinds = ("drop_required", "add_banned", "longer", "shorter") if banned else ("drop_required", "longer", "shorter")
    for _ in range(n):
        kind = rng.choice(kinds)
        present = [i for i, w in enumerate(words) if w in required]
        free = [i for i, w in enumerate(words[:-1]) if w not in required and w not in banned]
        if kind == "drop_required" and present:
            words[rng.choice(present)] = rng.choice([w for w in fillers if w not in words] or fillers)
        elif kind == "add_banned" and free:
            words[rng.choice(free)] = rng.choice(banned)
        elif kind == "shorter" and free and len(words) > 1:
            del words[rng.choice(free)]
        else:
            words.insert(rng.randrange(len(words)), rng.choice(fillers))
    return words
