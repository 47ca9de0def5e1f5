//! The BGP speaker against real routing daemons from Debian (BIRD 2, GoBGP), each in its own
//! network namespace:
//!
//! ```text
//!   router ns: bird / gobgpd ── veth r0 192.0.2.1/24, 2001:db8:ffff::1/64
//!                                      │
//!   speaker ns: this test binary ── veth s0 192.0.2.2/24, 2001:db8:ffff::2/64
//! ```
//!
//! Each test runs twice: the parent makes both namespaces, starts the daemon in the router
//! namespace, and re-runs this test binary inside the speaker namespace as a child process (so
//! the speaker's sockets live there). The child runs the speaker and checks the router's RIB
//! through the daemon's own CLI (`birdc`, `gobgp`), polling rather than sleeping. The parent's
//! guards kill the daemon by PID and delete both namespaces, pass or fail.
//!
//! Needs root, `bird2` and `gobgpd` (ci/setup.sh installs them).

use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_control::bgp::{Advertisement, PeerConfig, Speaker, State};
use sluice_testbed::{CHILD_ENV, Netns, Proc, is_child, remove_stale};
use tokio::time::{Instant, sleep};

const ROUTER4: &str = "192.0.2.1";
const ROUTER6: &str = "2001:db8:ffff::1";
const SPEAKER4: &str = "192.0.2.2";
const SPEAKER6: &str = "2001:db8:ffff::2";
const VIP4: &str = "10.90.0.100";
const VIP6: &str = "fd90::100";
/// Our 4-octet AS on eBGP sessions (exercises AS_TRANS and RFC 6793 on the router side).
const MY_ASN: u32 = 4_200_000_001;
const ROUTER_ASN: u32 = 64512;
/// Environment of the child: the router namespace, the daemon, and its control socket.
const ENV_ROUTER_NS: &str = "SLUICE_BGP_ROUTER_NS";
const ENV_BIRD_SOCK: &str = "SLUICE_BGP_BIRD_SOCK";
/// Polls give up after this long (loaded two-core CI machines).
const WAIT: Duration = Duration::from_secs(60);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sluice-bgp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Router and speaker namespaces joined by a veth pair, addressed as in the module docs.
struct Lab {
    router: Netns,
    speaker: Netns,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        remove_stale();
        let router = Netns::new(&format!("{tag}r")).expect("router netns");
        let speaker = Netns::new(&format!("{tag}s")).expect("speaker netns");
        router.veth_to("r0", &speaker, "s0").expect("veth");
        for (ns, dev, v4, v6) in [
            (&router, "r0", ROUTER4, ROUTER6),
            (&speaker, "s0", SPEAKER4, SPEAKER6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])
                .expect("v4 address");
            // nodad: usable at once, no duplicate-address-detection wait.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])
                .expect("v6 address");
        }
        Lab { router, speaker }
    }
}

fn require(tool: &str) {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join(tool).is_file())
            || Path::new("/usr/sbin").join(tool).is_file()
    });
    assert!(
        found,
        "`{tool}` is not installed: run ci/setup.sh (apt: bird2, gobgpd)"
    );
}

/// Re-runs `test` inside `ns` with `env`, waits up to `limit`, echoes its output, and panics
/// unless it passed (`sluice_testbed::run_test_in_netns` plus environment for the child).
fn run_child(ns: &Netns, test: &str, env: &[(&str, &str)], limit: Duration, log: &Path) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = ns.command(&exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = Proc::spawn(test, &mut cmd)
        .expect("spawn child")
        .wait_output(limit);
    let daemon_log = std::fs::read_to_string(log).unwrap_or_default();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("child {test}: {e}\n--- daemon log ---\n{daemon_log}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- child {test} stdout ---\n{stdout}\n--- child stderr ---\n{stderr}");
    if !out.status.success() || !stdout.contains("1 passed") {
        panic!(
            "child {test} failed ({})\n--- daemon log ---\n{daemon_log}",
            out.status
        );
    }
}

/// Starts `program args` in the router namespace, output to `log`.
fn spawn_daemon(ns: &Netns, what: &str, program: &str, args: &[&OsStr], log: &Path) -> Proc {
    let f = File::create(log).expect("log file");
    let mut cmd = ns.command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("log fd"))
        .stderr(f);
    Proc::spawn(what, &mut cmd).expect("daemon starts")
}

