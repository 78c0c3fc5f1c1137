//! Event generator: produces `{"first_name":"…","last_name":"…"}` JSON records to Kafka.
//!
//! ```text
//! cargo run --release --example generate -- [--brokers 127.0.0.1:9092] [--topic name_stream]
//!     [--count N] [--rate R] [--partitions P] [--keyed [--keys K]] [--seed S]
//!     [--record-bytes B] [-X key=value ...]
//! ```
//!
//! With `--record-bytes B`, each object gets a third member, `"padding"`: names separated by
//! spaces (text that compresses about as well as prose), so that its value is B bytes long
//! (objects already longer stay as they are). The benchmarks use it for 1 KB and 10 KB records.
//!
//! Every record carries a header `gen.seq` (global sequence number, decimal ASCII, from 0).
//! With `--keyed`, records get one of K keys `key-{i}` and a header `seq` (per-key sequence
//! number, from 0), so consumers can verify per-key ordering.
//!
//! Records are never dropped silently: a full local queue is waited out (serve delivery reports,
//! retry) and every delivery report is counted. The exit code is non-zero if any record was not
//! delivered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

/// Comma-separated rather than `&[&str]` so rustfmt keeps the lists compact.
const FIRST_NAMES: &str = "James, Mary, Robert, Patricia, John, Jennifer, Michael, Linda, David,
    Elizabeth, William, Barbara, Richard, Susan, Joseph, Jessica, Thomas, Sarah, Charles, Karen,
    Christopher, Lisa, Daniel, Nancy, Matthew, Betty, Anthony, Sandra, Mark, Margaret, Donald,
    Ashley, Steven, Kimberly, Andrew, Emily, Paul, Donna, Joshua, Michelle, Kenneth, Carol, Kevin,
    Amanda, Brian, Melissa, George, Deborah, Timothy, Stephanie, Ronald, Dorothy, Jason, Rebecca,
    Edward, Sharon, Jeffrey, Laura, Ryan, Cynthia, Jacob, Amy, Gary, Kathleen, Nicholas, Angela,
    Eric, Shirley, Jonathan, Brenda, Stephen, Emma, Larry, Anna, Justin, Pamela, Scott, Nicole,
    Brandon, Samantha, Benjamin, Katherine, Samuel, Christine, Gregory, Helen, Alexander, Debra,
    Patrick, Rachel, Frank, Carolyn, Raymond, Janet, Jack, Maria, Dennis, Catherine, Jerry,
    Heather, Tyler, Diane, Aaron, Olivia, Jose, Julie, Adam, Joyce, Nathan, Victoria, Henry, Ruth,
    Zachary, Virginia, Douglas, Lauren, Peter, Kelly, Kyle, Christina, Noah, Joan, Ethan, Evelyn,
    Jeremy, Judith, Walter, Andrea, Christian, Hannah, Keith, Megan, Roger, Cheryl, Terry,
    Jacqueline, Austin, Martha, Sean, Madison, Gerald, Teresa, Carl, Gloria, Harold, Sara, Dylan,
    Janice, Arthur, Ann, Lawrence, Kathryn, Jordan, Abigail, Jesse, Sophia, Bryan, Frances, Billy,
    Jean, Bruce, Alice, Gabriel, Judy, Joe, Isabella, Logan, Julia, Alan, Grace, Juan, Amber,
    Albert, Denise, Willie, Danielle, Elijah, Marilyn, Wayne, Beverly, Randy, Charlotte, Vincent,
    Natalie, Liam, Zoë, José, Chloé, Björn, Søren, Renée, Anaïs, Mónica, Iñaki, Łukasz, Jürgen,
    François, Siobhán, Noël, Hélène, Dmitrii, Aoife, Ngozi, Mei-Ling, D'Andre, Ja'Nae, Kiến, Ayşe,
    Mehmet";

