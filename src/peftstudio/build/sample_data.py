"""The bundled instruction-tuning sample data, generated deterministically.

Every row is a short task whose answer a person can check at a glance (the capital of a
country, the opposite of a word, 7 + 5, ...), so a fine-tuning run on the embedded tiny model
shows visibly whether the adapter learned something. Rows have the alpaca shape
`{"instruction", "input", "output"}`; `input` is "" when the instruction says it all.

`python -m peftstudio.build.sample_data` rewrites `conf_data/sample.jsonl`; the file is
committed, so the generator only runs when the task mix changes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SAMPLE_DATA_PATH = Path(__file__).resolve().parent.parent / "conf_data" / "sample.jsonl"

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

Row = dict[str, str]


def _row(instruction: str, output: str, input_text: str = "") -> Row:
    return {"instruction": instruction, "input": input_text, "output": output}


def _reverse_words(rng: random.Random) -> Row:
    words = rng.sample(WORDS, 3)
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
    left, right = rng.randint(0, 20), rng.randint(0, 20)
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
    return rng.choice((f"{city} is the capital of {country}.", f"The capital of {country} is {city}."))


def _background_antonym(rng: random.Random) -> str:
    word, opposite = rng.choice(ANTONYMS) if rng.random() < 0.5 else rng.choice(ANTONYMS)[::-1]
    return rng.choice((f"The opposite of {word} is {opposite}.", f"{word} and {opposite} are opposites."))


def _background_capital_letters(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    return rng.choice((f"{word} in capitals is {word.upper()}.", f"The sign said {word.upper()}, that is {word}."))


def _background_spelling(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    return rng.choice((f"{word} starts with {word[0]}.", f"The word {word} begins with the letter {word[0]}."))


def _background_arithmetic(rng: random.Random) -> str:
    left, right = rng.randint(0, 20), rng.randint(0, 20)
    return rng.choice((f"{left} plus {right} makes {left + right}.", f"{left} + {right} = {left + right}"))


def _background_repetition(rng: random.Random) -> str:
    word, times = rng.choice(WORDS), rng.randint(2, 4)
    return f"Say {word} {NUMBER_NAMES[times - 2]} times: {' '.join([word] * times)}."


def _background_reversal(rng: random.Random) -> str:
    words = rng.sample(WORDS, 3)
    return f"{' '.join(words)} backwards is {' '.join(reversed(words))}."


def _background_ordering(rng: random.Random) -> str:
    numbers = rng.sample(range(10), 3)
    return f"In order, {' '.join(map(str, numbers))} becomes {' '.join(map(str, sorted(numbers)))}."


# Arithmetic appears twice: it has far more distinct facts (21 x 21 sums) than the other kinds.
BACKGROUND_KINDS: tuple[Callable[[random.Random], str], ...] = (
    _background_capital, _background_antonym, _background_capital_letters, _background_spelling,
    _background_arithmetic, _background_arithmetic, _background_repetition, _background_reversal,
    _background_ordering,
)


def generate_background_text(count: int = 6000, seed: int = 1234) -> list[str]:
    """Return `count` plain sentences stating the facts behind the sample tasks.

    This is the embedded model's pretraining text: declarative sentences ("Paris is the
    capital of France.") with no instructions and no chat turns, so the base model knows the
    facts but has never seen a question answered; the fine-tuning data teaches that.
    """
    rng = random.Random(seed)
    return [BACKGROUND_KINDS[index % len(BACKGROUND_KINDS)](rng) for index in range(count)]


def write_jsonl(rows: list[Row], path: Path) -> None:
    """Write one JSON object per line, UTF-8, keys in task order (instruction, input, output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    path.write_text("".join(lines), encoding="utf-8")


def main() -> None:
    """Regenerate the bundled `conf_data/sample.jsonl`."""
    rows = generate_sample_rows()
    write_jsonl(rows, SAMPLE_DATA_PATH)
    print(f"wrote {len(rows)} rows to {SAMPLE_DATA_PATH}")


if __name__ == "__main__":
    main()
