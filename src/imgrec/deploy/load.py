"""A bounded load on a served model: `requests` POSTs from `clients` concurrent clients, their latencies.

    python -m imgrec.deploy.load http://127.0.0.1:5001/invocations --shape 1 28 28 [--requests 200] [--clients 8]

Each request sends `batch` random images in [0, 1]; prints one line of JSON: how many were answered 200, the
other statuses seen, and the p50 / p99 / max latency in milliseconds.
"""

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def hammer(url: str, shape: Sequence[int], requests: int = 200, clients: int = 8, batch: int = 1,
           timeout: float = 30.0) -> dict:
    import requests as http

    body = json.dumps({"inputs": np.random.default_rng(0).random((batch, *shape)).round(4).tolist()})
    headers = {"Content-Type": "application/json"}

    def one(_) -> tuple[int, float]:
        start = time.perf_counter()
        try:
            status = http.post(url, data=body, headers=headers, timeout=timeout).status_code
        except http.RequestException:
            status = 0  # no answer
        return status, (time.perf_counter() - start) * 1000

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(requests)))
    times = sorted(ms for _, ms in answers)
    statuses = Counter(status for status, _ in answers)
    return {"requests": requests, "clients": clients, "batch": batch, "ok": statuses.pop(200, 0),
            "other_statuses": dict(statuses), "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))], "max_ms": times[-1]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--shape", type=int, nargs=3, required=True, metavar=("C", "H", "W"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(hammer(args.url, args.shape, args.requests, args.clients, args.batch)))


if __name__ == "__main__":
    main()
