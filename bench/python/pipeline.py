"""Baseline (c): a three-stage process pipeline.

A consumer process puts each record on a multiprocessing.Queue, two hasher processes transform
(json.loads, md5 of the raw bytes, json.dumps) and put the results on a second queue, and a
producer process produces them. Logging is set to CRITICAL, so the per-record log calls cost only
their level check. The queues are bounded (QUEUE_SIZE) so that a fast consumer cannot fill the
memory while the hashers lag behind.
"""

import hashlib
import json
import logging
import multiprocessing as mp

from confluent_kafka import Consumer, Producer

import common

HASHERS = 2
QUEUE_SIZE = 10_000
log = logging.getLogger("pipeline")


def consume(args, window, records, results):
    logging.basicConfig(level=logging.CRITICAL)
    consumer = Consumer(common.consumer_config(args))
    consumer.subscribe([args.source])
    consumed = 0
    while not window.over(consumed):
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        window.started()
        log.info("consumed %s-%s@%s", msg.topic(), msg.partition(), msg.offset())
        records.put((msg.key(), msg.value(), msg.headers()))
        consumed += 1
    for _ in range(HASHERS):
        records.put(None)
    consumer.close()
    results.put(("first", window.first))


def hash_records(records, outputs):
    logging.basicConfig(level=logging.CRITICAL)
    while (item := records.get()) is not None:
        key, raw, headers = item
        data = json.loads(raw)
        data["hash"] = hashlib.md5(raw).hexdigest()
        log.info("hashed %s", data["hash"])
        outputs.put((key, json.dumps(data), headers))
    outputs.put(None)


def produce(args, outputs, results):
    logging.basicConfig(level=logging.CRITICAL)
    producer = Producer(common.producer_config(args))
    produced, finished = 0, 0
    while finished < HASHERS:
        item = outputs.get()
        if item is None:
            finished += 1
            continue
        key, value, headers = item
        producer.produce(args.destination, key=key, value=value, headers=headers)
        producer.poll(0)
        log.info("produced %s", produced)
        produced += 1
    producer.flush()
    results.put(("produced", produced))


def main():
    args = common.parse_args(__doc__.splitlines()[0])
    window = common.Window(args)
    records, outputs, results = mp.Queue(QUEUE_SIZE), mp.Queue(QUEUE_SIZE), mp.Queue()
    stages = [mp.Process(target=consume, args=(args, window, records, results))]
    stages += [mp.Process(target=hash_records, args=(records, outputs)) for _ in range(HASHERS)]
    stages.append(mp.Process(target=produce, args=(args, outputs, results)))
    for stage in stages:
        stage.start()
    got = dict(results.get() for _ in range(2))
    for stage in stages:
        stage.join()  # reaped, so the harness counts their CPU time and memory
    window.first = got["first"]
    common.report(got["produced"], window)


if __name__ == "__main__":
    main()
