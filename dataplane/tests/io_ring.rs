//! The safe DPDK wrapper over in-process virtual ports: `net_ring` pairs, `net_null`,
//! `net_memif`. One EAL (ordinary pages, `--no-pci`) per test process.

mod common;

use std::time::{Duration, Instant};

use sluice_dataplane::io::{BURST, Mbuf, MbufBurst, Port, PortConfig, register_thread};

use common::{eal, payload, pool};

/// Sends `count` packets A→B through a ring pair, one burst at a time, and checks every byte.
#[test]
fn ring_pair_moves_a_million_packets_byte_exact() {
    const COUNT: u64 = 1_000_000;
    let pool = pool(4095);
    let (mut a, mut b) =
        Port::ring_pair(eal(), "rp1", &PortConfig::default(), &pool).expect("ring pair");
    let (_arx, mut atx) = a.take_queues();
    let (mut brx, _btx) = b.take_queues();
    let (atx, brx) = (&mut atx[0], &mut brx[0]);

    let (mut sent, mut received, mut bytes_sent, mut bytes_received) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    let mut out = MbufBurst::new();
    let mut inb = MbufBurst::new();
    while received < COUNT {
        while sent < COUNT && !out.is_full() {
            payload(sent, 60, &mut buf);
            out.push(Mbuf::from_bytes(&pool, &buf).expect("alloc"))
                .expect("room");
            bytes_sent += buf.len() as u64;
            sent += 1;
        }
        atx.tx_burst(&mut out); // refused packets stay in `out` and go next round
        brx.rx_burst(&mut inb);
        for m in inb.drain() {
            payload(received, 60, &mut buf);
            assert_eq!(m.data(), &buf[..], "packet {received} differs");
            bytes_received += m.len() as u64;
            received += 1;
        }
    }
    assert_eq!(sent, COUNT);
    assert_eq!(bytes_received, bytes_sent);
    let sa = a.stats().expect("stats a");
    let sb = b.stats().expect("stats b");
    println!("A: {sa:?}\nB: {sb:?}");
    assert_eq!(sa.tx_packets, COUNT);
    assert_eq!(sb.rx_packets, COUNT);
    // net_ring counts packets but not bytes; the byte-exact check above covers the bytes.
    assert_eq!(pool.in_use(), 0, "every mbuf went back to the pool");
}

/// A TX queue that refuses packets leaves them in the burst; freeing them loses nothing.
#[test]
fn refused_tx_is_returned_and_freed() {
    let pool = pool(1023);
    let cfg = PortConfig {
        rx_desc: 64,
        tx_desc: 64,
        ..PortConfig::default()
    };
    let (mut a, mut b) = Port::ring_pair(eal(), "rp2", &cfg, &pool).expect("ring pair");
    let (_arx, mut atx) = a.take_queues();
    let (mut brx, _btx) = b.take_queues();

    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..8 {
        let mut out = MbufBurst::new();
        for _ in 0..BURST {
            out.push(Mbuf::from_bytes(&pool, &[0xab; 64]).expect("alloc"))
                .expect("room");
        }
        let sent = atx[0].tx_burst(&mut out);
        accepted += sent;
        assert_eq!(
            out.len(),
            BURST - sent,
            "the refused rest stays in the burst"
        );
        refused += out.clear();
        assert!(out.is_empty());
    }
    // A 64-slot ring holds 63 packets.
    assert_eq!(accepted, 63);
    assert_eq!(refused, 8 * BURST - 63);
    assert_eq!(pool.in_use(), 63, "only the packets in the ring are out");
    let mut inb = MbufBurst::new();
    let mut got = 0;
    while brx[0].rx_burst(&mut inb) > 0 {
        got += inb.clear();
    }
    assert_eq!(got, 63);
    assert_eq!(pool.in_use(), 0);
}

