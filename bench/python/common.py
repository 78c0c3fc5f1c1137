"""What the three Python baselines share: flags, the stop rule, and the result line.

Each baseline stops once it has produced ``--count`` records or when ``--seconds`` have passed
since its first consumed record, whichever comes first, flushes its producer, and prints one JSON
line to stdout: ``{"processed": N, "elapsed_s": S, "first_record_s": F}`` where ``elapsed_s`` runs
from the start of the script to the end of the final flush and ``first_record_s`` is when the
first record was consumed (group join and start-up before it).
"""

import argparse
import json
import time

STARTED = time.monotonic()


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--source", required=True)
    parser.add_argument("--destination", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, default=None, help="stop after N records")
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop N s after the first consumed record"
    )
    args = parser.parse_args()
    if args.count is None and args.seconds is None:
        parser.error("give --count, --seconds or both")
    return args


def consumer_config(args):
    # enable.auto.commit is left at its default (true), as in the originals: offsets are
    # committed once consumed, whether or not their output was produced.
    return {
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
    }


def producer_config(args):
    return {"bootstrap.servers": args.brokers}


class Window:
    """The stop rule: a record budget and a time window that opens at the first record."""

    def __init__(self, args):
        self.count = args.count
        self.seconds = args.seconds
        self.first = None

    def started(self):
        if self.first is None:
            self.first = time.monotonic()

    def remaining(self, processed):
        """Records still allowed (None: no limit by count)."""
        return None if self.count is None else self.count - processed

    def over(self, processed):
        if self.count is not None and processed >= self.count:
            return True
        return (
            self.seconds is not None
            and self.first is not None
            and time.monotonic() - self.first >= self.seconds
        )


def report(processed, window):
    first = None if window.first is None else round(window.first - STARTED, 3)
    line = {
        "processed": processed,
        "elapsed_s": round(time.monotonic() - STARTED, 3),
        "first_record_s": first,
    }
    print(json.dumps(line), flush=True)
