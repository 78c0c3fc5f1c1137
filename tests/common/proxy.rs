//! A TCP proxy in front of a broker listener that can cut one Kafka client off: the
//! connections whose first request names `client.id` `target` stop being answered (what they
//! send is read and dropped, nothing comes back, the sockets stay open), as a client whose
//! connections never come back sees it, while every other client goes on through the proxy.
//!
//! The broker must advertise the proxy's port on the proxied listener (`scripts/kafka.sh`'s
//! `KAFKA_PROXIED_PORT` and `KAFKA_PROXIED_ADVERTISED_PORT`), else a client bootstrapped at the
//! proxy would find the broker's own address in the metadata and go around it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;

pub struct Proxy {
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream`.
    pub fn start(port: u16, upstream: u16, target: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
        let cut = Arc::new(AtomicBool::new(false));
        let (flag, target) = (cut.clone(), target.to_string());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (cut, target) = (flag.clone(), target.clone());
                thread::spawn(move || {
                    let _ = connection(client, upstream, &target, &cut);
                });
            }
        });
        Proxy { cut }
    }

    /// From now on, `target`'s connections, open and new, get no answer.
    pub fn cut(&self) {
        self.cut.store(true, Relaxed);
    }
}

/// The client id in a Kafka request after its size: api key (i16), api version (i16),
/// correlation id (i32), then the client id as a nullable string (i16 length), in every header
/// version.
fn client_id(request: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes(request.get(8..10)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    Some(String::from_utf8_lossy(request.get(10..10 + len)?).into_owned())
}

fn connection(
    mut client: TcpStream,
    upstream: u16,
    target: &str,
    cut: &Arc<AtomicBool>,
) -> io::Result<()> {
    let mut size = [0u8; 4];
    client.read_exact(&mut size)?;
    let mut first = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    client.read_exact(&mut first)?;
    let cuttable = client_id(&first).is_some_and(|id| id == target);
    let silent = || cuttable && cut.load(Relaxed);
    if silent() {
        return swallow(&mut client);
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(&size)?;
    server.write_all(&first)?;
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let (cut_back, back_cuttable) = (cut.clone(), cuttable);
    thread::spawn(move || {
        let _ = relay(&mut from_server, &mut to_client, || {
            back_cuttable && cut_back.load(Relaxed)
        });
    });
    relay(&mut client, &mut server, silent)
}

/// Copies `from` to `to` until either closes; while `silent()`, drops what it reads instead.
fn relay(from: &mut TcpStream, to: &mut TcpStream, silent: impl Fn() -> bool) -> io::Result<()> {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer)?;
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        if !silent() {
            to.write_all(&buffer[..n])?;
        }
    }
}

/// Reads and drops everything the client sends, answering nothing, until it closes.
fn swallow(client: &mut TcpStream) -> io::Result<()> {
    io::copy(client, &mut io::sink()).map(|_| ())
}
