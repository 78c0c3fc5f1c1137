"""Baseline (b): a multiprocessing.Pool over consumed batches.

Consume ``cpu_count() * 12`` records at a time, ``Pool.map`` the transform (json.loads, md5 of
the raw bytes, json.dumps) over their values, produce the results in order, and flush the
producer before the next batch.
"""

import hashlib
import json
from multiprocessing import Pool, cpu_count

from confluent_kafka import Consumer, Producer

import common


def transform(raw):
    data = json.loads(raw)
    data["hash"] = hashlib.md5(raw).hexdigest()
    return json.dumps(data)


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    consumer = Consumer(common.consumer_config(args))
    producer = Producer(common.producer_config(args))
    consumer.subscribe([args.source])
    window = common.Window(args)
    batch = cpu_count() * 12
    processed = 0
    pool = Pool()
    try:
        while not window.over(processed):
            remaining = window.remaining(processed)
            n = batch if remaining is None else min(batch, remaining)
            msgs = [m for m in consumer.consume(num_messages=n, timeout=1.0) if not m.error()]
            if not msgs:
                continue
            window.started()
            outputs = pool.map(transform, [m.value() for m in msgs])
            for msg, out in zip(msgs, outputs):
                producer.produce(args.destination, key=msg.key(), value=out, headers=msg.headers())
            producer.flush()
            processed += len(msgs)
    finally:
        # close + join (not terminate): the workers are waited for, so their CPU time and memory
        # are counted in this process's children by the harness.
        pool.close()
        pool.join()
        producer.flush()
        consumer.close()
    common.report(processed, window)


if __name__ == "__main__":
    main()