/// Polls `probe` until it returns `Some`, for at most [`WAIT`] (blocking; parent side).
fn wait_for_blocking<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    // Counted, not clocked: this crate bans `std::time::Instant` (clippy.toml), and the
    // probes themselves take time, so this waits at least WAIT.
    let step = Duration::from_millis(100);
    for _ in 0..WAIT.as_millis() / step.as_millis() {
        if let Some(v) = probe() {
            return v;
        }
        std::thread::sleep(step);
    }
    panic!("timed out waiting for {what}");
}

/// Runs a CLI command and returns its stdout (empty on failure: callers poll).
fn cli(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => panic!("{program}: {e}"),
    }
}

/// Polls `probe` until it returns `Some` (async; child side).
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            println!("{what}: after {:?}", started.elapsed());
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_established(speaker: &Speaker) {
    wait_for("session Established", || {
        (speaker.peers()[0].state == State::Established).then_some(())
    })
    .await;
}

fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set by the parent"))
}

fn ad4(
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
    local_pref: Option<u32>,
) -> Advertisement {
    Advertisement {
        communities,
        large_communities: large,
        local_pref,
        ..Advertisement::host(VIP4.parse().unwrap(), SPEAKER4.parse().unwrap())
    }
}

fn ad6() -> Advertisement {
    Advertisement {
        communities: vec![0xfde8_0066], // 65000:102
        ..Advertisement::host(VIP6.parse().unwrap(), SPEAKER6.parse().unwrap())
    }
}

// === BIRD ===

fn bird_config(local_asn: u32, peer_asn: u32, ibgp: bool) -> String {
    // `direct`: BIRD treats iBGP peers as multihop unless told they share the link (then the
    // next hop resolves on the link, as for eBGP).
    // `connect delay/retry`: BIRD dials the (passive) speaker quickly after it starts.
    format!(
        "router id {ROUTER4};\n\
         log stderr all;\n\
         protocol device {{ scan time 1; }}\n\
         protocol bgp sluice {{\n\
           local {ROUTER4} as {local_asn};\n\
           neighbor {SPEAKER4} as {peer_asn};\n\
           {direct}\n\
           hold time 9;\n\
           connect delay time 1;\n\
           connect retry time 2;\n\
           error wait time 1, 5;\n\
           ipv4 {{ import all; export none; }};\n\
           ipv6 {{ import all; export none; next hop address {ROUTER6}; }};\n\
         }}\n",
        direct = if ibgp { "direct;" } else { "" },
    )
}

/// Starts BIRD in the router namespace and waits for its control socket.
fn start_bird(lab: &Lab, dir: &TempDir, config: &str) -> (Proc, PathBuf, PathBuf) {
    require("bird");
    require("birdc");
    let conf = dir.0.join("bird.conf");
    let sock = dir.0.join("bird.ctl");
    let log = dir.0.join("bird.log");
    std::fs::write(&conf, config).expect("bird.conf");
    let mut bird = spawn_daemon(
        &lab.router,
        "bird",
        "bird",
        &[
            OsStr::new("-f"),
            OsStr::new("-c"),
            conf.as_os_str(),
            OsStr::new("-s"),
            sock.as_os_str(),
        ],
        &log,
    );
    let sock_str = sock.to_string_lossy().into_owned();
    wait_for_blocking("BIRD's control socket", || {
        if let Ok(Some(status)) = bird.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("bird exited ({status}):\n{log}");
        }
        cli("birdc", &["-s", &sock_str, "show", "status"])
            .contains("Daemon is up and running")
            .then_some(())
    });
    (bird, sock, log)
}

fn birdc(sock: &str, args: &[&str]) -> String {
    let mut argv = vec!["-s", sock];
    argv.extend_from_slice(args);
    cli("birdc", &argv)
}

/// `show route all PREFIX` once the prefix is in BIRD's table.
async fn bird_route(sock: &str, prefix: &str) -> String {
    wait_for(&format!("{prefix} in BIRD's RIB"), || {
        let out = birdc(sock, &["show", "route", "all", prefix]);
        out.contains(prefix).then_some(out)
    })
    .await
}

async fn bird_route_gone(sock: &str, prefix: &str) {
    wait_for(&format!("{prefix} gone from BIRD's RIB"), || {
        let out = birdc(sock, &["show", "route", prefix]);
        (!out.is_empty() && !out.contains(prefix)).then_some(())
    })
    .await;
}

fn assert_has(out: &str, needle: &str) {
    assert!(out.contains(needle), "expected {needle:?} in:\n{out}");
}

