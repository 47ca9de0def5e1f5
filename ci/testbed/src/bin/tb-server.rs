//! `tb-server`: a real TCP backend for the testbed. Speaks enough HTTP/1.1 (keep-alive) for
//! curl and for `tb-client`: `GET` answers with the backend's name, `POST` echoes its body; both
//! carry an `X-Backend: NAME` header. Runs until killed.
//!
//! Usage: `tb-server --listen ADDR:PORT --name NAME`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let listen = get("--listen").unwrap_or_else(|| "0.0.0.0:8080".into());
    let name = get("--name").unwrap_or_else(|| "backend".into());
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tb-server: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("tb-server {name} listening on {listen}");
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &name);
        });
    }
}

fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let method = request_line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let body = if method == "POST" {
            let mut body = vec![0u8; content_length];
            reader.read_exact(&mut body)?;
            body
        } else {
            format!("{name}\n").into_bytes()
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        )?;
        out.write_all(&body)?;
        out.flush()?;
    }
}
