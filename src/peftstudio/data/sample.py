"""The bundled instruction-tuning sample data and the embedded model's background text.

Every sample row is a short task whose answer a person can check at a glance (the capital
of a country, the opposite of a word, 2 + 3, ...), so a fine-tuning run on the embedded tiny
model shows visibly whether the adapter learned something. Rows have the alpaca shape
`{"instruction", "input", "output"}`; `input` is "" when the instruction says it all.

The background text states the same facts as plain text: sentences ("Paris is the capital
of France.") and dictionary-style entries ("France\\nCapital: Paris"). The embedded model is
pretrained on it (see `peftstudio.model.embedded`), so the base model knows the facts but has
never seen an instruction, a question or a chat turn; fine-tuning on the sample rows teaches
it to answer. The many phrasings per fact matter: a fact seen in one sentence shape only is
much harder for a small adapter to pull out in a new (question) shape. With two shapes per
fact, LoRA runs on the sample data got about 40% of held-out prompts right, and whether a
run got there at all depended on its seed; with the current mix, 80-95%.

`python -m peftstudio.data.sample` rewrites `data/sample.jsonl`; the file is
committed, so the generator only runs when the task mix changes. Everything is generated
from private `random.Random(seed)` instances, never the global random state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SAMPLE_DATA_PATH = Path(__file__).resolve().parent / "sample.jsonl"
JSON_SAMPLE_DATA_PATH = Path(__file__).resolve().parent / "sample_json.jsonl"

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Hungary", "Budapest"),
    ("Cuba", "Havana"), ("Thailand", "Bangkok"), ("Australia", "Canberra"), ("Iran", "Tehran"),
    ("Ghana", "Accra"), ("Argentina", "Buenos Aires"),
)

# Each word appears once, so the opposite is unambiguous in both directions.
ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("light", "dark"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("hard", "soft"),
    ("high", "low"), ("long", "short"), ("new", "old"), ("rich", "poor"), ("strong", "weak"),
    ("wet", "dry"), ("left", "right"), ("day", "night"), ("true", "false"), ("win", "lose"),
    ("push", "pull"), ("loud", "quiet"), ("thick", "thin"), ("clean", "dirty"), ("buy", "sell"),
    ("first", "last"), ("love", "hate"), ("inside", "outside"), ("above", "below"), ("friend", "enemy"),
)

WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "bread", "chair", "house", "music", "water",
    "green", "horse", "lemon", "paper", "smile", "train", "plant", "ocean", "queen", "zebra",
    "mouse", "candle", "garden", "rocket", "violin", "pencil", "forest", "island", "kitten", "window",
    "cat", "dog", "sun", "moon", "tree", "bird", "fish", "book", "milk", "star",
)

NUMBER_NAMES: tuple[str, ...] = ("two", "three", "four")

# Sums of 0..5 + 0..5: 36 facts the tiny model memorises during its short pretraining
# (0..20 would be 441, far too many for the build's time budget).
LARGEST_ADDEND = 5
# Lists to reverse have two words: reversing three is an algorithm the tiny model does not
# pick up reliably in its short pretraining, swapping two is.
REVERSE_LENGTH = 2

Row = dict[str, str]


def _row(instruction: str, output: str, input_text: str = "") -> Row:
    return {"instruction": instruction, "input": input_text, "output": output}


def _reverse_words(rng: random.Random) -> Row:
    words = rng.sample(WORDS, REVERSE_LENGTH)
    return _row("Reverse the order of these words.", " ".join(reversed(words)), " ".join(words))


def _uppercase(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    return _row("Write this word in capital letters.", word.upper(), word)


def _capital(rng: random.Random) -> Row:
    country, city = rng.choice(CAPITALS)
    return _row(f"What is the capital of {country}?", city)


def _antonym(rng: random.Random) -> Row:
    pair = rng.choice(ANTONYMS)
    # Ask in both directions so the pair is learned as a relation, not a one-way lookup.
    word, opposite = pair if rng.random() < 0.5 else pair[::-1]
    return _row("Give the opposite of this word.", opposite, word)


def _addition(rng: random.Random) -> Row:
    left, right = rng.randint(0, LARGEST_ADDEND), rng.randint(0, LARGEST_ADDEND)
    return _row(f"What is {left} + {right}?", str(left + right))


def _repeat(rng: random.Random) -> Row:
    times = rng.randint(2, 4)
    word = rng.choice(WORDS)
    return _row(f"Repeat the word {NUMBER_NAMES[times - 2]} times.", " ".join([word] * times), word)


def _first_letter(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    return _row("What is the first letter of this word?", word[0], word)


def _sort_numbers(rng: random.Random) -> Row:
    numbers = rng.sample(range(10), 3)
    return _row(
        "Sort these numbers from smallest to largest.",
        " ".join(str(n) for n in sorted(numbers)),
        " ".join(str(n) for n in numbers),
    )


TASKS: tuple[Callable[[random.Random], Row], ...] = (
    _reverse_words, _uppercase, _capital, _antonym, _addition, _repeat, _first_letter, _sort_numbers,
)


def generate_sample_rows(count: int = 600, seed: int = 1234) -> list[Row]:
    """Return `count` alpaca-shaped rows, the same ones for the same `count` and `seed`.

    Tasks take turns so every task gets an equal share whatever `count` is; the finished
    list is shuffled with the same private generator (never the global `random` state).
    """
    rng = random.Random(seed)
    rows = [TASKS[index % len(TASKS)](rng) for index in range(count)]
    rng.shuffle(rows)
    return rows


def _background_capital(rng: random.Random) -> str:
    country, city = rng.choice(CAPITALS)
    return rng.choice((
        f"{city} is the capital of {country}.",
        f"The capital of {country} is {city}.",
        f"{country} has its capital in {city}.",
        f"In {country}, the capital city is {city}.",
        f"{country}: capital {city}.",
        f"The capital of {country}, as every map shows, is {city}.",
        f"{country}\nCapital: {city}",
    ))


def _background_antonym(rng: random.Random) -> str:
    pair = rng.choice(ANTONYMS)
    word, opposite = pair if rng.random() < 0.5 else pair[::-1]
    return rng.choice((
        f"The opposite of {word} is {opposite}.",
        f"{word} and {opposite} are opposites.",
        f"{opposite} is the opposite of {word}.",
        f"Not {word} but {opposite}.",
        f"{word}: opposite {opposite}.",
        f"The opposite of {word}, as everyone knows, is {opposite}.",
        f"{word}\nOpposite: {opposite}",
    ))


def _background_capital_letters(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    return rng.choice((
        f"{word} in capitals is {word.upper()}.",
        f"The sign said {word.upper()}, that is {word}.",
        f"Written in big letters, {word} becomes {word.upper()}.",
        f"{word}: capitals {word.upper()}.",
        f"{word}, written in capital letters, is {word.upper()}.",
        f"{word}\nIn capitals: {word.upper()}",
    ))


def _background_spelling(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    return rng.choice((
        f"{word} starts with {word[0]}.",
        f"The word {word} begins with the letter {word[0]}.",
        f"{word[0]} is for {word}.",
        f"{word}: first {word[0]}.",
        f"The word {word}, as you can hear, begins with {word[0]}.",
        f"{word}\nFirst letter: {word[0]}",
    ))


def _background_arithmetic(rng: random.Random) -> str:
    left, right = rng.randint(0, LARGEST_ADDEND), rng.randint(0, LARGEST_ADDEND)
    total = left + right
    return rng.choice((
        f"{left} plus {right} makes {total}.",
        f"{left} + {right} = {total}",
        f"Add {left} and {right} to get {total}.",
        f"{left} and {right} together are {total}.",
        f"{left} plus {right}, as you can count, makes {total}.",
        f"{left} + {right}\nTotal: {total}",
    ))


def _background_repetition(rng: random.Random) -> str:
    word, times = rng.choice(WORDS), rng.randint(2, 4)
    said = " ".join([word] * times)
    return rng.choice((
        f"Say {word} {NUMBER_NAMES[times - 2]} times: {said}.",
        f"{NUMBER_NAMES[times - 2]} times {word}: {said}.",
        f"{word}, {NUMBER_NAMES[times - 2]} times over: {said}.",
        f"{word}\n{NUMBER_NAMES[times - 2].capitalize()} times: {said}",
    ))


def _background_reversal(rng: random.Random) -> str:
    words = rng.sample(WORDS, REVERSE_LENGTH)
    forward, backward = " ".join(words), " ".join(reversed(words))
    return rng.choice((
        f"{forward} backwards is {backward}.",
        f"Read from the end, {forward} becomes {backward}.",
        f"{forward}: reversed {backward}.",
        f"{forward}\nBackwards: {backward}",
    ))


def _background_ordering(rng: random.Random) -> str:
    numbers = rng.sample(range(10), 3)
    given, ordered = " ".join(map(str, numbers)), " ".join(map(str, sorted(numbers)))
    return rng.choice((
        f"In order, {given} becomes {ordered}.",
        f"Smallest first, {given} reads {ordered}.",
        f"{given}: sorted {ordered}.",
        f"{given}\nIn order: {ordered}",
    ))


BACKGROUND_KINDS: tuple[Callable[[random.Random], str], ...] = (
    _background_capital, _background_antonym, _background_capital_letters, _background_spelling,
    _background_arithmetic, _background_repetition, _background_reversal, _background_ordering,
)


def generate_background_text(count: int = 20000, seed: int = 1234) -> list[str]:
    """Return `count` plain sentences stating the facts behind the sample tasks.

    This is the embedded model's pretraining text: declarative sentences with no
    instructions, no questions and no chat turns. Kinds take turns so each gets an equal share.
    """
    rng = random.Random(seed)
    return [BACKGROUND_KINDS[index % len(BACKGROUND_KINDS)](rng) for index in range(count)]


# The task each instruction of the sample asks for, by how the instruction starts: the JSON
# sample names it in its answer, so a JSON-field metric has a field that is easy to get right
# (task) beside one that is harder (answer).
TASK_NAMES: tuple[tuple[str, str], ...] = (
    ("Reverse the order", "reverse"), ("Write this word in capital", "uppercase"), ("What is the capital", "capital"),
    ("Give the opposite", "opposite"), ("What is the first letter", "first_letter"), ("What is ", "addition"),
    ("Repeat the word", "repeat"), ("Sort these numbers", "sort"),
)


def json_answer_rows(rows: list[Row]) -> list[Row]:
    """The sample rows with each answer as a JSON object {"answer": ..., "task": ...}: a task
    whose answers a program checks exactly (exact match, JSON validity, field accuracy). The
    answer comes first, next to the prompt it is read from: a tiny model learns it far sooner
    there than after the task field."""
    def task(instruction: str) -> str:
        return next(name for prefix, name in TASK_NAMES if instruction.startswith(prefix))

    return [{**row, "output": json.dumps({"answer": row["output"], "task": task(row["instruction"])})} for row in rows]


def write_jsonl(rows: list[Row], path: Path) -> None:
    """Write `rows` to `path` as JSON Lines: one object per line, UTF-8, non-ASCII kept as is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    path.write_text("".join(lines), encoding="utf-8")


def main() -> None:
    """Regenerate the bundled `data/sample.jsonl`."""
    rows = generate_sample_rows()
    write_jsonl(rows, SAMPLE_DATA_PATH)
    write_jsonl(json_answer_rows(rows), JSON_SAMPLE_DATA_PATH)
    print(f"wrote {len(rows)} rows to {SAMPLE_DATA_PATH} and {JSON_SAMPLE_DATA_PATH}")


if __name__ == "__main__":
    main()