#[test]
fn bird_ebgp_ipv4_ipv6_communities_withdraw_graceful_shutdown() {
    const NAME: &str = "bird_ebgp_ipv4_ipv6_communities_withdraw_graceful_shutdown";
    if is_child(NAME) {
        return child_runtime().block_on(bird_ebgp_child());
    }
    let lab = Lab::new("be");
    let dir = TempDir::new("be");
    let (_bird, sock, log) = start_bird(&lab, &dir, &bird_config(ROUTER_ASN, MY_ASN, false));
    run_child(
        &lab.speaker,
        NAME,
        &[
            (ENV_ROUTER_NS, lab.router.name()),
            (ENV_BIRD_SOCK, &sock.to_string_lossy()),
        ],
        Duration::from_secs(300),
        &log,
    );
    // `_bird` is killed by PID, then `lab`'s namespaces are deleted, as they drop.
}

async fn bird_ebgp_child() {
    let sock = env(ENV_BIRD_SOCK);
    let cfg = PeerConfig {
        source_address: Some(SPEAKER4.parse().unwrap()),
        hold_time: Duration::from_secs(9),
        connect_retry: Duration::from_secs(1),
        ..PeerConfig::new(
            MY_ASN,
            ROUTER_ASN,
            ROUTER4.parse().unwrap(),
            SPEAKER4.parse().unwrap(),
        )
    };
    let speaker = Speaker::start(vec![cfg]).expect("speaker");
    let v4 = ad4(vec![0xfde8_0064], vec![(MY_ASN, 1, 2)], Some(300));
    speaker
        .set_advertisements(vec![v4.clone(), ad6()])
        .expect("advertisements");
    wait_established(&speaker).await;
    let proto = birdc(&sock, &["show", "protocols", "all", "sluice"]);
    assert_has(&proto, "Established");

    let r4 = bird_route(&sock, "10.90.0.100/32").await;
    println!("{r4}");
    assert_has(&r4, &format!("via {SPEAKER4}"));
    assert_has(&r4, &format!("BGP.next_hop: {SPEAKER4}"));
    assert_has(&r4, &format!("BGP.as_path: {MY_ASN}"));
    assert_has(&r4, "BGP.origin: IGP");
    assert_has(&r4, "(65000,100)");
    assert_has(&r4, &format!("({MY_ASN}, 1, 2)"));
    // LOCAL_PREF is iBGP-only: BIRD shows its own default (100), not our 300.
    assert!(!r4.contains("BGP.local_pref: 300"), "{r4}");

    let r6 = bird_route(&sock, "fd90::100/128").await;
    println!("{r6}");
    assert_has(&r6, &format!("via {SPEAKER6}"));
    assert_has(&r6, "(65000,102)");

    // Withdraw the IPv4 VIP; the IPv6 one stays.
    let t = Instant::now();
    speaker
        .set_advertisements(vec![ad6()])
        .expect("advertisements");
    bird_route_gone(&sock, "10.90.0.100/32").await;
    println!("IPv4 withdraw visible in BIRD after {:?}", t.elapsed());
    bird_route(&sock, "fd90::100/128").await;

    // Graceful shutdown: GRACEFUL_SHUTDOWN while draining, then withdraw and Cease.
    let drain = Duration::from_secs(4);
    let (_, gshut_seen) = tokio::join!(speaker.shutdown(Some(drain)), async {
        wait_for("GRACEFUL_SHUTDOWN community in BIRD", || {
            birdc(&sock, &["show", "route", "all", "fd90::100/128"])
                .contains("(65535,0)")
                .then_some(())
        })
        .await;
    });
    let () = gshut_seen;
    bird_route_gone(&sock, "fd90::100/128").await;
    let proto = wait_for("BIRD to see the Cease", || {
        let out = birdc(&sock, &["show", "protocols", "all", "sluice"]);
        out.contains("Administrative shutdown").then_some(out)
    })
    .await;
    println!("{proto}");
}

#[test]
fn bird_ibgp_passive_local_pref() {
    const NAME: &str = "bird_ibgp_passive_local_pref";
    if is_child(NAME) {
        return child_runtime().block_on(bird_ibgp_child());
    }
    let lab = Lab::new("bi");
    let dir = TempDir::new("bi");
    let (_bird, sock, log) = start_bird(&lab, &dir, &bird_config(ROUTER_ASN, ROUTER_ASN, true));
    run_child(
        &lab.speaker,
        NAME,
        &[
            (ENV_ROUTER_NS, lab.router.name()),
            (ENV_BIRD_SOCK, &sock.to_string_lossy()),
        ],
        Duration::from_secs(300),
        &log,
    );
}

