"""Wide, compositional wordings for needles, questions and answer prefixes, in two disjoint families.

A needle sentence is built from parts: an optional lead-in ("For the record,"), a core statement
with slots ("the {attr} of {key} is {value}"), an optional trailer ("Remember it."). A question is an
optional preamble, a question core, an optional instruction ("Reply with the value only."); the answer
prefix ranges from nothing and terse `Answer:` to a full sentence that echoes the question. Keys are
people, places, objects, projects and invented words; attributes compose a modifier and a noun
("access code", "locker number"); values are plain digits, grouped digits, numbers with thousands
separators, short letter-digit codes or invented words.

`TRAIN_WORDINGS` is what every training step draws from (sedpa-tiny's training, head identification).
`HELDOUT_WORDINGS` is what the benchmarks and the acceptance evaluation draw from. The two families
share no lead-in, core statement, trailer, question core, preamble, instruction, answer prefix,
name, place, object key or attribute phrase (`check_disjoint` lists any overlap; a test asserts there is
none), so a score on the held-out family measures retrieval under wordings no training step has seen.
Shared: the value formats (what is retrieved, not how it is asked) and the plain newline between the
question and its answer prefix; training also varies that separator and the break before the question.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sedpa_compress.data.needles import Needle, distinct

# ----------------------------------------------------------------------------------- vocabularies

_SYLLABLES_TRAIN = ("ba", "ko", "ri", "tan", "mel", "zu", "dor", "vi", "lek", "sa", "mun", "tro", "pel", "quin")
_SYLLABLES_HELDOUT = ("ga", "ho", "ny", "ras", "fel", "ti", "bor", "wen", "ca", "lo", "mir", "dus", "ve", "ka")


@dataclass(frozen=True)
class Vocabulary:
    """The words one family builds keys, attributes and sentences from."""

    first_names: tuple[str, ...]
    surnames: tuple[str, ...]
    places: tuple[str, ...]
    colours: tuple[str, ...]  # adjectives for objects
    things: tuple[str, ...]  # object nouns
    groups: tuple[str, ...]  # "Project {Word}", "the {word} team": the pattern around a word
    modifiers: tuple[str, ...]  # attribute modifiers ("secret", "locker")
    nouns: tuple[str, ...]  # attribute heads ("code", "number")
    bare_attributes: tuple[str, ...]  # attributes used alone ("passcode", "pin")
    syllables: tuple[str, ...]


TRAIN_VOCAB = Vocabulary(
    first_names=("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen",
                 "Liam", "Maria", "Nathan", "Olivia", "Peter", "Quentin", "Rachel", "Samuel", "Tina", "Victor",
                 "Wendy", "Xavier", "Yvonne", "Zachary", "Hannah", "Lucas", "Sofia", "Mason", "Chloe", "Ethan",
                 "Ava", "Noah", "Mia", "Omar", "Priya", "Kenji", "Fatima", "Diego", "Ingrid", "Mateo", "Aisha",
                 "Lars", "Chen", "Nadia", "Pablo", "Elena", "Tomas", "Leila", "Boris"),
    surnames=("Smith", "Jones", "Brown", "Garcia", "Miller", "Davis", "Wilson", "Taylor", "Moore", "Clark",
              "Lewis", "Walker", "Young", "King", "Wright", "Hill", "Green", "Baker", "Adams", "Nelson"),
    places=("Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Warsaw", "Dublin", "Lisbon",
            "Athens", "Cairo", "Lagos", "Nairobi", "Tokyo", "Osaka", "Seoul", "Beijing", "Shanghai", "Delhi",
            "Mumbai", "Karachi", "Bangkok", "Hanoi", "Jakarta", "Manila", "Sydney", "Melbourne", "Auckland",
            "Toronto", "Montreal", "Chicago", "Boston", "Denver", "Seattle", "Houston", "Miami", "Atlanta",
            "Lima", "Bogota", "Quito", "Santiago", "Havana", "Dallas", "Geneva", "Zurich", "Munich", "Hamburg",
            "Milan", "Naples", "Venice", "Florence", "Seville", "Porto", "Brussels", "Amsterdam", "Copenhagen",
            "Stockholm", "Helsinki", "Riga", "Kyiv", "Istanbul", "Ankara", "Tehran", "Riyadh", "Dubai", "Doha"),
    colours=("red", "blue", "green", "yellow", "black", "white", "silver", "golden", "wooden", "old", "small",
             "big", "grey", "iron", "glass", "stone", "north", "east", "south", "west", "front", "back"),
    things=("box", "door", "clock", "lamp", "key", "chest", "gate", "boat", "tower", "shed", "car", "safe",
            "office", "library", "wing", "bridge", "jar", "bag", "house", "room", "cabinet", "drawer", "window",
            "garden", "barn", "truck", "bicycle", "piano", "desk", "locker"),
    groups=("Project {W}", "Operation {W}", "the {w} team", "the {W} account", "Team {W}", "the {W} file"),
    modifiers=("secret", "special", "magic", "hidden", "access", "lucky", "private", "room", "ticket", "phone",
               "account", "order", "badge", "postal", "gate", "pass", "entry", "door", "safe", "alarm", "wifi",
               "employee", "customer", "student", "patient", "bank", "unlock", "launch", "recovery", "backup"),
    nouns=("code", "number", "key", "id", "pin", "password", "word", "token"),
    bare_attributes=("passcode", "passkey", "password", "pin", "code", "number", "combination", "extension",
                     "identifier", "pass key"),
    syllables=_SYLLABLES_TRAIN,
)

HELDOUT_VOCAB = Vocabulary(
    first_names=("Beatrix", "Cornelius", "Delphine", "Evander", "Florian", "Gwendolyn", "Horatio", "Isadora",
                 "Jasper", "Katarina", "Leopold", "Magnus", "Ottilie", "Percival", "Rosalind", "Sebastian",
                 "Thaddeus", "Ursula", "Wilhelmina", "Ximena"),
    surnames=("Okafor", "Lindqvist", "Petrov", "Yamamoto", "Fitzgerald", "Moreau", "Castellano", "Novak",
              "Hoffmann", "Abernathy"),
    places=("Oslo", "Bergen", "Krakow", "Budapest", "Bucharest", "Belgrade", "Zagreb", "Ljubljana", "Marseille",
            "Lyon", "Bordeaux", "Glasgow", "Edinburgh", "Cardiff", "Belfast", "Reykjavik", "Casablanca", "Tunis",
            "Accra", "Dakar", "Kampala", "Lusaka", "Harare", "Perth", "Brisbane", "Adelaide", "Wellington",
            "Vancouver", "Calgary", "Ottawa", "Portland", "Austin", "Nashville", "Detroit", "Baltimore",
            "Montevideo", "Asuncion", "Manaus", "Recife", "Kyoto", "Nagoya", "Busan", "Taipei", "Chennai"),
    colours=("leather", "cedar", "brass", "velvet", "porcelain",
             "canvas", "crimson", "ivory", "teal", "bronze"),
    things=("kettle", "umbrella", "statue", "journal", "wardrobe", "kite", "telescope", "curtain", "vase", "tent",
            "carriage", "greenhouse", "violin", "satchel"),
    groups=("Initiative {W}", "the {W} ledger", "the {w} committee", "Division {W}"),
    modifiers=("vault", "serial", "locker", "reference", "membership", "flight", "parcel", "voucher", "invoice",
               "license", "tracking", "booking", "warranty", "registration", "shipment", "cabin"),
    nouns=("number", "code", "identifier", "reference"),
    bare_attributes=("cipher", "tag", "registration", "call sign"),
    syllables=_SYLLABLES_HELDOUT,
)


# ----------------------------------------------------------------------------------- sentence parts

@dataclass(frozen=True)
class Phrasing:
    """The sentence parts of one family. Slots: {key} {attr} {value} (needles), {key} {attr} (questions)."""

    lead_ins: tuple[str, ...]  # "" means none
    cores: tuple[str, ...]
    trailers: tuple[str, ...]
    preambles: tuple[str, ...]  # before the question
    questions: tuple[str, ...]
    instructions: tuple[str, ...]  # after the question
    answer_prefixes: tuple[str, ...]  # "" means the answer starts right after the separator
    separators: tuple[str, ...]  # between question and answer prefix
    openings: tuple[str, ...]  # between the haystack and the question
    # procedural parts: with probability `wild`, a slot is built from these lists and random words
    # instead of a written frame, so no phrase is memorised (the training family only)
    wild: float = 0.0
    verbs: tuple[str, ...] = ()  # "is", "equals", ...: joins attribute and value in a needle
    links: tuple[str, ...] = ()  # "of", "for", ...: joins attribute and key
    asks: tuple[str, ...] = ()  # imperative verbs of a question ("give", "find", ...)
    labels: tuple[str, ...] = ()  # one-word answer labels ("Result", ...), followed by ":"
    # action needles (WordingFamily.action_share): key and value linked by an action, no attribute noun in the
    # needle ("{key} can be {pp} {prep} {value}"), asked back through the action and a category noun the needle
    # leaves out ("{Prep} what {noun} can {key} be {pp}?"). Slots: {key} {pp} {prep} {value} {noun}.
    actions: tuple[tuple[str, str], ...] = ()  # (past participle, preposition)
    action_cores: tuple[str, ...] = ()
    action_questions: tuple[str, ...] = ()
    # subject needles (WordingFamily.subject_share of the action needles): the value names a thing that the action
    # links to the key, value first ("{noun} {value} was {pp} {prep} {key}": "Crate 4821 was sent to Lisbon"),
    # asked as "Which {noun} was {pp} {prep} {key}?". Slots: {noun} {value} {pp} {prep} {key}.
    subject_nouns: tuple[str, ...] = ()
    subject_cores: tuple[str, ...] = ()
    subject_questions: tuple[str, ...] = ()
    subject_prefixes: tuple[str, ...] = ()


TRAIN_PHRASING = Phrasing(
    lead_ins=("", "", "", "", "Here is a fact:", "Keep in mind that", "Important:", "Please note,",
              "It is written that", "A note says", "Remember:", "By the way,", "Note:", "Fact:", "FYI:",
              "Attention:", "For your information,", "It should be noted that", "Someone wrote that",
              "The records show that"),
    cores=("the {attr} of {key} is {value}", "the {attr} for {key} is {value}", "{key}'s {attr} is {value}",
           "{key} has the {attr} {value}", "the {attr} that belongs to {key} is {value}",
           "{key}: {attr} {value}", "the {attr} assigned to {key} is {value}",
           "{key} uses the {attr} {value}", "{value} is the {attr} of {key}",
           "the {attr} {value} was given to {key}", "the {attr} of {key} is: {value}",
           "the {attr} for {key} is \"{value}\"", "one of the special {attr}s for {key} is: {value}",
           "the {attr} of {key} was {value}", "{key}'s {attr} was set to {value}",
           "the {attr} for {key} equals {value}", "{key} was assigned the {attr} {value}",
           "{key} -> {attr}: {value}", "{attr} of {key} = {value}", "the {attr} used by {key} is {value}",
           "{key} is known by the {attr} {value}", "the {attr} associated with {key} is {value}",
           "{value} is {key}'s {attr}", "for {key}, the {attr} is {value}",
           "the correct {attr} for {key} is {value}", "the {attr} of {key} happens to be {value}",
           "{key} chose {value} as the {attr}", "the {attr} on file for {key} is {value}",
           "{key} ({attr}): {value}", "the {attr} belonging to {key} is {value}"),
    trailers=("", "", "", "", "Remember it.", "Do not forget it.", "Keep it safe.", "Write it down.",
              "Keep it secret.", "That is important.", "Memorize it."),
    preambles=("", "", "", "", "Read the text above.", "Based on the text above,", "According to the document,",
               "Answer the question using the text.", "From the passage above:", "Using the context,",
               "Look at the document again.", "Given the information above,"),
    questions=("what is the {attr} of {key}?", "what is the {attr} for {key}?", "what is {key}'s {attr}?",
               "which {attr} belongs to {key}?", "what {attr} does {key} have?", "recall the {attr} of {key}.",
               "what was the {attr} given to {key}?", "find the {attr} for {key}.",
               "{key}: what is the {attr}?", "do you know the {attr} of {key}?", "give the {attr} of {key}.",
               "search the document for the {attr} of {key}.", "which number is the {attr} of {key}?",
               "please answer: {key}'s {attr}?", "tell me {key}'s {attr}.",
               "what is the special {attr} for {key} mentioned in the provided text?",
               "what {attr} was mentioned for {key}?", "what is the {attr} assigned to {key}?",
               "what does the text say the {attr} of {key} is?", "name the {attr} of {key}.",
               "report the {attr} of {key}.", "what's the {attr} for {key}?", "write down the {attr} of {key}.",
               "what is the {attr} associated with {key}?", "which {attr} was assigned to {key}?",
               "identify the {attr} of {key}.", "what {attr} did {key} get?", "state {key}'s {attr}.",
               "can you find the {attr} of {key}?", "what is the {attr} used by {key}?"),
    instructions=("", "", "", "", "Answer with the value only.", "Reply with just the {attr}.",
                  "Be brief.", "Give only the answer.", "Answer in one line.", "Do not explain.",
                  "Respond with the exact value.", "Write only the {attr}."),
    answer_prefixes=("Answer:", "Answer:", "A:", "The answer is", "The {attr} of {key} is", "The {attr} for {key} is",
                     "{key}'s {attr} is", "The {attr} is", "It is", "It was", "Certainly. It is",
                     "OK, here it is:", "Found it: the {attr} is", "That number is", "My answer is",
                     "According to the text, it is", "According to the text, the {attr} of {key} is",
                     "The special {attr} for {key} mentioned in the provided text is", "Response:", "Output:",
                     "The value is", "{key}:", "Sure! The {attr} of {key} is", "The text says it is",
                     "ANSWER:", "### Answer:", "Result:", "The {attr} assigned to {key} is", "", ""),
    separators=("\n", "\n", "\n", " ", "\n\n"),
    openings=("\n\n", "\n\n", "\n", " "),
    wild=0.35,
    verbs=("is", "was", "is set to", "equals", "is now", "has become", "became", "remains", "is exactly",
           "turned out to be", "is given as", "is written as", "amounts to", "comes to", "is recorded as",
           "will be", "has been", "is still", "shows", "is marked as", "is noted as", "is simply"),
    links=("of", "for", "belonging to", "that belongs to", "used by", "associated with",
           "given to", "kept by", "owned by", "issued to", "attached to", "set for", "known for", "held by"),
    asks=("give", "find", "write", "provide", "show", "tell me", "name", "report", "print", "return", "output",
          "retrieve", "extract", "locate", "fetch", "quote", "repeat", "copy", "reveal", "mention", "say",
          "identify", "recall", "search for", "what is"),
    labels=("Answer", "A", "Result", "Output", "Response", "Solution", "Final answer", "Answer (value only)",
            "The answer", "Number", "Code", "Assistant", "Bot", "AI", "Model"),
    actions=(("phoned", "on"), ("texted", "on"), ("found", "in"), ("filed", "under"), ("stored", "in"),
             ("kept", "in"), ("booked", "under"), ("parked", "in"), ("seated", "in"), ("housed", "in"),
             ("billed", "to"), ("sent", "to"), ("mailed", "to"), ("delivered", "to"), ("saved", "as"),
             ("tagged", "as"), ("labelled", "as"), ("known", "as"), ("dialled", "on"), ("placed", "in"),
             ("logged", "under"), ("moved", "to"), ("wired", "to"), ("located", "in"), ("printed", "on")),
    action_cores=("{key} can be {pp} {prep} {value}", "{key} is {pp} {prep} {value}", "{key} was {pp} {prep} {value}",
                  "{key} is usually {pp} {prep} {value}", "{key} will be {pp} {prep} {value}",
                  "{key} has been {pp} {prep} {value}", "{key} may be {pp} {prep} {value}",
                  "these days {key} is {pp} {prep} {value}", "{key} should be {pp} {prep} {value}",
                  "{key} is always {pp} {prep} {value}",
                  "{key} must be {pp} {prep} {value}"),
    action_questions=("{prep} what {noun} can {key} be {pp}?", "{prep} which {noun} is {key} {pp}?",
                      "what {noun} is {key} {pp} {prep}?", "which {noun} can {key} be {pp} {prep}?",
                      "{key} is {pp} {prep} which {noun}?", "tell me the {noun} {key} is {pp} {prep}.",
                      "what is the {noun} {key} can be {pp} {prep}?", "give the {noun} that {key} is {pp} {prep}.",
                      "{prep} what {noun} was {key} {pp}?", "where is {key} {pp}?",
                      "what {noun} should {key} be {pp} {prep}?", "{key} can be {pp} {prep} what?"),
    subject_nouns=("parcel", "crate", "invoice", "ticket", "batch", "package", "file", "case", "box", "unit",
                   "lot", "account", "request", "claim", "job", "form", "report", "cheque", "folder", "letter"),
    subject_cores=("{noun} {value} was {pp} {prep} {key}", "{noun} {value} is {pp} {prep} {key}",
                   "{noun} {value} will be {pp} {prep} {key}", "{noun} {value} has been {pp} {prep} {key}",
                   "the {noun} numbered {value} was {pp} {prep} {key}", "{noun} {value} is the one {pp} {prep} {key}",
                   "{noun} {value} got {pp} {prep} {key}", "only {noun} {value} was {pp} {prep} {key}"),
    subject_questions=("which {noun} was {pp} {prep} {key}?", "what {noun} is {pp} {prep} {key}?",
                       "name the {noun} {pp} {prep} {key}.", "which {noun} has been {pp} {prep} {key}?",
                       "which {noun} will be {pp} {prep} {key}?", "what is the {noun} that was {pp} {prep} {key}?",
                       "the {noun} {pp} {prep} {key}: which one?", "tell me which {noun} got {pp} {prep} {key}."),
    subject_prefixes=("The {noun} was", "The {noun} is", "It was {noun}", "{noun}:", "Answer:", "",
                      "The {noun} {pp} {prep} {key} was", "That is {noun}", "It is the {noun}"),
)

HELDOUT_PHRASING = Phrasing(
    lead_ins=("", "", "Remember this:", "For the record,", "Everyone agreed that", "In the ledger,",
              "The clerk confirmed that", "Officially,"),
    cores=("the {attr} assigned to {key} reads {value}", "{key} is listed with {attr} {value}",
           "{key} carries the {attr} {value}", "the {attr} recorded for {key} stands at {value}",
           "{key}'s {attr} would be {value}", "the {attr} registered under {key} is {value}",
           "{key} goes by the {attr} {value}", "listed under {key}, the {attr} is {value}",
           "the {attr} linked to {key} reads: {value}", "{key} received {attr} {value}"),
    trailers=("", "", "Please retain it.", "It will be needed later.", "Keep a copy."),
    preambles=("", "", "Look back at the text.", "Consult the material above.", "Considering everything above,"),
    questions=("tell me the {attr} for {key}.", "which {attr} was recorded for {key}?",
               "can you recall {key}'s {attr}?", "I need the {attr} of {key}. What is it?",
               "state the {attr} of {key}.", "what {attr} is listed for {key}?",
               "could you look up the {attr} registered under {key}?", "which {attr} does {key} carry?"),
    instructions=("", "", "Just the value, please.", "Keep it short."),
    answer_prefixes=("Sure, the {attr} for {key} is", "The recorded {attr} is", "Yes, {key}'s {attr} is",
                     "Reply:", "Based on the passage, the {attr} is", "The {attr} listed for {key} is",
                     "Here you go:", "It reads", "Value:", "{key}'s {attr} reads"),
    separators=("\n",),
    openings=("\n\n",),
    actions=(("lodged", "at"), ("stationed", "at"), ("docked", "at"), ("hosted", "at"), ("catalogued", "at"),
             ("archived", "at"), ("berthed", "at"), ("quartered", "at")),
    action_cores=("{key} is to be {pp} {prep} {value}", "{key} ended up {pp} {prep} {value}",
                  "{key} gets {pp} {prep} {value}", "{key} remains {pp} {prep} {value}"),
    action_questions=("{prep} what {noun} is {key} to be {pp}?", "could you say which {noun} {key} gets {pp} {prep}?",
                      "{prep} which {noun} did {key} end up {pp}?", "what {noun} does {key} remain {pp} {prep}?"),
    subject_nouns=("consignment", "voucher", "dossier", "manifest", "permit", "receipt", "docket", "crateload"),
    subject_cores=("{noun} {value} ended up {pp} {prep} {key}", "{noun} {value} remains {pp} {prep} {key}",
                   "it was {noun} {value} that got {pp} {prep} {key}"),
    subject_questions=("could you say which {noun} ended up {pp} {prep} {key}?",
                       "identify the {noun} that remains {pp} {prep} {key}.", "{key} has which {noun} {pp} {prep} it?"),
    subject_prefixes=("That would be {noun}", "Reply:", "The {noun} in question is"),
)


# ----------------------------------------------------------------------------------- values

_CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: they read as digits


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


# "free_code" (training only: weight 0 by default, so the benchmarks' values are unchanged) is a code of
# no fixed shape: any length 4-9, upper or lower case or hex, with or without one separator. "phrase" (weight 0 by
# default) is a span of words of running text ("eat a sandwich and sit in the park"), the answer of the
# best-known needle test: the held-out family's come from the held-out split of the bundled text, training's from
# the training text (`phrase_pool`)
VALUE_FORMATS = ("digits", "grouped", "thousands", "code", "word", "free_code", "phrase")
DEFAULT_VALUE_WEIGHTS = (0.60, 0.10, 0.07, 0.18, 0.05, 0.0, 0.0)  # in VALUE_FORMATS order


def _free_code(rng: random.Random) -> str:
    """A code of no fixed shape: 4-9 characters of one alphabet (upper case + digits, lower case + digits,
    hex), a letter first two times in three, sometimes split by one '-', '_' or '.'."""
    alphabet = rng.choice((_CODE_LETTERS + "0123456789", _CODE_LETTERS.lower() + "0123456789", "0123456789abcdef"))
    letters = [c for c in alphabet if c.isalpha()]
    n = rng.randint(4, 9)
    chars = [rng.choice(alphabet) for _ in range(n)]
    if rng.random() < 2 / 3:
        chars[0] = rng.choice(letters)
    elif chars[0] == "0":
        chars[0] = rng.choice("123456789")
    if n >= 5 and rng.random() < 0.4:
        chars.insert(rng.randint(2, n - 2), rng.choice("-_."))
    return "".join(chars)[:9]


def value_format(value: str) -> str:
    """Which VALUE_FORMATS shape a value has (for per-format scores): phrase (words and spaces), digits, grouped
    (digits and '-'), thousands (digits and ','), word (letters only), else code."""
    if " " in value.strip():
        return "phrase"
    if value.isdigit():
        return "digits"
    if value.replace("-", "").isdigit():
        return "grouped"
    if value.replace(",", "").isdigit():
        return "thousands"
    if value.isalpha():
        return "word"
    return "code"


def generated_syllables(exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Consonant-vowel and consonant-vowel-consonant syllables (~600) for invented-word values, less
    `exclude` (the held-out family's syllables), so the training words are not built from a list of 14."""
    cons, vowels, ends = "bcdfghjklmnprstvwz", "aeiou", "lmnrst"
    out = [c + v for c in cons for v in vowels] + [c + v + e for c in cons for v in vowels for e in ends]
    return tuple(s for s in out if s not in set(exclude))


