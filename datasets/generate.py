#!/usr/bin/env python3
"""Generates lathe's bundled demo datasets. Deterministic: the same seed gives the same files.

    python3 datasets/generate.py        # rewrites datasets/*.jsonl

Everything here is synthetic, made by this script; nothing is copied from anywhere.
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261126
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def word(rng, lo, hi):
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def tasks(rng):
    """One example of each synthetic task; every answer is checkable exactly."""
    w = word(rng, 3, 7)
    yield "reverse", "Reverse the letters of the word.", w, w[::-1]
    w = word(rng, 3, 7)
    yield "sort", "Sort the letters of the word alphabetically.", w, "".join(sorted(w))
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    yield "add", "Add the two numbers.", f"{a} + {b}", str(a + b)
    w = word(rng, 3, 9)
    yield "count", "How many letters does the word have?", w, str(len(w))


def instructions(n_per_task=2000):
    rng = random.Random(SEED)
    by_task, seen = {}, set()
    while min((len(v) for v in by_task.values()), default=0) < n_per_task or len(by_task) < 4:
        for task, instruction, inp, out in tasks(rng):
            bucket = by_task.setdefault(task, [])
            if (task, inp) not in seen and len(bucket) < n_per_task:
                seen.add((task, inp))
                bucket.append({"task": task, "instruction": instruction, "input": inp, "output": out})
    rows = [r for bucket in by_task.values() for r in bucket]
    rng.shuffle(rows)
    return [{"id": i, **r} for i, r in enumerate(rows)]


UNITS = [
    ("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("l", "ml", 1000),
    ("h", "min", 60), ("min", "s", 60), ("day", "h", 24), ("week", "day", 7),
]
SYSTEM = "You are a terse unit-conversion assistant. Answer with the converted amount only."


def plural(n, unit):
    return unit + "s" if unit in ("day", "week") and n != 1 else unit


def chats(n=1500):
    rng = random.Random(SEED + 1)
    out = []
    for i in range(n):
        messages = [{"role": "system", "content": SYSTEM}]
        for _ in range(rng.randint(1, 3)):
            src, dst, factor = rng.choice(UNITS)
            amount = rng.randint(1, 50)
            messages.append({"role": "user", "content": f"Convert {amount} {plural(amount, src)} to {plural(2, dst)}."})
            res = amount * factor
            messages.append({"role": "assistant", "content": f"{res} {plural(res, dst)}"})
        out.append({"id": i, "messages": messages})
    return out


def write_jsonl(name, rows):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    write_jsonl("instruct.jsonl", instructions())
    write_jsonl("chat.jsonl", chats())
