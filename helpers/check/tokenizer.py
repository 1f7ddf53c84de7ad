"""Notebook 01's checks: one BPE training step, `most_frequent_pair` and `merge`, on the classic prompt's bytes
and on short lists where a pair overlaps itself ([5, 5, 5] holds the pair (5, 5) twice, and merges once), or where
only the order in which tied pairs were first seen picks the answer."""

from collections import Counter

from .harness import PROMPT, verdict

PROMPT_BYTES = list(PROMPT.encode("utf-8"))
TH, THE = (ord("t"), ord("h")), (256, ord("e"))  # the prompt's first merges: "th" -> 256, then "th" "e" -> 257
# (5, 5) and (9, 7) are seen twice each, (5, 5) first; merging (5, 5) left to right gives [256, 5, 9, 7, 9, 7].
OVERLAPPING = [5, 5, 5, 9, 7, 9, 7]
# Ties that neither sorting nor a set's order settles as the first seen does: (9, 7), seen first, has the larger
# ids; in [1, 2, 3, 1, 2, 3], (1, 2) is seen first, yet a set of the pairs gives (2, 3) first.
TIES = ([9, 7, 9, 7, 5, 5, 5], [1, 2, 3, 1, 2, 3])


def merge_reference(ids, pair, new_id):
    """Each id as one character: str.replace joins the pair's non-overlapping occurrences, left to right."""
    text = "".join(map(chr, ids)).replace(chr(pair[0]) + chr(pair[1]), chr(new_id))
    return [ord(c) for c in text]


AFTER_TH = merge_reference(PROMPT_BYTES, TH, 256)


def most_frequent_pair_reference(ids):
    """Counter keeps pairs in the order first seen, and most_common keeps that order among equal counts."""
    return Counter(zip(ids, ids[1:], strict=False)).most_common(1)[0][0]


def _pair_seen_last(ids):
    counts = Counter(zip(ids, ids[1:], strict=False))
    return max(reversed(counts), key=counts.get)


def _least_frequent_pair(ids):
    counts = Counter(zip(ids, ids[1:], strict=False))
    return min(counts, key=counts.get)


def _pair_first_in_a_set(ids):
    pairs = list(zip(ids, ids[1:], strict=False))
    return max(set(pairs), key=pairs.count)


def _pair_with_smallest_ids(ids):
    counts = Counter(zip(ids, ids[1:], strict=False))
    return max(sorted(counts), key=counts.get)


MOST_FREQUENT_PAIR_MISTAKES = {
    "of equally frequent pairs it picks the last seen; the rule is the first seen": _pair_seen_last,
    "it picks the least frequent pair (min instead of max)": _least_frequent_pair,
    "of equally frequent pairs it picks the one a set gives first (a set keeps no order); the rule is the first "
    "seen: count in a dict or a Counter, which keeps the order pairs were first seen": _pair_first_in_a_set,
    "of equally frequent pairs it picks the one with the smallest ids (sorted order); the rule is the first seen":
        _pair_with_smallest_ids,
}


def most_frequent_pair(my_most_frequent_pair):
    """Exercise 01: the pair of neighbouring ids seen most often in `ids`; of equal counts, the first seen."""
    cases = {
        "the prompt's bytes": lambda fn: fn(list(PROMPT_BYTES)),
        "the prompt after merging 'th'": lambda fn: fn(list(AFTER_TH)),
        str(OVERLAPPING): lambda fn: fn(list(OVERLAPPING)),
        **{str(ids): lambda fn, ids=ids: fn(list(ids)) for ids in TIES},
    }
    line = verdict(my_most_frequent_pair, cases, most_frequent_pair_reference, MOST_FREQUENT_PAIR_MISTAKES)
    got = my_most_frequent_pair(list(PROMPT_BYTES)) if line == "correct" else None
    if line == "correct" and not isinstance(got, tuple):
        line = (f"wrong: it returns a {type(got).__name__}; a pair is a tuple (a, b), which a dict can take as a key, "
                "as train_bpe's merges do")
    print(line)


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def _merge_keeping_second(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        out.append(new_id if (ids[i], ids[i + 1 : i + 2]) == (pair[0], [pair[1]]) else ids[i])
    return out


def _merge_dropping_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


MERGE_MISTAKES = {
    "only the first occurrence of the pair is merged": _merge_first_only,
    "the pair's second id stays: after a merge, step past both ids (i += 2)": _merge_keeping_second,
    "the last id is lost when it is not part of a merge: the loop stops one id early": _merge_dropping_last,
    "it merges the pair in reverse order, (pair[1], pair[0])":
        lambda ids, pair, new_id: merge_reference(ids, pair[::-1], new_id),
    "it merges from right to left: where a pair overlaps itself, [5, 5, 5] with (5, 5), "
    "the leftmost occurrence goes first ([9, 5], not [5, 9])": _merge_right_to_left,
}


def merge(my_merge):
    """Exercise 01: `ids` with every occurrence of `pair`, left to right, replaced by `new_id`."""
    cases = {
        "merging 't' 'h' into 256": lambda fn: fn(list(PROMPT_BYTES), TH, 256),
        "merging 'th' 'e' into 257": lambda fn: fn(list(AFTER_TH), THE, 257),
        f"merging (5, 5) in {OVERLAPPING} into 256": lambda fn: fn(list(OVERLAPPING), (5, 5), 256),
    }
    line = verdict(my_merge, cases, merge_reference, MERGE_MISTAKES)
    got = my_merge(list(PROMPT_BYTES), TH, 256) if line == "correct" else None
    if line == "correct" and not isinstance(got, list):
        line = f"wrong: it returns a {type(got).__name__}; merge returns a new list of ids"
    print(line)
