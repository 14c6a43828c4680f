"""Draw bench/results/latest.png from latest.json (run by bench/run.py with
the peers' virtual environment, which has matplotlib)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: str, target: str) -> None:
    with open(source) as file:
        results = json.load(file)
    servers = results["servers"]
    fig, (echo_ax, bcast_ax) = plt.subplots(1, 2, figsize=(13, 5))
    labels = list(servers)
    echo = [
        servers[s].get("echo 32 B C=100", {}).get("messages_per_s") or 0 for s in labels
    ]
    echo_ax.barh(labels, echo, color="#3b7dd8")
    echo_ax.set_title("echo 32 B, 100 connections: messages/s")
    bcast_key = next(
        (
            k
            for k in ("broadcast 1000 @10/s", "broadcast 100 @10/s")
            if any(k in servers[s] for s in labels)
        ),
        None,
    )
    if bcast_key:
        p99 = [servers[s].get(bcast_key, {}).get("p99_ms") or 0 for s in labels]
        bcast_ax.barh(labels, p99, color="#d8803b")
        bcast_ax.set_xscale("log")
        bcast_ax.set_title(f"{bcast_key}\np99 delivery latency, ms (log scale)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