/// Two queues, two registered worker threads, each owning its queue pair.
#[test]
fn ring_pair_queues_work_from_their_own_threads() {
    const PER_QUEUE: u64 = 100_000;
    let pool = pool(8191);
    let cfg = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let (mut a, mut b) = Port::ring_pair(eal(), "rp3", &cfg, &pool).expect("ring pair");
    let (_arx, atx) = a.take_queues();
    let (brx, _btx) = b.take_queues();
    std::thread::scope(|s| {
        for (q, (mut tx, mut rx)) in atx.into_iter().zip(brx).enumerate() {
            let pool = pool.clone();
            s.spawn(move || {
                let reg = register_thread().expect("register");
                assert_ne!(reg.lcore(), u32::MAX);
                let tag = u64::try_from(q).expect("q") << 56;
                let (mut sent, mut received) = (0u64, 0u64);
                let mut buf = Vec::new();
                let (mut out, mut inb) = (MbufBurst::new(), MbufBurst::new());
                while received < PER_QUEUE {
                    while sent < PER_QUEUE && !out.is_full() {
                        payload(tag | sent, 60, &mut buf);
                        out.push(Mbuf::from_bytes(&pool, &buf).expect("alloc"))
                            .expect("room");
                        sent += 1;
                    }
                    tx.tx_burst(&mut out);
                    rx.rx_burst(&mut inb);
                    for m in inb.drain() {
                        payload(tag | received, 60, &mut buf);
                        assert_eq!(m.data(), &buf[..], "queue {q} packet {received}");
                        received += 1;
                    }
                }
            });
        }
    });
    let sb = b.stats().expect("stats");
    assert_eq!(sb.rx_packets, 2 * PER_QUEUE);
    assert_eq!(pool.in_use(), 0);
}

/// `net_null` hands out packets on RX and swallows them on TX.
#[test]
fn net_null_rx_and_tx() {
    let pool = pool(2047);
    let id = eal()
        .create_vdev("net_null9,size=128")
        .expect("net_null vdev");
    let mut port = Port::new(eal(), id, &PortConfig::default(), &pool).expect("port");
    assert_eq!(port.info().expect("info").driver, "net_null");
    let (mut rx, mut tx) = port.take_queues();
    let mut burst = MbufBurst::new();
    let mut total = 0;
    while total < 10_000 {
        let n = rx[0].rx_burst(&mut burst);
        assert!(burst.as_slice().iter().all(|m| m.len() == 128));
        total += n;
        let sent = tx[0].tx_burst(&mut burst);
        assert_eq!(sent, n);
    }
    let st = port.stats().expect("stats");
    assert!(st.rx_packets >= 10_000 && st.tx_packets >= 10_000, "{st:?}");
    drop((rx, tx, port));
    assert_eq!(pool.in_use(), 0);
}

/// A pool that cannot fill the RX ring is refused with a clear error, not a silent stall.
#[test]
fn too_small_pool_is_refused() {
    let pool = pool(511);
    let id = eal().create_vdev("net_null8").expect("net_null vdev");
    let err = Port::new(eal(), id, &PortConfig::default(), &pool).expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("511 mbufs") && msg.contains("1024 descriptors"),
        "{msg}"
    );
}

/// Two `net_memif` ports (server and client) in one process, connected over a Unix socket.
#[test]
fn memif_pair_byte_exact() {
    const COUNT: u64 = 100_000;
    let pool = pool(8191);
    let sock = format!("/run/sluice-test-memif-{}.sock", std::process::id());
    let _ = std::fs::remove_file(&sock);
    let s = eal()
        .create_vdev(&format!("net_memif0,role=server,id=0,socket={sock}"))
        .expect("memif server");
    let c = eal()
        .create_vdev(&format!("net_memif1,role=client,id=0,socket={sock}"))
        .expect("memif client");
    let mut server = Port::new(eal(), s, &PortConfig::default(), &pool).expect("server port");
    let mut client = Port::new(eal(), c, &PortConfig::default(), &pool).expect("client port");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(server.link().expect("link").up && client.link().expect("link").up) {
        assert!(Instant::now() < deadline, "memif never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_srx, mut stx) = server.take_queues();
    let (mut crx, _ctx) = client.take_queues();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = Vec::new();
    let (mut out, mut inb) = (MbufBurst::new(), MbufBurst::new());
    while received < COUNT {
        while sent < COUNT && !out.is_full() {
            payload(sent, 60, &mut buf);
            out.push(Mbuf::from_bytes(&pool, &buf).expect("alloc"))
                .expect("room");
            sent += 1;
        }
        stx[0].tx_burst(&mut out);
        crx[0].rx_burst(&mut inb);
        for m in inb.drain() {
            payload(received, 60, &mut buf);
            assert_eq!(m.data(), &buf[..], "packet {received}");
            received += 1;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "memif stalled at {received}"
        );
    }
    drop((stx, crx, server, client));
    let _ = std::fs::remove_file(&sock);
}
