"""The recipe study's downstream task: which of four words comes next in a held-out document?

The study's models are far too small for ARC or HellaSwag (they would all sit at chance), so each run is
also scored, by lm-eval through ``train.downstream``, on a task built from the study's own held-out split:
a context of ``CONTEXT_WORDS`` words of a held-out document, then four choices for the next word: the true
one and three distractors drawn from the word occurrences of the held-out text (so a frequent word is as
likely to be a distractor as it is to be an answer). It measures how well a model uses its context to
predict a whole word, on text none of the runs trained on. Chance is 0.25; a guesser that ignores the
context and picks the choice most frequent in the held-out text scores more
(:func:`frequency_guess_accuracy`, reported beside the runs). ``acc`` compares the choices' summed
log-likelihoods, ``acc_norm`` divides them by length in bytes (lm-eval's definitions).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

TASK_NAME = "study_next_word"
CONTEXT_WORDS = 30
"""Words of context before the word to choose."""
STRIDE_WORDS = 17
"""Words between two examples' targets in a document (so contexts overlap but examples differ)."""
CHOICES = 4

_YAML = """\
# Built by bench/recipe_study_task.py from the study's held-out split; see its docstring.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{answer}}}}"
doc_to_choice: "{{{{choices}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _is_word(word: str) -> bool:
    """A target or distractor: letters only, at least 3 of them (no punctuation, numbers or code)."""
    return len(word) >= 3 and word.isalpha()


def next_word_examples(documents: list[str], count: int, seed: int = 0) -> list[dict]:
    """Up to ``count`` examples from ``documents`` (held-out texts), the same for the same inputs and seed.

    Each example: ``context`` (the ``CONTEXT_WORDS`` words before the target), ``choices`` (the target and
    three distractors, shuffled) and ``answer`` (the target's index). Distractors differ from the target and
    from each other and are drawn from the word occurrences of all documents.
    """
    rng = random.Random(seed)
    split = [doc.split() for doc in documents]
    pool = [w for words in split for w in words if _is_word(w)]
    if len(set(pool)) < CHOICES:
        raise RuntimeError(f"the held-out text has fewer than {CHOICES} distinct words to choose from")
    examples: list[dict] = []
    for words in split:
        for i in range(CONTEXT_WORDS, len(words), STRIDE_WORDS):
            if not _is_word(words[i]):
                continue
            choices = {words[i]}  # words differing in case only ('The', 'the') are distinct choices: the context decides
            while len(choices) < CHOICES:
                choices.add(rng.choice(pool))
            ordered = sorted(choices)
            rng.shuffle(ordered)
            examples.append({"context": " ".join(words[i - CONTEXT_WORDS:i]), "choices": ordered,
                             "answer": ordered.index(words[i])})
    rng.shuffle(examples)  # documents mixed, so the first ``count`` (lm-eval's --limit) are not one document's
    return examples[:count]


def held_out_documents(shards_dir: Path, tokenizer_dir: Path) -> list[str]:
    """The held-out split's documents as text (its tokens split at end-of-text and decoded)."""
    from edulm.data.shards import open_split
    from edulm.tokenizer.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir))
    tokens = np.concatenate(open_split(shards_dir, "val"))
    cuts = np.flatnonzero(tokens == tokenizer.eos_token_id)
    pieces = np.split(tokens, cuts)
    texts = (tokenizer.decode(piece.tolist(), skip_special_tokens=True) for piece in pieces)
    return [text for text in texts if text.strip()]


def frequency_guess_accuracy(documents: list[str], examples: list[dict]) -> float:
    """The score of a guesser that ignores the context: the choice that occurs most often in ``documents``.

    What the task's distractor draw leaves to word frequency alone (the answer is a word that occurred, so it
    tends to be a frequent one); a model must beat this, not only chance, to show that it uses the context.
    """
    counts = Counter(w for doc in documents for w in doc.split())
    return sum(max(range(len(e["choices"])), key=lambda i: counts[e["choices"][i]]) == e["answer"]
               for e in examples) / len(examples)


def write_task(folder: Path, shards_dir: Path, tokenizer_dir: Path, count: int) -> dict:
    """Write ``TASK_NAME``'s YAML and JSON lines into ``folder`` (the ``train.downstream_include_path``) unless a
    former invocation of the study did (its runs were scored on those); returns what it holds (examples, chance,
    the frequency guesser's score), for the study's report."""
    from edulm.base.files import write_text

    documents = held_out_documents(shards_dir, tokenizer_dir)
    data = folder / f"{TASK_NAME}.jsonl"
    if data.is_file():
        examples = [json.loads(line) for line in data.read_text().splitlines()]
    else:
        examples = next_word_examples(documents, count)
        if len(examples) < count:
            raise RuntimeError(f"the held-out split gives {len(examples)} next-word examples, fewer than {count}")
        folder.mkdir(parents=True, exist_ok=True)
        write_text(data, "".join(json.dumps(e) + "\n" for e in examples))
        write_text(folder / f"{TASK_NAME}.yaml", _YAML.format(task=TASK_NAME, data=json.dumps(str(data))))
    return {"task": TASK_NAME, "examples": len(examples), "chance": 1 / CHOICES, "context_words": CONTEXT_WORDS,
            "frequency_guess_acc": frequency_guess_accuracy(documents, examples)}
