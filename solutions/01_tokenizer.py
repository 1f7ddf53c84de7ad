"""Solutions to the exercises of notebook 01: one BPE training step."""


def my_most_frequent_pair(ids):
    counts = {}
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    # A dict remembers the order pairs were first seen, and max keeps the first of equal counts.
    return max(counts, key=counts.get)


def my_merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