async fn bird_ibgp_child() {
    let sock = env(ENV_BIRD_SOCK);
    // Passive: BIRD dials us on port 179 of our own address.
    let cfg = PeerConfig {
        source_address: Some(SPEAKER4.parse().unwrap()),
        passive: true,
        hold_time: Duration::from_secs(9),
        ..PeerConfig::new(
            ROUTER_ASN,
            ROUTER_ASN,
            ROUTER4.parse().unwrap(),
            SPEAKER4.parse().unwrap(),
        )
    };
    let speaker = Speaker::start(vec![cfg]).expect("speaker");
    speaker
        .set_advertisements(vec![ad4(vec![0xfde8_0065], vec![], Some(250)), ad6()])
        .expect("advertisements");
    wait_established(&speaker).await;
    let r4 = bird_route(&sock, "10.90.0.100/32").await;
    println!("{r4}");
    assert_has(&r4, &format!("via {SPEAKER4}"));
    assert_has(&r4, "BGP.local_pref: 250");
    assert_has(&r4, "(65000,101)");
    assert_has(&r4, "Type: BGP univ");
    let r6 = bird_route(&sock, "fd90::100/128").await;
    assert_has(&r6, &format!("via {SPEAKER6}"));
    assert_has(&r6, "BGP.local_pref: 100");

    speaker.set_advertisements(vec![]).expect("advertisements");
    bird_route_gone(&sock, "10.90.0.100/32").await;
    bird_route_gone(&sock, "fd90::100/128").await;
    let st = &speaker.peers()[0];
    assert_eq!(st.prefixes_advertised, 0);
    assert!(st.uptime.is_some());
    speaker.shutdown(None).await;
}

// === GoBGP ===

const GOBGP_API: &str = "127.0.0.1:50051";

fn gobgp_config() -> String {
    format!(
        "[global.config]\n\
           as = {ROUTER_ASN}\n\
           router-id = \"{ROUTER4}\"\n\
           local-address-list = [\"{ROUTER4}\"]\n\
         \n\
         [[neighbors]]\n\
           [neighbors.config]\n\
             neighbor-address = \"{SPEAKER4}\"\n\
             peer-as = {MY_ASN}\n\
           [neighbors.timers.config]\n\
             hold-time = 9\n\
             keepalive-interval = 3\n\
             connect-retry = 2\n\
           [[neighbors.afi-safis]]\n\
             [neighbors.afi-safis.config]\n\
               afi-safi-name = \"ipv4-unicast\"\n\
           [[neighbors.afi-safis]]\n\
             [neighbors.afi-safis.config]\n\
               afi-safi-name = \"ipv6-unicast\"\n"
    )
}

/// `gobgp ARGS` against the daemon in the router namespace.
fn gobgp(router_ns: &str, args: &[&str]) -> String {
    let mut argv = vec![
        "netns",
        "exec",
        router_ns,
        "gobgp",
        "-u",
        "127.0.0.1",
        "-p",
        "50051",
    ];
    argv.extend_from_slice(args);
    cli("ip", &argv)
}

#[test]
fn gobgp_ebgp_ipv4_ipv6() {
    const NAME: &str = "gobgp_ebgp_ipv4_ipv6";
    if is_child(NAME) {
        return child_runtime().block_on(gobgp_child());
    }
    require("gobgpd");
    require("gobgp");
    let lab = Lab::new("gb");
    let dir = TempDir::new("gb");
    let conf = dir.0.join("gobgpd.toml");
    let log = dir.0.join("gobgpd.log");
    std::fs::write(&conf, gobgp_config()).expect("gobgpd.toml");
    let _gobgpd = spawn_daemon(
        &lab.router,
        "gobgpd",
        "gobgpd",
        &[
            OsStr::new("-f"),
            conf.as_os_str(),
            OsStr::new("-t"),
            OsStr::new("toml"),
            OsStr::new("--api-hosts"),
            OsStr::new(GOBGP_API),
        ],
        &log,
    );
    let ns = lab.router.name().to_owned();
    wait_for_blocking("gobgpd's API", || {
        gobgp(&ns, &["neighbor"]).contains(SPEAKER4).then_some(())
    });
    run_child(
        &lab.speaker,
        NAME,
        &[(ENV_ROUTER_NS, lab.router.name())],
        Duration::from_secs(300),
        &log,
    );
}