const LAST_NAMES: &str = "Smith, Johnson, Williams, Brown, Jones, Garcia, Miller, Davis,
    Rodriguez, Martinez, Hernandez, Lopez, Gonzalez, Wilson, Anderson, Thomas, Taylor, Moore,
    Jackson, Martin, Lee, Perez, Thompson, White, Harris, Sanchez, Clark, Ramirez, Lewis,
    Robinson, Walker, Young, Allen, King, Wright, Scott, Torres, Nguyen, Hill, Flores, Green,
    Adams, Nelson, Baker, Hall, Rivera, Campbell, Mitchell, Carter, Roberts, Gomez, Phillips,
    Evans, Turner, Diaz, Parker, Cruz, Edwards, Collins, Reyes, Stewart, Morris, Morales, Murphy,
    Cook, Rogers, Gutierrez, Ortiz, Morgan, Cooper, Peterson, Bailey, Reed, Kelly, Howard, Ramos,
    Kim, Cox, Ward, Richardson, Watson, Brooks, Chavez, Wood, James, Bennett, Gray, Mendoza, Ruiz,
    Hughes, Price, Alvarez, Castillo, Sanders, Patel, Myers, Long, Ross, Foster, Jimenez, Powell,
    Jenkins, Perry, Russell, Sullivan, Bell, Coleman, Butler, Henderson, Barnes, Gonzales, Fisher,
    Vasquez, Simmons, Romero, Jordan, Patterson, Alexander, Hamilton, Graham, Reynolds, Griffin,
    Wallace, Moreno, West, Cole, Hayes, Bryant, Herrera, Gibson, Ellis, Tran, Medina, Aguilar,
    Stevens, Murray, Ford, Castro, Marshall, Owens, Harrison, Fernandez, McDonald, Woods,
    Washington, Kennedy, Wells, Vargas, Henry, Chen, Freeman, Webb, Tucker, Guzman, Burns,
    Crawford, Olson, Simpson, Porter, Hunter, Gordon, Mendez, Silva, Shaw, Snyder, Mason, Dixon,
    Muñoz, Hunt, Hicks, Holmes, Palmer, Wagner, Black, Robertson, Boyd, Rose, Stone, Salazar, Fox,
    Warren, Mills, O'Connor, O'Brien, O'Neill, D'Angelo, Núñez, Gómez, Peña, Müller, Schröder,
    Ødegaard, Åberg, Wiśniewski, Kowalczyk, Dvořák, Çelik, Yılmaz, Nguyễn, Løvland,
    Fontaine-Dubois, van der Berg, De Luca, Smith-Jones, MacLeod, Ó Súilleabháin, Björklund,
    Ibáñez";

#[derive(Parser)]
#[command(about = "Produce random {\"first_name\",\"last_name\"} JSON events to Kafka")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "name_stream")]
    topic: String,
    /// Stop after N records (default: unbounded).
    #[arg(long)]
    count: Option<u64>,
    /// Limit to R records/s, paced in 10 ms steps (default: as fast as possible).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Create the topic with P partitions (replication factor 1) if it does not exist.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Give each record one of K stable keys "key-{i}" plus a per-key `seq` header.
    #[arg(long)]
    keyed: bool,
    /// Number of distinct keys for --keyed.
    #[arg(long, default_value_t = 100, requires = "keyed")]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// RNG seed (default: random, printed at start so a run can be reproduced).
    #[arg(long)]
    seed: Option<u64>,
    /// Pad each object with a "padding" member of names to B bytes.
    #[arg(long, value_name = "B")]
    record_bytes: Option<usize>,
    /// librdkafka property override, e.g. -X linger.ms=20 (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_kv)]
    config: Vec<(String, String)>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("invalid rate {s:?}: expected a positive number")),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or(format!("expected key=value, got {s:?}"))?;
    Ok((k.trim().to_owned(), v.to_owned()))
}

/// Counts delivery reports. They are served on our own thread (see `serve`), but the trait
/// requires `Sync`, hence atomics. Shared by every producer of the run (see `Revival`).
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_msg: Mutex<String>,
}

#[derive(Default, Clone)]
struct Ctx(Arc<Counts>);

impl std::ops::Deref for Ctx {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.0
    }
}