_PHRASE_WORD = re.compile(r"[A-Za-z][a-z']*")


def phrase_pool(text: str, count: int = 4000, seed: int = 0, words: tuple[int, int] = (3, 10),
                avoid: str = "", long_word: int = 5, lower_only: bool = False,
                banned: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """`count` spans of `words` (min, max) words of `text` for phrase values: words of letters (and apostrophes) in
    one clause, no digits, punctuation or line break inside, at least one word of `long_word` letters or more, none
    twice. Drawn at random clauses (`seed`: the same text gives the same pool); a span that also occurs in `avoid` (the
    text a model trained on, for a held-out pool) is left out, and so is one with a capital (`lower_only`: no names)
    or a word of `banned`. The defaults draw the phrase values as they always were."""
    rng = random.Random(seed)
    clauses = [c for c in re.split(r"[^A-Za-z' ]+", text) if len(c.split()) >= words[0]]
    out: dict[str, None] = {}
    tries = 0
    while clauses and len(out) < count and tries < 20 * count:
        tries += 1
        tokens = rng.choice(clauses).split()
        if not all(_PHRASE_WORD.fullmatch(t) for t in tokens):
            continue
        n = rng.randint(words[0], min(words[1], len(tokens)))
        start = rng.randint(0, len(tokens) - n)
        span = " ".join(tokens[start:start + n])
        if max(map(len, tokens[start:start + n])) < long_word or span in out or (avoid and span in avoid):
            continue
        if (lower_only and not span.islower()) or (banned and banned & set(span.split())):
            continue
        out[span] = None
    return tuple(out)


HELDOUT_PHRASE_WORDS = (4, 10)  # the words of a held-out phrase value (heldout_phrases), fewest and most


@functools.lru_cache(maxsize=1)
def heldout_phrases() -> tuple[str, ...]:
    """Phrase values of the benchmarks and the held-out family: spans of 4-10 words of the bundled text's held-out
    split that the train split does not hold (the haystacks are cut from the held-out split too, so a span may also
    stand in the haystack at its own place: there it states nothing about a key). Four words at least, as a shorter
    span is often common English that any training text holds (3-word spans: 3% of them stand in the broad-v1
    training corpus, 4-word spans 1%)."""
    from sedpa_compress.data.text import load_bundled_text

    return phrase_pool(load_bundled_text("heldout"), count=2000, seed=7, words=HELDOUT_PHRASE_WORDS,
                       avoid=load_bundled_text("train"))


def sample_value(rng: random.Random, syllables: tuple[str, ...], digits: tuple[int, int] = (3, 9),
                 weights: tuple[float, ...] = DEFAULT_VALUE_WEIGHTS, phrases: Sequence[str] = ()) -> str:
    """A value in one of the formats users hide (`weights` over VALUE_FORMATS): plain digits (most),
    grouped digits, thousands separators, a short letter-digit code, an invented word, (training) a
    code of no fixed shape, or a phrase of running text (from `phrases`; none given: `heldout_phrases()`). At most
    9 characters but for a phrase. A format of weight 0 is never drawn and leaves the draws of the others as they
    were without it."""
    total = sum(weights)
    edges = [sum(weights[:i + 1]) / total for i in range(len(weights))]
    r = rng.random()
    if len(edges) > 6 and r >= edges[5]:  # a phrase (the last format): where r falls past free_code's edge
        return rng.choice(tuple(phrases) or heldout_phrases())
    if r < edges[0]:
        return _digits(rng, rng.randint(*digits))
    if r < edges[1]:  # 482-339, 4821-3390, 73-551-90
        groups = rng.choice(((3, 3), (4, 4), (2, 3, 2), (3, 4), (2, 2, 2)))
        return "-".join(_digits(rng, g) if i == 0 else "".join(str(rng.randint(0, 9)) for _ in range(g))
                        for i, g in enumerate(groups))
    if r < edges[2]:  # 48,213 or 1,204,551
        n = rng.randint(10_000, 9_999_999)
        return f"{n:,}"
    if r < edges[3]:  # XK-4821, B7Q2ZP, AX7-22B
        shape = rng.choice(("LL-DDDD", "LDLDLL", "LLD-DDL", "LLLDDD", "DLLD", "LDD-LD", "LLDDLL"))
        out = "".join(rng.choice(_CODE_LETTERS) if c == "L" else str(rng.randint(0, 9)) if c == "D" else c
                      for c in shape)
        return out
    if len(edges) > 4 and r >= edges[4]:
        return _free_code(rng)
    parts = [rng.choice(syllables) for _ in range(rng.randint(2, 3))]
    word = "".join(parts) if len("".join(parts)) <= 9 else "".join(parts[:2])
    return word.capitalize()


# ----------------------------------------------------------------------------------- the family

def _no_repeat(attribute: str) -> str:
    """An attribute without a word twice in a row: the held-out family's "reference" is a modifier and a noun,
    and "reference reference" is no wording a person writes (3 of the 5 such cells of stage 12's acceptance
    were misses); the repeat is dropped, so the draws of every other attribute stay as they were."""
    words = attribute.split(" ")
    return " ".join(w for i, w in enumerate(words) if i == 0 or w != words[i - 1])


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def insert_words(text: str, words: Sequence[str], count: int, rng: random.Random, keep: Sequence[str] = (),
                 last: bool = True, apart: Sequence[str] = ()) -> str:
    """`text` with `count` words drawn from `words` put between its words, at random gaps: not inside any
    phrase of `keep` (a key, an attribute: they must still match the needle), nor inside or right beside a phrase
    of `apart` (a value: a word next to it could be read as part of it), and after the last word only if `last`,
    never before the first. Unchanged when there is no such gap."""
    tokens = text.split(" ")
    starts = [0]  # where each token starts in text
    for t in tokens[:-1]:
        starts.append(starts[-1] + len(t) + 1)
    lowered = text.lower()
    inside: set[int] = set()  # gaps g (before token g) inside a kept phrase
    for phrase, beside in [(k.lower(), False) for k in keep if k] + [(a.lower(), True) for a in apart if a]:
        at = lowered.find(phrase)
        while at >= 0:
            end = at + len(phrase)
            over = [t for t, st in enumerate(starts) if st < end and st + len(tokens[t]) > at]  # tokens it touches
            inside |= set(range(over[0] + 1, over[-1] + 1))  # the gap before token g is gap g
            if beside:
                inside |= {over[0], over[-1] + 1}
            at = lowered.find(phrase, at + 1)
    gaps = [g for g in range(1, len(tokens) + (1 if last else 0)) if g not in inside]  # never before the first
    if not gaps:
        return text
    for _ in range(count):
        g = rng.choice(gaps)
        tokens.insert(g, rng.choice(words))
        gaps = [x + 1 if x > g else x for x in gaps] + [g + 1]  # the gaps after the new word move one along
    return " ".join(tokens)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class WordingFamily:
    """Draws needles, questions and answer prefixes from one family's vocabulary and phrasing.

    Offers the interface of `data.needles.NeedleTemplates` (sample_needles, render_needle,
    render_question, sample_value, keys, attributes, needle_frames, question_frames, value_digits),
    plus `render_tail`, which also varies the separators around the question."""

    name: str
    vocab: Vocabulary
    phrasing: Phrasing
    value_digits: tuple[int, int] = (3, 9)
    words: tuple[str, ...] = ()  # plain lower-case English words for procedural keys and attributes
    value_weights: tuple[float, ...] = DEFAULT_VALUE_WEIGHTS  # over VALUE_FORMATS
    value_syllables: tuple[str, ...] = ()  # invented-word values' syllables (empty: the vocabulary's)
    phrases: tuple[str, ...] = ()  # phrase values (empty: heldout_phrases(); training sets its own: phrase_pool)
    corpus_word_values: float = 0.0  # share of word values that are a real word of `words` ("pineapple")
    random_verb_share: float = 0.25  # share of procedural verbs that are random words ("is harvest", "lantern")
    key_syllables: tuple[str, ...] = ()  # invented keys' and attributes' syllables (empty: the vocabulary's)
    # particles a random joining word may end with ("is harvest on", "lantern as"): a value after a preposition,
    # not only after a verb (empty: none, and the random draws are those of a family without them)
    verb_particles: tuple[str, ...] = ()
    # share of answer prefixes that echo the needle's own sentence up to its value ("Dr. Patel can be paged at"),
    # as a user who restates the fact writes them: the value comes right after whatever words the prefix ends
    # with (0: none, and the random draws are those of a family without them)
    echo_prefix_share: float = 0.0
    # share of needle groups that are action needles (Phrasing.actions: "{key} can be phoned on {value}", asked as "On
    # what number can {key} be phoned?"); 0: none, and the random draws are those of a family without them
    action_share: float = 0.0
    # share of action needle groups in the subject form (Phrasing.subject_cores: "Crate 4821 was sent to Lisbon",
    # asked as "Which crate was sent to Lisbon?"); 0: none, and the random draws are those of a family without them
    subject_share: float = 0.0
    # share of questions and answer prefixes with one or two random words of `words` slipped in between their words
    # (never inside the key or the attribute; never after a prefix's last word), half of those also followed by a
    # sentence of random words, as an instruction no list holds: the value must follow a question and a prefix of
    # words never seen there ("The recorded vault reference is"), not only the listed ones (0: none, and the random
    # draws are those of a family without it)
    noise_share: float = 0.0
    # the same for needle statements: one or two random words slipped into the core ("Remember: the safe code lamp
    # of Oslo is 4821"), never inside key, attribute or action, nor right beside the value (0: none, and the random
    # draws are those of a family without it)
    needle_noise_share: float = 0.0
    # share of attribute needles' tails written with spans of running text (`tail_spans`: 1-5 lower-case words of the
    # corpus, everyday words and function words in the order text uses them) around the key and the attribute, in
    # place of a listed or procedural frame ("and so it was the vault code that Oslo?" / "When you have read it:"):
    # the value must follow a question and a prefix of any ordinary words. No such tail holds three words in a row
    # of a held-out frame (`_heldout_trigrams`), so the held-out wordings stay unseen (0: none, and the random draws
    # are those of a family without it)
    span_tail_share: float = 0.0
    tail_spans: tuple[str, ...] = ()

    # ---- keys and attributes
    def _wild(self, rng: random.Random) -> bool:
        return bool(self.words) and rng.random() < self.phrasing.wild

    def sample_key(self, rng: random.Random) -> str:
        v = self.vocab
        if self._wild(rng):  # any words at all: "the harvest lamp", "Morning", "the office of Paul"
            w = self.words
            return rng.choice((f"the {rng.choice(w)} {rng.choice(w)}", rng.choice(w).capitalize(),
                               f"the {rng.choice(w)}", f"{rng.choice(w).capitalize()} {rng.choice(w).capitalize()}"))
        r = rng.random()
        if r < 0.22:
            return rng.choice(v.first_names)
        if r < 0.32:
            return f"{rng.choice(v.first_names)} {rng.choice(v.surnames)}"
        if r < 0.37:
            return f"{rng.choice(('Dr.', 'Mr.', 'Ms.', 'Professor'))} {rng.choice(v.surnames)}"
        if r < 0.55:
            return rng.choice(v.places)
        if r < 0.77:
            return f"the {rng.choice(v.colours)} {rng.choice(v.things)}"
        if r < 0.85:
            word = self.pseudo_word(rng)
            return rng.choice(v.groups).format(W=word, w=word.lower())
        return self.pseudo_word(rng)

    def pseudo_word(self, rng: random.Random) -> str:
        syllables = self.key_syllables or self.vocab.syllables
        return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()

    def sample_attribute(self, rng: random.Random) -> str:
        v = self.vocab
        if self._wild(rng):  # "harvest number", "window code", "zorbel", "silent river key"
            w = self.words
            attr = rng.choice((f"{rng.choice(w)} {rng.choice(v.nouns)}", f"{rng.choice(w)} {rng.choice(w)}",
                               self.pseudo_word(rng).lower(), f"{rng.choice(w)} {rng.choice(w)} {rng.choice(v.nouns)}"))
            return _no_repeat(attr)
        if rng.random() < 0.25:
            return rng.choice(v.bare_attributes)
        return _no_repeat(f"{rng.choice(v.modifiers)} {rng.choice(v.nouns)}")

    @property
    def keys(self) -> tuple[str, ...]:
        """Representative keys: every fixed key shape, and the longest procedural ones (callers that
        budget tokens take the longest of this list as an upper bound)."""
        v = self.vocab
        objects = tuple(f"the {c} {t}" for c in v.colours for t in v.things)
        people = tuple(f"{f} {s}" for f in v.first_names for s in v.surnames)
        longest = sorted(self.words, key=len)[-2:]
        wild = (f"the {longest[0]} {longest[-1]}", f"{longest[0].capitalize()} {longest[-1].capitalize()}") \
            if self.words else ()
        return v.first_names + v.places + objects + people + wild

    @property
    def attributes(self) -> tuple[str, ...]:
        v = self.vocab
        fixed = v.bare_attributes + tuple(f"{m} {n}" for m in v.modifiers for n in v.nouns if m != n)
        if not self.words:
            return fixed
        longest = sorted(self.words, key=len)[-2:]
        return fixed + (f"{longest[0]} {longest[-1]} {max(v.nouns, key=len)}",)

    def sample_value(self, rng: random.Random) -> str:
        value = sample_value(rng, self.value_syllables or self.vocab.syllables, self.value_digits, self.value_weights,
                             self.phrases)
        if self.corpus_word_values and self.words and value.isalpha() and rng.random() < self.corpus_word_values:
            word = rng.choice(self.words)  # a real word, as written in text or capitalised
            value = word.capitalize() if rng.random() < 0.5 else word
        return value

    def _verb(self, rng: random.Random) -> str:
        """What joins attribute and value: a listed verb, or (`random_verb_share` of the time, a quarter by
        default) one or two random words ("is harvest", "lantern") so that no connecting phrase is needed to
        find the value."""
        if self.words and rng.random() < self.random_verb_share:
            w = self.words
            verb = rng.choice((rng.choice(w), f"{rng.choice(w)} {rng.choice(w)}", f"is {rng.choice(w)}",
                               f"{rng.choice(self.phrasing.verbs)} {rng.choice(w)}"))
            if self.verb_particles and rng.random() < 0.4:
                verb = f"{verb} {rng.choice(self.verb_particles)}"
            return verb
        return rng.choice(self.phrasing.verbs)

    def with_corpus_words(self, text: str, limit: int = 4000, wild: float | None = None,
                          exclude: "WordingFamily | None" = None) -> "WordingFamily":
        """This family with its procedural words widened by up to `limit` words of `text` (lower-case,
        3-9 letters, the most frequent after the function words first), less every word of `exclude`'s vocabulary and phrasing (so
        the held-out family stays held out), and optionally another share of procedural slots."""
        import collections
        import re

        banned = family_words(exclude) if exclude is not None else set()
        counts = collections.Counter(re.findall(r"\b[a-z]{3,9}\b", text))
        ranked = [w for w, _ in counts.most_common()]
        # the 150 most frequent are function words ("and", "unto"): they make keys that are no names
        extra = [w for w in ranked[150:] if w not in banned][:limit]
        words = tuple(dict.fromkeys(self.words + tuple(extra)))
        phrasing = self.phrasing if wild is None else dataclasses.replace(self.phrasing, wild=wild)
        return dataclasses.replace(self, words=words, phrasing=phrasing)

    # ---- needles
    def sample_action(self, rng: random.Random) -> tuple[str, str] | None:
        """An action for the next needle group, `action_share` of the time (no draw at all when it is 0)."""
        if self.action_share and self.phrasing.actions and rng.random() < self.action_share:
            return rng.choice(self.phrasing.actions)
        return None

    def sample_subject(self, rng: random.Random, action: tuple[str, str] | None) -> bool:
        """Whether an action needle group takes the subject form, `subject_share` of the time (no draw when 0)."""
        return bool(action and self.subject_share and self.phrasing.subject_cores
                    and rng.random() < self.subject_share)

    def render_needle(self, key: str, value: str, attr: str, rng: random.Random,
                      action: tuple[str, str] | None = None, subject: bool = False) -> Needle:
        """`attr` is the attribute the sentence names or, for an `action` needle, the noun its question asks with
        (for a `subject` needle, the noun of the thing the value names, which the sentence says)."""
        p = self.phrasing
        if action is not None and subject:
            core = rng.choice(p.subject_cores).format(noun=attr, value=value, pp=action[0], prep=action[1], key=key)
        elif action is not None:
            core = rng.choice(p.action_cores).format(key=key, pp=action[0], prep=action[1], value=value)
        elif self._wild(rng) and p.verbs:
            verb, link = self._verb(rng), rng.choice(p.links)
            core = rng.choice((f"the {attr} {link} {key} {verb} {value}", f"{key}'s {attr} {verb} {value}",
                               f"{value} {verb} the {attr} {link} {key}", f"for {key}, the {attr} {verb} {value}",
                               f"the {attr} {verb} {value} for {key}", f"{key} {attr}: {value}"))
        else:
            core = rng.choice(p.cores).format(key=key, attr=attr, value=value)
        if self.needle_noise_share and self.words and rng.random() < self.needle_noise_share:
            joined = [f"{action[0]} {action[1]}"] if action is not None else []  # the action a question asks by
            core = insert_words(core, self.words, rng.randint(1, 2), rng, [key, attr] + joined, apart=[value])
        lead = rng.choice(p.lead_ins)
        # what opens a sentence is capitalised, except the value: the answer is the value as written ("a48f",
        # not "A48f"), so the needle must hold it letter for letter
        body = _cap(core) if (not lead or lead.endswith(":")) and not core.startswith(value) else core
        sentence = _join(_join(lead, body) + ".", rng.choice(p.trailers))
        return Needle(key=key, value=value, sentence=sentence if sentence.startswith(value) else _cap(sentence),
                      attribute=attr, action=action, subject=subject and action is not None)

    def sample_needles(self, rng: random.Random, num: int, attribute: str | None = None) -> list[Needle]:
        """`num` needles with distinct keys and values sharing one attribute, or one action (the key must be
        matched)."""
        action = self.sample_action(rng) if attribute is None else None
        subject = self.sample_subject(rng, action)
        attr = attribute or (rng.choice(self.phrasing.subject_nouns) if subject else
                             rng.choice(self.vocab.nouns) if action else self.sample_attribute(rng))
        keys = distinct(lambda: self.sample_key(rng), num)
        values = distinct(lambda: self.sample_value(rng), num)
        return [self.render_needle(k, val, attr, rng, action, subject) for k, val in zip(keys, values)]

    # ---- questions
    def render_question(self, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """(question, answer prefix) asking for `needle`'s value; the prefix may be empty."""
        p = self.phrasing
        attr = needle.attribute or self.sample_attribute(rng)
        fill = dict(key=needle.key, attr=attr)
        wild = needle.action is None and self._wild(rng) and bool(p.asks)
        if needle.action is not None and needle.subject:
            pp, prep = needle.action
            fill = dict(noun=attr, pp=pp, prep=prep, key=needle.key)
            preamble, core = rng.choice(p.preambles), rng.choice(p.subject_questions).format(**fill)
            question = _join(preamble, core if preamble.endswith(",") else _cap(core))
            question = _join(question, rng.choice(p.instructions).format(key=needle.key, attr=attr))
            return _cap(question), _cap(rng.choice(p.subject_prefixes).format(**fill))
        if needle.action is not None:
            pp, prep = needle.action
            core = rng.choice(p.action_questions).format(key=needle.key, pp=pp, prep=prep, noun=attr)
        elif wild:
            ask, link = rng.choice(p.asks), rng.choice(p.links)
            core = rng.choice((f"{ask} the {attr} {link} {needle.key}.", f"{ask} {needle.key}'s {attr}.",
                               f"the {attr} {link} {needle.key}?", f"{needle.key}, {attr}?",
                               f"{ask} the {attr} {link} {needle.key} from the text above."))
        else:
            core = rng.choice(p.questions).format(**fill)
        preamble = rng.choice(p.preambles)
        question = _join(preamble, core if preamble.endswith(",") else _cap(core))
        question = _join(question, rng.choice(p.instructions).format(**fill))
        if self._wild(rng) and p.verbs:
            verb, link = self._verb(rng), rng.choice(p.links)
            w = self.words
            prefix = rng.choice((f"{rng.choice(p.labels)}:", f"The {attr} {link} {needle.key} {verb}",
                                 f"{needle.key}'s {attr} {verb}", f"The {attr} {verb}", f"{rng.choice(w)} {verb}",
                                 f"{rng.choice(w).capitalize()} {rng.choice(w)} {rng.choice(w)}:",
                                 f"So the {attr} {verb}", f"{rng.choice(p.labels)} -", f"{attr}:"))
        else:
            prefix = rng.choice(p.answer_prefixes).format(**fill)
        return _cap(question), _cap(prefix)

    def render_tail(self, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """(text after the haystack up to the answer, the answer text the model should write):
        opening + question + separator + answer prefix, and " value" (or "value" right after a newline)."""
        if self.span_tail_share and self.tail_spans and needle.action is None and rng.random() < self.span_tail_share:
            question, prefix = self._span_tail(needle, rng)
        else:
            question, prefix = self.render_question(needle, rng)
        if self.noise_share and self.words and rng.random() < self.noise_share:
            question, prefix = self._noisy(question, prefix, needle, rng)
        if self.echo_prefix_share and rng.random() < self.echo_prefix_share:
            echo = needle.sentence[:needle.sentence.find(needle.value)].rstrip()
            prefix = echo or prefix  # a sentence that opens with its value has nothing to echo
        opening = rng.choice(self.phrasing.openings)
        sep = rng.choice(self.phrasing.separators)
        if not prefix:
            sep = "\n"  # a bare answer goes on its own line
            return opening + question + sep, needle.value
        return opening + question + sep + prefix, " " + needle.value

    def _span_tail(self, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """(question, answer prefix) of running-text spans around the key and the attribute (`span_tail_share`);
        drawn again while one holds a held-out frame's three words in a row (a listed question after five tries)."""
        attr, key = needle.attribute or self.sample_attribute(rng), needle.key
        banned = _heldout_trigrams()
        for _ in range(5):
            def span() -> str:
                return rng.choice(self.tail_spans)

            def maybe(p: float) -> str:
                return span() if rng.random() < p else ""

            ask = rng.choice((f"the {attr} {span()} {key}", f"{key}'s {attr}", f"{attr} {span()} {key}",
                              f"{key} {span()} the {attr}", f"the {attr} of {key}", f"{key} {attr}"))
            question = _join(maybe(0.8), ask, maybe(0.4)) + rng.choice(("?", "?", "?", ".", ""))
            if rng.random() < 0.3:  # a preamble, as a sentence or a clause
                question = _join(_cap(span()) + rng.choice((".", ",", ":")), question)
            if rng.random() < 0.3:  # an instruction after the question
                question = _join(_cap(question), _cap(span()) + ".")
            prefix = rng.choice((_cap(span()), _cap(span()) + ":", _cap(_join(maybe(0.5), f"the {attr}", span())),
                                 _cap(_join(maybe(0.5), f"{key}'s {attr}", span())), _cap(span()) + ", " + span(),
                                 _cap(span()) + " -", ""))
            words = re.findall(r"[a-z']+", f"{question} {prefix}".lower())
            if not {" ".join(words[i:i + 3]) for i in range(len(words) - 2)} & banned:
                return _cap(question), prefix
        return self.render_question(needle, rng)

    def _noisy(self, question: str, prefix: str, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """`question` and `prefix` with random words slipped in (`noise_share`): what names the needle stays whole."""
        keep = [needle.key, needle.attribute or ""]
        question = insert_words(question, self.words, rng.randint(1, 2), rng, keep)
        if prefix:
            prefix = insert_words(prefix, self.words, rng.randint(1, 2), rng, keep, last=False)
        if rng.random() < 0.5:
            w = self.words
            question += " " + _cap(" ".join(rng.choice(w) for _ in range(rng.randint(2, 5)))) + "."
        return question, prefix

    # ---- upper bounds for callers that budget tokens (heads/synthetic.py)
    @property
    def needle_frames(self) -> tuple[str, ...]:
        """Every core statement with the longest lead-in and trailer (an upper bound on sentence length)."""
        p = self.phrasing
        lead, trail = max(p.lead_ins, key=len), max(p.trailers, key=len)
        return tuple(_cap(_join(lead, c)) + ". " + trail for c in p.cores)

    @property
    def question_frames(self) -> tuple[tuple[str, str], ...]:
        """Every question core with the longest preamble and instruction, paired with every prefix."""
        p = self.phrasing
        pre, ins = max(p.preambles, key=len), max(p.instructions, key=len)
        return tuple((_join(pre, q, ins), a) for q in p.questions for a in p.answer_prefixes)


# what a random joining word may end with (`WordingFamily.verb_particles`, recipes' wording_verb_particles); none
# is a word right before the value in a held-out core ("stands at {value}": `check_disjoint` says if one is)
VERB_PARTICLES = ("to", "as", "on", "in", "into", "near", "about", "around", "up", "over", "from", "after", "like")

_COMMON_WORDS = (
    "apple", "river", "morning", "window", "silver", "garden", "harbor", "lantern", "meadow", "village",
    "pencil", "winter", "summer", "forest", "castle", "bridge", "market", "island", "valley", "mountain",
    "candle", "mirror", "planet", "rocket", "signal", "engine", "circle", "shadow", "thunder", "crystal",
    "ocean", "desert", "falcon", "tiger", "rabbit", "dragon", "phoenix", "anchor", "compass", "harvest",
    "copper", "cotton", "marble", "paper", "plastic", "wooden", "purple", "orange", "violet", "scarlet",
    "basket", "bottle", "button", "carpet", "doctor", "farmer", "hunter", "pilot", "sailor", "singer",
    "teacher", "writer", "captain", "chief", "queen", "prince", "bishop", "knight", "server", "cluster",
    "module", "socket", "thread", "buffer", "kernel", "parser", "router", "widget", "sensor", "battery",
    "office", "kitchen", "cellar", "attic", "station", "airport", "hotel", "museum", "school", "church",
    "alpha", "beta", "gamma", "delta", "omega", "zenith", "nadir", "polar", "lunar", "solar", "quiet",
    "hidden", "broken", "golden", "frozen", "silent", "secret", "simple", "strange", "little", "ancient",
)
TRAIN_WORDINGS = WordingFamily("train", TRAIN_VOCAB, TRAIN_PHRASING, words=_COMMON_WORDS)
# Head identification's passkeys (DuoAttention's recipe packs 10 into contexts from 1K tokens): the
# training family without lead-ins, trailers, preambles, instructions or procedural slots, so ten
# needles and their questions fit in 1K tokens of a 7-8B model's tokenizer.
TRAIN_WORDINGS_COMPACT = WordingFamily("train-compact", TRAIN_VOCAB, dataclasses.replace(
    TRAIN_PHRASING, lead_ins=("",), trailers=("",), preambles=("",), instructions=("",), wild=0.0,
    answer_prefixes=tuple(a for a in TRAIN_PHRASING.answer_prefixes if len(a) <= 32)))
# a quarter of its needle groups are action needles, half of those in the subject form: the held-out family
# measures them too
HELDOUT_WORDINGS = WordingFamily("heldout", HELDOUT_VOCAB, HELDOUT_PHRASING, value_digits=(4, 8), action_share=0.25,
                                 subject_share=0.5)


@functools.lru_cache(maxsize=1)
def _heldout_trigrams() -> frozenset[str]:
    """Every three words in a row of the held-out family's written frames (between slots, lower case): a training
    tail of running-text spans holding one is drawn again (`WordingFamily.span_tail_share`)."""
    p = HELDOUT_PHRASING
    parts = (p.lead_ins + p.cores + p.trailers + p.preambles + p.questions + p.instructions + p.answer_prefixes
             + p.action_cores + p.action_questions + p.subject_cores + p.subject_questions + p.subject_prefixes)
    out: set[str] = set()
    for part in parts:
        for piece in re.split(r"\{\w+\}", part.lower()):
            words = re.findall(r"[a-z']+", piece)
            out |= {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}
    return frozenset(out)


def tail_span_pool(text: str, exclude: "WordingFamily", count: int = 50_000, seed: int = 0) -> tuple[str, ...]:
    """The running-text spans of span tails (`WordingFamily.span_tail_share`): 1-5 lower-case words of one clause of
    `text`, none a word of `exclude`'s vocabulary (its names, places, objects, attributes: the held-out keys and
    attributes stay unseen; its frames are kept out by `_heldout_trigrams`)."""
    v = exclude.vocab
    vocab = (v.first_names + v.surnames + v.places + v.colours + v.things + v.modifiers + v.nouns + v.bare_attributes)
    banned = frozenset(w for x in vocab for w in re.findall(r"[a-z]+", x.lower()))
    return phrase_pool(text, count=count, seed=seed, words=(1, 5), long_word=0, lower_only=True, banned=banned)


def family_words(family: WordingFamily) -> set[str]:
    """Every lower-case word a family's fixed vocabulary and phrasing use (slots left out)."""
    import re

    v, p = family.vocab, family.phrasing
    parts = (v.first_names + v.surnames + v.places + v.colours + v.things + v.groups + v.modifiers + v.nouns
             + v.bare_attributes + p.lead_ins + p.cores + p.trailers + p.preambles + p.questions + p.instructions
             + p.answer_prefixes + p.action_cores + p.action_questions + tuple(" ".join(a) for a in p.actions)
             + p.subject_nouns + p.subject_cores + p.subject_questions + p.subject_prefixes)
    text = " ".join(re.sub(r"\{\w+\}", " ", x) for x in parts).lower()
    return set(re.findall(r"[a-z]+", text))


def check_disjoint(a: WordingFamily = TRAIN_WORDINGS, b: WordingFamily = HELDOUT_WORDINGS) -> list[str]:
    """What the two families share (should be nothing but empty parts and value formats). The
    training family's procedural words and verbs must not rebuild a held-out phrase either: none of
    them may be a word of the held-out keys or a verb or link of its cores."""
    shared: list[str] = []
    heldout_words = {w.lower().strip(".,:'") for k in b.keys for w in k.split()} - {"the"}
    shared += [f"procedural word: {w!r}" for w in sorted(set(a.words) & heldout_words)]
    heldout_cores = " ".join(b.phrasing.cores)
    before_value = {c.split("{value}")[0].split()[-1].strip(":") for c in b.phrasing.cores
                    if "{value}" in c and c.split("{value}")[0].split()}
    before_value |= {prep for _, prep in b.phrasing.actions}
    shared += [f"verb particle right before a held-out value: {w!r}"
               for w in sorted(set(a.verb_particles) & before_value)]
    shared += [f"action preposition right before a held-out value: {prep!r}"
               for prep in sorted({prep for _, prep in a.phrasing.actions} & before_value)]
    heldout_action_text = " ".join(b.phrasing.cores + b.phrasing.action_cores + b.phrasing.action_questions
                                   + b.phrasing.subject_cores + b.phrasing.subject_questions
                                   + tuple(pp for pp, _ in b.phrasing.actions))
    shared += [f"action also in the held-out family: {pp!r}"
               for pp in sorted({pp for pp, _ in a.phrasing.actions}) if f" {pp} " in f" {heldout_action_text} "]
    for verb in a.phrasing.verbs + a.phrasing.links:
        if verb not in ("is", "was", "of", "for") and f" {verb} " in f" {heldout_cores} ":
            shared.append(f"verb or link also in a held-out core: {verb!r}")
    for part in ("lead_ins", "cores", "trailers", "preambles", "questions", "instructions", "answer_prefixes",
                 "action_cores", "action_questions", "subject_nouns", "subject_cores", "subject_questions",
                 "subject_prefixes"):
        common = (set(getattr(a.phrasing, part)) & set(getattr(b.phrasing, part))) - {""}
        shared += [f"{part}: {c!r}" for c in sorted(common)]
    for part in ("first_names", "surnames", "places", "syllables"):
        shared += [f"{part}: {c!r}" for c in sorted(set(getattr(a.vocab, part)) & set(getattr(b.vocab, part)))]
    shared += [f"attribute: {c!r}" for c in sorted(set(a.attributes) & set(b.attributes))]
    shared += [f"object key: {c!r}" for c in sorted(set(a.keys) & set(b.keys))]
    return shared