async fn gobgp_child() {
    let ns = env(ENV_ROUTER_NS);
    let cfg = PeerConfig {
        source_address: Some(SPEAKER4.parse().unwrap()),
        hold_time: Duration::from_secs(9),
        connect_retry: Duration::from_secs(1),
        ..PeerConfig::new(
            MY_ASN,
            ROUTER_ASN,
            ROUTER4.parse().unwrap(),
            SPEAKER4.parse().unwrap(),
        )
    };
    let speaker = Speaker::start(vec![cfg]).expect("speaker");
    speaker
        .set_advertisements(vec![
            ad4(vec![0xfde8_0064], vec![(MY_ASN, 1, 2)], None),
            ad6(),
        ])
        .expect("advertisements");
    wait_established(&speaker).await;
    let neighbor = wait_for("gobgp to report Established", || {
        let out = gobgp(&ns, &["neighbor", SPEAKER4]);
        out.to_lowercase()
            .contains("bgp state = established")
            .then_some(out)
    })
    .await;
    println!("{neighbor}");

    let rib4 = wait_for("10.90.0.100/32 in GoBGP's RIB", || {
        let out = gobgp(&ns, &["global", "rib", "-a", "ipv4"]);
        out.contains("10.90.0.100/32").then_some(out)
    })
    .await;
    println!("{rib4}");
    let line = rib4
        .lines()
        .find(|l| l.contains("10.90.0.100/32"))
        .unwrap_or_default();
    assert_has(line, SPEAKER4);
    assert_has(line, &MY_ASN.to_string());
    assert_has(line, "65000:100");
    assert_has(line, &format!("{MY_ASN}:1:2"));

    let rib6 = wait_for("fd90::100/128 in GoBGP's RIB", || {
        let out = gobgp(&ns, &["global", "rib", "-a", "ipv6"]);
        out.contains("fd90::100/128").then_some(out)
    })
    .await;
    println!("{rib6}");
    assert_has(&rib6, SPEAKER6);
    assert_has(&rib6, "65000:102");

    speaker
        .set_advertisements(vec![ad6()])
        .expect("advertisements");
    wait_for("10.90.0.100/32 gone from GoBGP's RIB", || {
        // An empty table prints "Network not in table"; a failed call prints nothing.
        let out = gobgp(&ns, &["global", "rib", "-a", "ipv4"]);
        (!out.is_empty() && !out.contains("10.90.0.100/32")).then_some(())
    })
    .await;
    assert!(gobgp(&ns, &["global", "rib", "-a", "ipv6"]).contains("fd90::100/128"));
    let peer: IpAddr = ROUTER4.parse().unwrap();
    assert_eq!(speaker.peers()[0].peer_address, peer);
    speaker.shutdown(None).await;
}

/// BIRD with `password "sluice-md5"`: the speaker with the same password reaches Established
/// and announces; with a wrong one the kernel drops every segment, so the session never gets
/// past Connect/Active.
#[test]
fn bird_md5_matching_password_comes_up_and_a_wrong_one_does_not() {
    const NAME: &str = "bird_md5_matching_password_comes_up_and_a_wrong_one_does_not";
    if is_child(NAME) {
        return child_runtime().block_on(bird_md5_child());
    }
    let lab = Lab::new("bm");
    let dir = TempDir::new("bm");
    let config = bird_config(ROUTER_ASN, MY_ASN, false).replacen(
        "hold time 9;",
        "hold time 9;\n           password \"sluice-md5\";",
        1,
    );
    let (_bird, sock, log) = start_bird(&lab, &dir, &config);
    run_child(
        &lab.speaker,
        NAME,
        &[
            (ENV_ROUTER_NS, lab.router.name()),
            (ENV_BIRD_SOCK, &sock.to_string_lossy()),
        ],
        Duration::from_secs(300),
        &log,
    );
}

