// Kafka's own Java client (kafka-clients, from the broker's jars) as a writer and reader that
// ktransform did not write: its codecs are Java's (java.util.zip, snappy-java, lz4-java,
// zstd-jni), not librdkafka's. Run as a single-file program by tests/common/java.rs:
//
//   java -cp "<libs>/*" JavaClient.java produce <bootstrap> <topic> <compression.type> < records
//   java -cp "<libs>/*" JavaClient.java consume <bootstrap> <topic> <count>
//
// Records travel as one line each, fields separated by tabs, bytes in hex and "-" for null:
//   produce reads:  key value timestamp headers
//   consume prints: partition offset key value timestamp timestamp-type headers
// where headers is "-" or comma-separated name:value pairs (value "-" for a null header).

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaClient {
    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "produce" -> produce(args[1], args[2], args[3]);
            case "consume" -> consume(args[1], args[2], Integer.parseInt(args[3]));
            default -> throw new IllegalArgumentException("produce or consume, not " + args[0]);
        }
    }

    static byte[] decode(String field) {
        return field.equals("-") ? null : HexFormat.of().parseHex(field);
    }

    static String encode(byte[] bytes) {
        return bytes == null ? "-" : HexFormat.of().formatHex(bytes);
    }

    static void produce(String bootstrap, String topic, String codec) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("compression.type", codec);
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        // Batches of many records, so that compression has something to work on.
        p.put("linger.ms", "50");
        p.put("batch.size", "262144");
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            String line;
            while ((line = in.readLine()) != null) {
                String[] f = line.split("\t", -1);
                long ts = Long.parseLong(f[2]);
                RecordHeaders headers = new RecordHeaders();
                if (!f[3].equals("-")) {
                    for (String h : f[3].split(",")) {
                        String[] kv = h.split(":", 2);
                        headers.add(new String(decode(kv[0]), StandardCharsets.UTF_8), decode(kv[1]));
                    }
                }
                sent.add(producer.send(new ProducerRecord<>(topic, null, ts < 0 ? null : ts,
                        decode(f[0]), decode(f[1]), headers)));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) {
                f.get();
            }
        }
        System.out.println("produced " + sent.size());
    }

    static void consume(String bootstrap, String topic, int count) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("isolation.level", "read_committed");
        p.put("enable.auto.commit", "false");
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo info : consumer.partitionsFor(topic)) {
                partitions.add(new TopicPartition(topic, info.partition()));
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            int read = 0;
            long idleSince = System.currentTimeMillis();
            // Until `count` records are in and nothing more comes for 3 s, or 60 s of nothing.
            while (true) {
                var records = consumer.poll(Duration.ofMillis(200));
                long now = System.currentTimeMillis();
                if (!records.isEmpty()) {
                    idleSince = now;
                }
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    StringBuilder headers = new StringBuilder();
                    for (Header h : r.headers()) {
                        if (headers.length() > 0) {
                            headers.append(',');
                        }
                        headers.append(encode(h.key().getBytes(StandardCharsets.UTF_8)))
                                .append(':').append(encode(h.value()));
                    }
                    System.out.println(r.partition() + "\t" + r.offset() + "\t" + encode(r.key())
                            + "\t" + encode(r.value()) + "\t" + r.timestamp() + "\t"
                            + r.timestampType() + "\t" + (headers.length() == 0 ? "-" : headers));
                    read++;
                }
                long idle = now - idleSince;
                if ((read >= count && idle > 3000) || idle > 60000) {
                    break;
                }
            }
        }
    }
}