impl Counts {
    /// Prints a client/delivery error, skipping exact repeats so an outage doesn't flood stderr.
    fn report(&self, msg: String) {
        let mut last = self.last_msg.lock().unwrap();
        if *last != msg {
            eprintln!("generate: {msg}");
            *last = msg;
        }
    }
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.report(format!("client error: {error}: {reason}"));
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Relaxed),
            Err((e, _)) => {
                self.report(format!("delivery failed: {e}"));
                self.failed.fetch_add(1, Relaxed)
            }
        };
    }
}

/// Splits a name list and pre-encodes each name as a JSON string literal (quotes included),
/// so building a record is just a few `push_str`s.
/// The ASCII names of both lists, for padding (cut anywhere without splitting a character, and
/// nothing to escape).
fn padding_words() -> Vec<&'static str> {
    FIRST_NAMES
        .split(',')
        .chain(LAST_NAMES.split(','))
        .map(str::trim)
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
        })
        .collect()
}

/// Appends `,"padding":"…"` to an object still open (no closing brace yet), so that with its
/// closing brace it is `target` bytes long; nothing when it is already that long.
fn pad(payload: &mut String, target: usize, words: &[&str], rng: &mut StdRng) {
    const OPEN: &str = r#","padding":""#;
    let fixed = payload.len() + OPEN.len() + 2; // the closing quote and brace
    if target <= fixed {
        return;
    }
    payload.push_str(OPEN);
    let end = payload.len() + (target - fixed);
    while payload.len() < end {
        payload.push_str(words[rng.gen_range(0..words.len())]);
        payload.push(' ');
    }
    payload.truncate(end);
    payload.push('"');
}

fn json_names(list: &str) -> Vec<String> {
    list.split(',')
        .map(|n| serde_json::to_string(n.trim()).expect("string serialization cannot fail"))
        .collect()
}

/// Sets `stop` on the first SIGINT/SIGTERM; a second one exits immediately without flushing.
fn install_signal_handler(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = rt.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            eprintln!("generate: stopping (signal again to abort without flushing)");
            stop.store(true, Relaxed);
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            std::process::exit(130);
        })
    });
    Ok(())
}

