package ktransform.bench;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The ktransform job as a Kafka Streams application, for `make bench`.
 *
 * <p>Each value gets {@code ,"hash":"<md5 hex of the raw value bytes>"} spliced in before its last
 * {@code }} (byte level, as ktransform does for compact objects); key and headers are kept (Kafka
 * Streams forwards the input record's headers to the sink). Stops itself once it has forwarded
 * {@code --count} records to the sink, then closes, which flushes the producer and commits (for
 * exactly_once_v2: commits the open transaction).
 *
 * <pre>
 * java -cp 'target/*:target/lib/*' ktransform.bench.KStreamsBench --source S --destination D
 *     --application-id A --count N [--guarantee at_least_once|exactly_once_v2] [--threads 2]
 *     [--brokers 127.0.0.1:9092] [--state-dir /tmp/...] [--timeout-seconds 1800]
 *     [--set key=value ...]
 * </pre>
 *
 * Kafka Streams runs at its own defaults (one stream thread unless --threads, the producer's
 * 100 ms linger, no compression, ...) except for what {@code --set} gives: any StreamsConfig
 * key, and client settings with its prefixes ({@code producer.linger.ms=5},
 * {@code consumer.max.poll.records=2000}, {@code main.consumer.…}). Repeatable.
 *
 * Prints one line to stdout at the end: {@code processed=N elapsed_s=S}.
 */
public final class KStreamsBench {
  private static final byte[] HEX = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] PREFIX = ",\"hash\":\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] PREFIX_EMPTY = "\"hash\":\"".getBytes(StandardCharsets.US_ASCII);

  private KStreamsBench() {}

  /** Per stream thread: MessageDigest is not thread-safe. */
  private static final ThreadLocal<MessageDigest> MD5 =
      ThreadLocal.withInitial(
          () -> {
            try {
              return MessageDigest.getInstance("MD5");
            } catch (NoSuchAlgorithmException e) {
              throw new IllegalStateException(e);
            }
          });

  /**
   * Input with the hash member spliced in before the last '}' (trailing white space kept after
   * it). Values that do not end in '}' (not a compact object) and tombstones pass unchanged: the
   * benchmark's input is all seed-format objects, and a dead-letter path is not what is measured.
   */
  static byte[] splice(byte[] value) {
    if (value == null) {
      return null;
    }
    int close = value.length - 1;
    while (close >= 0 && value[close] != '}') {
      close--;
    }
    if (close < 1) {
      return value;
    }
    byte[] digest = MD5.get().digest(value);
    int open = close - 1;
    while (open >= 0 && isSpace(value[open])) {
      open--;
    }
    boolean empty = open >= 0 && value[open] == '{';
    byte[] prefix = empty ? PREFIX_EMPTY : PREFIX;
    byte[] out = new byte[value.length + prefix.length + 32 + 1];
    System.arraycopy(value, 0, out, 0, close);
    int at = close;
    System.arraycopy(prefix, 0, out, at, prefix.length);
    at += prefix.length;
    for (byte b : digest) {
      out[at++] = HEX[(b >> 4) & 0xf];
      out[at++] = HEX[b & 0xf];
    }
    out[at++] = '"';
    System.arraycopy(value, close, out, at, value.length - close);
    return out;
  }

  private static boolean isSpace(byte b) {
    return b == ' ' || b == '\n' || b == '\r' || b == '\t';
  }

  private static Map<String, String> parseArgs(String[] args, List<String> settings) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--") || i + 1 >= args.length) {
        throw new IllegalArgumentException("expected --flag value pairs, got " + a);
      }
      if (a.equals("--set")) {
        settings.add(args[++i]);
      } else {
        out.put(a.substring(2), args[++i]);
      }
    }
    return out;
  }

  private static String required(Map<String, String> flags, String name) {
    String v = flags.get(name);
    if (v == null) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return v;
  }

  public static void main(String[] args) throws Exception {
    long started = System.nanoTime();
    List<String> settings = new ArrayList<>();
    Map<String, String> flags = parseArgs(args, settings);
    String source = required(flags, "source");
    String destination = required(flags, "destination");
    String appId = required(flags, "application-id");
    long count = Long.parseLong(required(flags, "count"));
    String guarantee = flags.getOrDefault("guarantee", StreamsConfig.AT_LEAST_ONCE);
    if (!guarantee.equals(StreamsConfig.AT_LEAST_ONCE)
        && !guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
      throw new IllegalArgumentException("--guarantee must be at_least_once or exactly_once_v2");
    }
    long timeoutSeconds = Long.parseLong(flags.getOrDefault("timeout-seconds", "1800"));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    props.put(
        StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, flags.getOrDefault("brokers", "127.0.0.1:9092"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, flags.getOrDefault("threads", "1"));
    props.put(
        StreamsConfig.STATE_DIR_CONFIG,
        flags.getOrDefault("state-dir", "/tmp/kstreams-bench-" + appId));
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    for (String setting : settings) {
      int eq = setting.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException("--set expects key=value, got " + setting);
      }
      props.put(setting.substring(0, eq), setting.substring(eq + 1));
    }

    AtomicLong processed = new AtomicLong();
    CountDownLatch done = new CountDownLatch(1);
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(source, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .mapValues(
            v -> {
              byte[] out = splice(v);
              if (processed.incrementAndGet() == count) {
                done.countDown();
              }
              return out;
            })
        .to(destination, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println("kstreams-bench: stream thread failed: " + e);
          done.countDown();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
              .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.cleanUp();
    streams.start();
    boolean reached = done.await(timeoutSeconds, TimeUnit.SECONDS);
    // close() flushes the producer and commits (for EOS: commits the open transaction).
    boolean closed = streams.close(Duration.ofSeconds(120));
    double elapsed = (System.nanoTime() - started) / 1e9;
    System.out.printf("processed=%d elapsed_s=%.3f%n", processed.get(), elapsed);
    if (!reached || !closed || processed.get() < count) {
      System.err.printf(
          "kstreams-bench: stopped before %d records (reached=%b closed=%b)%n",
          count, reached, closed);
      System.exit(1);
    }
    System.exit(0);
  }
}
