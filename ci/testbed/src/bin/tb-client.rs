//! `tb-client`: a real TCP client for the testbed. Opens connections to a target (a VIP),
//! sends HTTP/1.1 `POST` requests with deterministic payloads, checks that every response body
//! is byte-for-byte the payload, and counts which backend (`X-Backend`) served each connection.
//!
//! Usage: `tb-client --target ADDR:PORT [--connections N] [--requests R] [--size BYTES]
//!         [--concurrency C] [--timeout-ms MS (default 10000)] [--hold-ms MS]`
//!
//! Prints one `conn I backend NAME ok|failed: reason` line per connection and a final
//! `RESULT ok=N failed=M NAME=count …` line. Exits 0 only if every connection succeeded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

struct Opt {
    target: SocketAddr,
    connections: usize,
    requests: usize,
    size: usize,
    concurrency: usize,
    timeout: Duration,
    hold: Duration,
}

fn parse() -> Result<Opt, String> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let num = |flag: &str, d: usize| -> Result<usize, String> {
        get(flag).map_or(Ok(d), |v| {
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        })
    };
    let target = get("--target")
        .ok_or("--target ADDR:PORT is required")?
        .parse()
        .map_err(|e| format!("--target: {e}"))?;
    Ok(Opt {
        target,
        connections: num("--connections", 30)?,
        requests: num("--requests", 1)?.max(1),
        size: num("--size", 1000)?,
        concurrency: num("--concurrency", 4)?.max(1),
        timeout: Duration::from_millis(num("--timeout-ms", 10000)? as u64),
        hold: Duration::from_millis(num("--hold-ms", 0)? as u64),
    })
}

/// Deterministic payload for connection `c`, request `r`.
fn payload(c: usize, r: usize, size: usize) -> Vec<u8> {
    let mut x = (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (r as u64 + 1);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn one(opt: &Opt, c: usize) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&opt.target, opt.timeout)
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(opt.timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(opt.timeout))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut w = stream;
    let mut backend = String::new();
    for r in 0..opt.requests {
        if r > 0 && !opt.hold.is_zero() {
            std::thread::sleep(opt.hold);
        }
        let body = payload(c, r, opt.size);
        write!(
            w,
            "POST / HTTP/1.1\r\nHost: vip\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .and_then(|()| w.write_all(&body))
        .map_err(|e| format!("request {r}: send: {e}"))?;
        let mut status = String::new();
        reader
            .read_line(&mut status)
            .map_err(|e| format!("request {r}: read: {e}"))?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("request {r}: bad status {status:?}"));
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("request {r}: header: {e}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-backend") {
                    let v = v.trim().to_owned();
                    if !backend.is_empty() && backend != v {
                        return Err(format!("request {r}: moved from {backend} to {v}"));
                    }
                    backend = v;
                }
            }
        }
        let mut got = vec![0u8; len];
        reader
            .read_exact(&mut got)
            .map_err(|e| format!("request {r}: body: {e}"))?;
        if got != body {
            return Err(format!(
                "request {r}: body differs ({} bytes back, {} sent)",
                got.len(),
                body.len()
            ));
        }
    }
    Ok(backend)
}

fn main() {
    let opt = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tb-client: {e}");
            std::process::exit(2);
        }
    };
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opt.concurrency.min(opt.connections.max(1)) {
            s.spawn(|| {
                loop {
                    let c = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        if *n >= opt.connections {
                            return;
                        }
                        *n += 1;
                        *n - 1
                    };
                    let r = one(&opt, c);
                    match &r {
                        Ok(b) => println!("conn {c} backend {b} ok"),
                        Err(e) => println!("conn {c} failed: {e}"),
                    }
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((c, r));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for (_, r) in &results {
        match r {
            Ok(b) => *per.entry(b.clone()).or_default() += 1,
            Err(_) => failed += 1,
        }
    }
    let ok = results.len() - failed;
    let spread: Vec<String> = per.iter().map(|(b, n)| format!("{b}={n}")).collect();
    println!("RESULT ok={ok} failed={failed} {}", spread.join(" "));
    std::process::exit(i32::from(failed > 0));
}