/// Creates `topic` with `p` partitions and replication factor 1.
fn create_topic(cfg: &ClientConfig, topic: &str, p: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = cfg.create().context("creating admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, p, TopicReplication::Fixed(1));
    for result in futures::executor::block_on(admin.create_topics([&new], &opts))? {
        match result {
            Ok(_) => eprintln!("generate: created topic {topic} with {p} partitions"),
            // Lost a race with another creator (or broker auto-create): use it as it is.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

fn main() {
    // Not `main() -> Result`: that would print a backtrace under RUST_BACKTRACE=1.
    match run(Args::parse()) {
        Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("generate: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Returns whether every generated record was delivered.
fn run(args: Args) -> anyhow::Result<bool> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &args.brokers)
        // Idempotence keeps per-partition order and avoids duplicates across internal retries.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4") // lz4 is built into librdkafka, no system lib needed
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000");
    for (k, v) in &args.config {
        cfg.set(k, v);
    }
    let shared = Ctx::default();
    let mut producer: BaseProducer<Ctx> = cfg
        .create_with_context(shared.clone())
        .context("creating producer")?;

    // Fail fast with a clear message instead of silently queueing into the void.
    // Listing all topics (not just ours) avoids triggering broker-side auto-creation here.
    let md = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| {
            let b = &args.brokers;
            anyhow::anyhow!("broker {b} unreachable; is it running? `make up` ({e})")
        })?;
    let existing = md.topics().iter().find(|t| t.name() == args.topic);
    match (args.partitions, existing.map(|t| t.partitions().len())) {
        (Some(p), None) => create_topic(&cfg, &args.topic, p)?,
        (Some(p), Some(n)) if n != p as usize => eprintln!(
            "generate: WARNING: topic {} has {n} partitions, not {p}; continuing",
            args.topic
        ),
        _ => {}
    }
    // An idempotent producer asks for its producer id on a metadata answer from a cluster broker
    // (or on a 500 ms timer). Two topic lookups now (the first over the bootstrap connection)
    // get it before the first record, which otherwise waits for it with its CreateTime already
    // taken: the latency benchmark counted that wait (the first 0.3 s of records ~100-200 ms).
    for _ in 0..2 {
        let _ = producer
            .client()
            .fetch_metadata(Some(&args.topic), Duration::from_secs(10));
    }

    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handler(stop.clone())?;

    let seed = args.seed.unwrap_or_else(rand::random);
    // StdRng (ChaCha12) rather than SmallRng: the latter needs rand's `small_rng` feature, and
    // StdRng is still only a few ns per record.
    let mut rng = StdRng::seed_from_u64(seed);
    let (first, last) = (json_names(FIRST_NAMES), json_names(LAST_NAMES));
    let words = padding_words();
    let keys: Vec<String> = (0..args.keys).map(|i| format!("key-{i}")).collect();
    let mut key_seq = vec![0u64; keys.len()];
    eprintln!(
        "generate: topic={} count={} rate={} keyed={} seed={seed}",
        args.topic,
        args.count.map_or("unbounded".into(), |c| c.to_string()),
        args.rate.map_or("unlimited".into(), |r| format!("{r}/s")),
        if args.keyed {
            format!("{} keys", keys.len())
        } else {
            "no".into()
        },
    );

    let ctx = shared;
    let mut revival = Revival::new(&ctx);
    // Reused buffers: the per-record work is string pushes plus librdkafka's own copy.
    let (mut payload, mut gseq_buf, mut kseq_buf) =
        (String::with_capacity(128), String::new(), String::new());
    let mut seq: u64 = 0;
    let mut fatal = None;
    let start = Instant::now();
    let (mut last_report, mut last_delivered) = (start, 0u64);

    while !stop.load(Relaxed) && !args.count.is_some_and(|c| seq >= c) {
        if let Some(rate) = args.rate {
            // Pace against the ideal schedule (record i is due at i/rate), not per-second
            // buckets. Sleeping >= 1 ms keeps high rates from costing a syscall per record.
            let (at, now) = (Duration::from_secs_f64(seq as f64 / rate), start.elapsed());
            if at > now {
                std::thread::sleep(
                    (at - now).clamp(Duration::from_millis(1), Duration::from_millis(10)),
                );
                serve(&producer);
                progress(&ctx, start, &mut last_report, &mut last_delivered, seq);
                continue;
            }
        }

        payload.clear();
        payload.push_str(r#"{"first_name":"#);
        payload.push_str(&first[rng.gen_range(0..first.len())]);
        payload.push_str(r#","last_name":"#);
        payload.push_str(&last[rng.gen_range(0..last.len())]);
        if let Some(target) = args.record_bytes {
            pad(&mut payload, target, &words, &mut rng);
        }
        payload.push('}');

        gseq_buf.clear();
        write!(gseq_buf, "{seq}").unwrap();
        let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
            key: "gen.seq",
            value: Some(gseq_buf.as_str()),
        });
        let mut record = BaseRecord::to(&args.topic).payload(payload.as_str());
        if args.keyed {
            let k = rng.gen_range(0..keys.len());
            kseq_buf.clear();
            write!(kseq_buf, "{}", key_seq[k]).unwrap();
            key_seq[k] += 1;
            headers = headers.insert(Header {
                key: "seq",
                value: Some(kseq_buf.as_str()),
            });
            record = record.key(keys[k].as_str());
        }
        record = record.headers(headers);

        match send_retrying(&producer, record, &stop) {
            Ok(true) => seq += 1,
            Ok(false) => break,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }

        if seq % 1024 == 0 {
            serve(&producer);
            progress(&ctx, start, &mut last_report, &mut last_delivered, seq);
            if let Some(fresh) = revival.check(&producer, &cfg, &ctx, &args.topic) {
                producer = fresh;
            }
        }
    }

    if let Some(e) = &fatal {
        eprintln!("generate: producing failed, stopping: {e}");
    }
    eprintln!(
        "generate: flushing {} in-flight records",
        producer.in_flight_count()
    );
    let flushed = producer.flush(Duration::from_secs(30));
    let elapsed = start.elapsed().as_secs_f64();
    let (delivered, failed) = (ctx.delivered.load(Relaxed), ctx.failed.load(Relaxed));
    let undelivered = seq.saturating_sub(delivered + failed);
    eprintln!(
        "generate: done: produced {delivered} records, {failed} delivery failures, {undelivered} \
         undelivered (flush {}), {elapsed:.2}s, {:.0} rec/s",
        if flushed.is_ok() { "ok" } else { "timed out" },
        delivered as f64 / elapsed,
    );
    Ok(fatal.is_none() && failed == 0 && undelivered == 0)
}

/// A producer that lost its brokers for good is replaced. librdkafka 2.12 can decommission
/// every broker on a Metadata response without brokers from a broker starting up, and then
/// never connect again (librdkafka#5301): soaks with broker outages met it. When nothing was
/// delivered for [`Revival::QUIET`] with records in flight, and the producer gets no metadata
/// while a fresh client does, the producer is dropped (its queued records fail, so they are not
/// in the topic) and a new one takes over.
struct Revival {
    delivered: u64,
    since: Instant,
}

impl Revival {
    const QUIET: Duration = Duration::from_secs(60);
    const ASK: Duration = Duration::from_secs(5);

    fn new(ctx: &Ctx) -> Self {
        Revival {
            delivered: ctx.delivered.load(Relaxed),
            since: Instant::now(),
        }
    }

    fn check(
        &mut self,
        producer: &BaseProducer<Ctx>,
        cfg: &ClientConfig,
        ctx: &Ctx,
        topic: &str,
    ) -> Option<BaseProducer<Ctx>> {
        let delivered = ctx.delivered.load(Relaxed);
        if delivered != self.delivered || producer.in_flight_count() == 0 {
            *self = Revival::new(ctx);
            return None;
        }
        if self.since.elapsed() < Self::QUIET {
            return None;
        }
        self.since = Instant::now();
        if producer
            .client()
            .fetch_metadata(Some(topic), Self::ASK)
            .is_ok()
        {
            return None;
        }
        let fresh: BaseProducer<Ctx> = cfg.create_with_context(ctx.clone()).ok()?;
        fresh.client().fetch_metadata(Some(topic), Self::ASK).ok()?;
        eprintln!(
            "generate: nothing delivered for {:?} and the producer gets no answer while a new one \
             does (librdkafka#5301?): replacing it; its {} queued records fail",
            Self::QUIET,
            producer.in_flight_count()
        );
        Some(fresh)
    }
}

/// Enqueues `record` without ever discarding it: on QueueFull, serves delivery reports (which
/// frees queue space) and retries. Returns `Ok(false)` if a stop was requested while waiting.
fn send_retrying(
    producer: &BaseProducer<Ctx>,
    mut record: BaseRecord<'_, str, str>,
    stop: &AtomicBool,
) -> Result<bool, KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(true),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if stop.load(Relaxed) {
                    return Ok(false);
                }
                record = r;
                std::thread::sleep(Duration::from_millis(1));
                serve(producer);
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Serves pending delivery reports without blocking. Each `poll(ZERO)` handles at most one event
/// (a batch of reports), hence several calls. Deliberately not `poll(timeout)` (it busy-spins for
/// sub-ms remainders, stealing CPU from the broker) nor a ThreadedProducer (freeing the messages
/// on another thread doubled the CPU per record: glibc malloc arena contention).
fn serve(producer: &BaseProducer<Ctx>) {
    for _ in 0..16 {
        producer.poll(Duration::ZERO);
    }
}

/// Prints a progress line every 5 s (rate over the last interval, not since start).
fn progress(ctx: &Ctx, start: Instant, last: &mut Instant, last_delivered: &mut u64, sent: u64) {
    let now = Instant::now();
    let dt = now.duration_since(*last);
    if dt < Duration::from_secs(5) {
        return;
    }
    let delivered = ctx.delivered.load(Relaxed);
    eprintln!(
        "generate: {:>7.1}s sent {sent}, delivered {delivered}, failed {}, {:.0} rec/s",
        now.duration_since(start).as_secs_f64(),
        ctx.failed.load(Relaxed),
        (delivered - *last_delivered) as f64 / dt.as_secs_f64(),
    );
    (*last, *last_delivered) = (now, delivered);
}
