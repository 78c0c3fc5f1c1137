#!/usr/bin/env python3
"""Groups `perf script` samples (with call graphs) by what the process was doing.

    perf script -i target/profile.data | python3 scripts/perf_groups.py

A sample goes to the first group whose pattern matches any frame of its stack, so the order below
matters: the transform's own work first, then librdkafka's stages, then the async runtime. Used by
scripts/profile.sh.
"""

import collections
import re
import sys

GROUPS = [
    ("transform: md5 and hex", r"md5::|md5_hex|hex::"),
    ("transform: JSON scan, UTF-8", r"Scanner::|from_utf8|transform_into"),
    ("librdkafka: producev (enqueue, partition, copy)", r"rd_kafka_producev|rd_kafka_msg_new"),
    ("librdkafka: build produce requests", r"msgset_writer|rd_kafka_ProduceRequest|produce_toppar"),
    ("librdkafka: parse fetch responses", r"msgset_reader|LZ4_decompress|rd_kafka_fetch_reply"),
    ("librdkafka: take records off the partition queues", r"consume_batch_queue"),
    ("delivery reports", r"rd_kafka_dr_|dr_msgq|Acks|poll_event|BaseProducer.*::poll"),
    ("headers", r"rd_kafka_message_headers|rd_kafka_header|Headers"),
    ("librdkafka: socket I/O", r"rd_kafka_transport|rd_kafka_recv|rd_kafka_send|sendmsg|recvmsg"),
    ("async runtime: wake-ups, parking", r"tokio::|mio::|futex"),
    ("allocator", r"_rjem_|je_|malloc|free"),
]

CLOCK = re.compile(r"clock_gettime|gettimeofday")
SKIP_FOR_CALLER = re.compile(r"vdso|clock_gettime|gettimeofday|libc\.so|Instant::now|Timespec|"
                             r"std::sys|time::Instant|rd_clock|rd_uclock|rd_timeout|\(inlined\)")


def samples(text):
    for block in text.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        thread = lines[0].split()[0]
        frames = [re.sub(r"^[0-9a-f]+ ", "", line) for line in lines[1:]]
        yield thread, frames


def symbol(frame):
    return re.sub(r"\+0x[0-9a-f]+", "", frame.split(" (")[0])[:90]


def main():
    total = 0
    threads, groups, clock_callers = (collections.Counter() for _ in range(3))
    for thread, frames in samples(sys.stdin.read()):
        total += 1
        threads[thread] += 1
        stack = "\n".join(frames)
        groups[next((name for name, pattern in GROUPS if re.search(pattern, stack)), "other")] += 1
        if CLOCK.search(frames[0]):
            caller = next((f for f in frames[1:] if not SKIP_FOR_CALLER.search(f)), "?")
            clock_callers[symbol(caller)] += 1
    if not total:
        sys.exit("no samples")

    def share(n):
        return f"{100 * n / total:5.1f}%"

    print(f"{total} samples; by thread:")
    for name, n in threads.most_common(6):
        print(f"  {share(n)}  {name}")
    print("by what the stack is doing (first matching group):")
    for name, n in groups.most_common():
        print(f"  {share(n)}  {name}")
    print(f"reading the clock: {share(sum(clock_callers.values())).strip()} of samples; callers:")
    for name, n in clock_callers.most_common(5):
        print(f"  {share(n)}  {name}")


if __name__ == "__main__":
    main()
