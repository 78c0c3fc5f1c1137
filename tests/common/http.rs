//! ktransform's HTTP endpoints from a test: a free port to serve them on, `run` flags that
//! serve them there, and a bare GET.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Names;

/// A port free a moment ago: bind :0, read the port, release it for ktransform to bind.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap()
}

/// `run` flags for `names` with the HTTP endpoints on `addr`, then `extra`.
pub fn args_with_http(names: &Names, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let addr = addr.to_string();
    let base = [
        "--source",
        &names.source,
        "--destination",
        &names.destination,
        "--group",
        &names.group,
        "--metrics-addr",
        &addr,
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// GET `path`: (status, body), or None while nothing listens yet.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}
