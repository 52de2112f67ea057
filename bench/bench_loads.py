"""Compare ferropickle.loads with pickle.loads on a few generic containers.

Run: python bench/bench_loads.py
"""

import pickle
import timeit

import ferropickle

CASES = {
    "dict of 1000 tuples": {i: (i, str(i), float(i)) for i in range(1000)},
    "list of 10000 str": [str(i) for i in range(10000)],
    "list of 10000 int": list(range(10000)),
    "list of 10000 float": [float(i) for i in range(10000)],
    "list of 1000 small dicts": [{"a": i, "b": str(i), "c": [i, i]} for i in range(1000)],
}


def best_pair(data, number, repeat=25):
    """Best per-call time of pickle.loads and ferropickle.loads, measured alternately so that
    both see the same machine load."""
    ref, ours = [], []
    for _ in range(repeat):
        ref.append(timeit.timeit(lambda: pickle.loads(data), number=number))
        ours.append(timeit.timeit(lambda: ferropickle.loads(data), number=number))
    return min(ref) / number, min(ours) / number


def main():
    print(f"{'case':28} {'pickle.loads':>14} {'ferropickle':>14} {'speedup':>8}")
    for name, obj in CASES.items():
        data = pickle.dumps(obj, protocol=5)
        assert ferropickle.loads(data) == pickle.loads(data)
        ref, ours = best_pair(data, number=50)
        print(f"{name:28} {ref * 1e6:11.1f} us {ours * 1e6:11.1f} us {ref / ours:7.2f}x")


if __name__ == "__main__":
    main()
