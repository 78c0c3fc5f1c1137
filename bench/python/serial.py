"""Baseline (a): the original serial loop.

One record at a time: poll, json.loads, md5 of the raw value bytes, json.dumps, produce, and
``producer.poll(1)`` after every produce as the original did. poll(1) returns as soon as it has
served an event, but the only event it can serve is the delivery report of the record just
produced, which waits for linger.ms and a round trip: that wait, not Python, sets the pace.
"""

import hashlib
import json

from confluent_kafka import Consumer, Producer

import common


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    consumer = Consumer(common.consumer_config(args))
    producer = Producer(common.producer_config(args))
    consumer.subscribe([args.source])
    window = common.Window(args)
    processed = 0
    try:
        while not window.over(processed):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                continue
            window.started()
            raw = msg.value()
            data = json.loads(raw)
            data["hash"] = hashlib.md5(raw).hexdigest()
            producer.produce(
                args.destination, key=msg.key(), value=json.dumps(data), headers=msg.headers()
            )
            producer.poll(1)
            processed += 1
    finally:
        producer.flush()
        consumer.close()
    common.report(processed, window)


if __name__ == "__main__":
    main()