async fn bird_md5_child() {
    let sock = env(ENV_BIRD_SOCK);
    let peer = |password: &str| PeerConfig {
        source_address: Some(SPEAKER4.parse().unwrap()),
        hold_time: Duration::from_secs(9),
        connect_retry: Duration::from_secs(1),
        password: Some(password.into()),
        ..PeerConfig::new(
            MY_ASN,
            ROUTER_ASN,
            ROUTER4.parse().unwrap(),
            SPEAKER4.parse().unwrap(),
        )
    };
    // Wrong password first: nothing gets through for several connect attempts.
    let wrong = Speaker::start(vec![peer("not-the-password")]).expect("speaker");
    wrong
        .set_advertisements(vec![ad4(vec![], vec![], None)])
        .expect("advertisements");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = &wrong.peers()[0];
    assert_ne!(st.state, State::Established, "{st:?}");
    assert_eq!(st.established_transitions, 0, "{st:?}");
    assert!(
        !birdc(&sock, &["show", "protocols", "all", "sluice"]).contains("Established"),
        "BIRD accepted a session with a wrong MD5 password"
    );
    wrong.shutdown(None).await;
    drop(wrong);

    // The matching password: Established, and the route arrives.
    let right = Speaker::start(vec![peer("sluice-md5")]).expect("speaker");
    right
        .set_advertisements(vec![ad4(vec![], vec![], None)])
        .expect("advertisements");
    wait_established(&right).await;
    assert_has(
        &birdc(&sock, &["show", "protocols", "all", "sluice"]),
        "Established",
    );
    let r4 = bird_route(&sock, "10.90.0.100/32").await;
    assert_has(&r4, &format!("via {SPEAKER4}"));
    right.shutdown(None).await;
}

/// The peer set changed at run time (`Speaker::set_peers`): a speaker started with no peers
/// takes BIRD as a new peer and announces to it; a changed hold time restarts the session
/// (BIRD reads Cease / Other Configuration Change, then the session comes back); removing the
/// peer sends Cease / Peer De-configured and BIRD drops the route.
#[test]
fn bird_peer_added_changed_and_removed_at_run_time() {
    const NAME: &str = "bird_peer_added_changed_and_removed_at_run_time";
    if is_child(NAME) {
        return child_runtime().block_on(bird_runtime_peers_child());
    }
    let lab = Lab::new("bp");
    let dir = TempDir::new("bp");
    let (_bird, sock, log) = start_bird(&lab, &dir, &bird_config(ROUTER_ASN, MY_ASN, false));
    run_child(
        &lab.speaker,
        NAME,
        &[
            (ENV_ROUTER_NS, lab.router.name()),
            (ENV_BIRD_SOCK, &sock.to_string_lossy()),
        ],
        Duration::from_secs(300),
        &log,
    );
}

async fn bird_runtime_peers_child() {
    let sock = env(ENV_BIRD_SOCK);
    let speaker = Speaker::start(vec![]).expect("a speaker with no peers");
    speaker
        .set_advertisements(vec![ad4(vec![], vec![], None)])
        .expect("advertisements");
    let cfg = PeerConfig {
        source_address: Some(SPEAKER4.parse().unwrap()),
        hold_time: Duration::from_secs(9),
        connect_retry: Duration::from_secs(1),
        ..PeerConfig::new(
            MY_ASN,
            ROUTER_ASN,
            ROUTER4.parse().unwrap(),
            SPEAKER4.parse().unwrap(),
        )
    };
    speaker
        .set_peers(vec![cfg.clone()])
        .await
        .expect("set_peers");
    wait_established(&speaker).await;
    let r4 = bird_route(&sock, "10.90.0.100/32").await;
    assert_has(&r4, &format!("via {SPEAKER4}"));

    // Changed: a new session with the new hold time (BIRD takes the lower of 9 and 6).
    let changed = PeerConfig {
        hold_time: Duration::from_secs(6),
        ..cfg
    };
    speaker.set_peers(vec![changed]).await.expect("set_peers");
    wait_for("the session back with the new hold time", || {
        let st = speaker.peers().into_iter().next()?;
        let out = birdc(&sock, &["show", "protocols", "all", "sluice"]);
        (st.state == State::Established
            && st.established_transitions == 2
            && out.contains("Established")
            && out
                .lines()
                .any(|l| l.contains("Hold timer:") && l.trim_end().ends_with("/6")))
        .then_some(())
    })
    .await;
    let proto = birdc(&sock, &["show", "protocols", "all", "sluice"]);
    println!("{proto}");
    bird_route(&sock, "10.90.0.100/32").await;

    // Removed: Cease / Peer De-configured, the route leaves BIRD.
    speaker.set_peers(vec![]).await.expect("set_peers");
    assert!(speaker.peers().is_empty());
    bird_route_gone(&sock, "10.90.0.100/32").await;
    let proto = wait_for("BIRD to see Peer De-configured", || {
        let out = birdc(&sock, &["show", "protocols", "all", "sluice"]);
        out.to_lowercase().contains("de-configured").then_some(out)
    })
    .await;
    println!("{proto}");
    speaker.shutdown(None).await;
}
