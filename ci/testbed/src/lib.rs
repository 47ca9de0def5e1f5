//! The namespace testbed used by Sluice's integration tests, benches and demo.
//!
//! Guarantees:
//! - every namespace made here is deleted when its [`Netns`] guard drops (pass, fail or panic),
//!   which also removes every veth end inside it;
//! - every process started through [`Proc`] is killed by its own PID and reaped when the guard
//!   drops; nothing else is ever signalled;
//! - names carry the test process's PID, so parallel runs never collide, and
//!   [`remove_stale`] clears what a killed run left behind.
//!
//! Only addresses inside these namespaces are ever used (RFC 5737 / RFC 3849 documentation
//! ranges and the 10.x range, inside namespaces we created).
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every namespace the testbed makes.
pub const PREFIX: &str = "sl";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr when it exits non-zero.
///
/// # Errors
/// Spawn failure or a non-zero exit.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> io::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        let argv: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `sl-<tag>-<pid>-<n>` with its loopback up.
    ///
    /// # Errors
    /// When `ip netns add` fails (not root, name too long, …).
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace: sockets it (and threads it starts, and
    /// processes it spawns) opens from now on live there. Used by tests whose own API clients
    /// must reach servers inside the testbed. Other threads are unaffected.
    ///
    /// # Errors
    /// When the namespace file cannot be opened or `setns(2)` fails.
    pub fn enter(&self) -> io::Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS…`.
    ///
    /// # Errors
    /// A non-zero exit.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut argv = vec!["-n", &self.name];
        argv.extend_from_slice(args);
        run("ip", &argv)
    }

    /// Runs a command inside the namespace to completion.
    ///
    /// # Errors
    /// A non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<String> {
        let mut argv = vec!["netns", "exec", &self.name, program];
        argv.extend_from_slice(args);
        run("ip", &argv)
    }

    /// A [`Command`] that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's own).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Sets a sysctl inside the namespace.
    ///
    /// # Errors
    /// A non-zero exit.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Creates a veth pair with both ends inside this namespace, both up, IPv6 off on them
    /// (so the kernel sends no router/neighbour chatter of its own).
    ///
    /// # Errors
    /// A non-zero exit.
    pub fn veth_pair(&self, a: &str, b: &str) -> io::Result<()> {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        for end in [a, b] {
            self.sysctl(&format!("net.ipv6.conf.{end}.disable_ipv6"), "1")?;
            self.ip(&["link", "set", end, "up"])?;
        }
        Ok(())
    }

    /// Creates a veth pair from this namespace (`a`) to `other` (`b`), both up.
    ///
    /// # Errors
    /// A non-zero exit.
    pub fn veth_to(&self, a: &str, other: &Netns, b: &str) -> io::Result<()> {
        self.ip(&[
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            other.name(),
        ])?;
        self.ip(&["link", "set", a, "up"])?;
        other.ip(&["link", "set", b, "up"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed: could not delete netns {}: {e}", self.name);
        }
    }
}

/// Deletes namespaces left by earlier runs of this testbed whose process no longer exists.
pub fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let pid = parts.nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A child process killed (by its own PID) and reaped when the guard drops.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    /// Spawns `cmd`.
    ///
    /// # Errors
    /// Spawn failure.
    pub fn spawn(what: &str, cmd: &mut Command) -> io::Result<Proc> {
        let child = cmd.spawn()?;
        Ok(Proc {
            child: Some(child),
            what: what.to_owned(),
        })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it has exited (without reaping its output).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Takes its piped stdout, to read while it runs.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Kills it now (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for it to exit and returns its output (when piped). On timeout it
    /// is killed and an error says so.
    ///
    /// # Errors
    /// Timeout or I/O failure.
    pub fn wait_output(mut self, timeout: Duration) -> io::Result<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_wait()?.is_some() {
                let child = self
                    .child
                    .take()
                    .ok_or_else(|| io::Error::other("no child"))?;
                return child.wait_with_output();
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not finish within {timeout:?}; killed", self.what),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Environment variable that tells a re-executed test binary which test to run as the child.
pub const CHILD_ENV: &str = "SLUICE_TESTBED_CHILD";

/// Whether this process is the child half of `test` (see [`run_test_in_netns`]).
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// Re-runs the current test binary's test `test` inside `ns` as a separate process (so it has
/// its own DPDK EAL and its own network namespace), waits up to `timeout`, echoes its output and
/// fails unless it passed.
///
/// # Errors
/// Spawn failure, timeout, or the child test failing.
pub fn run_test_in_netns(ns: &Netns, test: &str, timeout: Duration) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = ns.command(&exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Proc::spawn(test, &mut cmd)?.wait_output(timeout)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- child {test} stdout ---\n{stdout}\n--- child stderr ---\n{stderr}");
    // A filtered-out test also exits 0: make sure the child really ran and passed it.
    if !out.status.success() || !stdout.contains("1 passed") {
        return Err(io::Error::other(format!(
            "child test {test} failed: {}",
            out.status
        )));
    }
    Ok(())
}

/// The one-armed load-balancer testbed: a switch namespace with a bridge, and a client, an LB
/// node and `n` backends each in its own namespace with one veth to the bridge.
///
/// ```text
///   client (10.90.0.2, fd90::2) ──┐
///   lb     (veth `lb0`, no kernel address: DPDK owns it) ──┤ br0 (namespace sw)
///   b1…bn  (10.90.0.11…, fd90::11…, TCP servers) ──┘
/// ```
///
/// The VIP is 10.90.0.100 / fd90::100; the LB's own (SNAT) address 10.90.0.3 / fd90::3. Every
/// MAC is fixed (`02:90:00:00:00:XX`, XX = the host byte) so tables can name them. Checksum and
/// segmentation offloads are off on the hosts' veths, so every frame the LB sees on `lb0` is a
/// complete, checksummed packet of at most the MTU (as on a real wire).
#[derive(Debug)]
pub struct OneArm {
    /// The backends, in order b1…bn.
    pub backends: Vec<Netns>,
    /// The client.
    pub client: Netns,
    /// The LB node; its `lb0` is the port DPDK opens with `net_af_packet`.
    pub lb: Netns,
    /// The switch (declared last so it is deleted after the hosts).
    pub sw: Netns,
}

/// Testbed addressing (see [`OneArm`]).
pub mod addr {
    /// The VIP (IPv4).
    pub const VIP4: &str = "10.90.0.100";
    /// The VIP (IPv6).
    pub const VIP6: &str = "fd90::100";
    /// The LB node's own IPv4 address (NAT source).
    pub const LB4: &str = "10.90.0.3";
    /// The LB node's own IPv6 address (NAT source).
    pub const LB6: &str = "fd90::3";
    /// The client's IPv4 address.
    pub const CLIENT4: &str = "10.90.0.2";
    /// The client's IPv6 address.
    pub const CLIENT6: &str = "fd90::2";
    /// The MAC of host byte `b`.
    pub fn mac(b: u8) -> [u8; 6] {
        [0x02, 0x90, 0, 0, 0, b]
    }
    /// The MAC of host byte `b`, as text.
    pub fn mac_str(b: u8) -> String {
        format!("02:90:00:00:00:{b:02x}")
    }
    /// Backend `i`'s (0-based) host byte.
    pub fn backend_host(i: usize) -> u8 {
        11 + u8::try_from(i).unwrap_or(0)
    }
    /// Backend `i`'s IPv4 address.
    pub fn backend4(i: usize) -> String {
        format!("10.90.0.{}", backend_host(i))
    }
    /// Backend `i`'s IPv6 address.
    pub fn backend6(i: usize) -> String {
        format!("fd90::{:x}", backend_host(i))
    }
    /// Host byte of the LB node.
    pub const LB_HOST: u8 = 3;
    /// Host byte of the client.
    pub const CLIENT_HOST: u8 = 2;
}

/// How the backends are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendMode {
    /// Plain hosts (full NAT: the LB rewrites addresses both ways).
    Nat,
    /// L2 direct server return: the VIP on the backends' loopback, ARP for it suppressed,
    /// replies go straight to the client.
    Dsr,
}

impl OneArm {
    /// Builds the testbed.
    ///
    /// # Errors
    /// Any failing `ip` / `sysctl` / `ethtool` command.
    pub fn new(tag: &str, backends: usize, mode: BackendMode) -> io::Result<OneArm> {
        remove_stale();
        let sw = Netns::new(&format!("{tag}sw"))?;
        // No multicast snooping: NDP solicitations (solicited-node multicast) must reach the LB
        // node, whose kernel never joins those groups (DPDK answers for its addresses).
        sw.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        sw.sysctl("net.ipv6.conf.br0.disable_ipv6", "1")?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let host = |name: &str, byte: u8, ifname: &str| -> io::Result<Netns> {
            let ns = Netns::new(&format!("{tag}{name}"))?;
            let port = format!("p{name}");
            ns.veth_to(ifname, &sw, &port)?;
            sw.ip(&["link", "set", &port, "master", "br0"])?;
            ns.ip(&["link", "set", ifname, "down"])?;
            ns.ip(&["link", "set", ifname, "address", &addr::mac_str(byte)])?;
            // Complete, MTU-sized frames on the wire: no checksum offload, TSO or GSO.
            ns.exec(
                "ethtool",
                &["-K", ifname, "tx", "off", "tso", "off", "gso", "off"],
            )?;
            if ifname == "eth0" {
                ns.ip(&["addr", "add", &format!("10.90.0.{byte}/24"), "dev", ifname])?;
                let v6 = format!("fd90::{byte:x}/64");
                ns.ip(&["-6", "addr", "add", &v6, "dev", ifname, "nodad"])?;
            } else {
                // The LB's port belongs to DPDK: the kernel keeps no address and stays quiet.
                ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")?;
            }
            ns.ip(&["link", "set", ifname, "up"])?;
            Ok(ns)
        };
        let client = host("c", addr::CLIENT_HOST, "eth0")?;
        let lb = host("lb", addr::LB_HOST, "lb0")?;
        let mut bs = Vec::new();
        for i in 0..backends {
            let b = host(&format!("b{}", i + 1), addr::backend_host(i), "eth0")?;
            if mode == BackendMode::Dsr {
                b.ip(&["addr", "add", &format!("{}/32", addr::VIP4), "dev", "lo"])?;
                b.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{}/128", addr::VIP6),
                    "dev",
                    "lo",
                ])?;
                b.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
                b.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
                b.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
                b.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            }
            bs.push(b);
        }
        Ok(OneArm {
            backends: bs,
            client,
            lb,
            sw,
        })
    }

    /// Starts `tb-server` (at `server_bin`) on every backend, listening on `port` on all
    /// addresses, named b1…bn. The servers are killed when the returned guards drop.
    ///
    /// # Errors
    /// Spawn failure.
    pub fn start_servers(&self, server_bin: &Path, port: u16) -> io::Result<Vec<Proc>> {
        start_servers_on(&self.backends, server_bin, port)
    }
}

/// Path of one of the testbed's own binaries (`tb-server`, `tb-client`), built next to the
/// running test binary (`target/<profile>/`). `cargo test --workspace` builds them.
///
/// # Errors
/// When the binary is not there, with the command that builds it.
pub fn bin_path(name: &str) -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/, a binary from target/<profile>/.
    let here = exe
        .parent()
        .ok_or_else(|| io::Error::other("no target dir"))?;
    let p = [Some(here), here.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    if p.exists() {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not built; run `cargo build -p sluice-testbed --bins` (cargo test --workspace does)",
                p.display()
            ),
        ))
    }
}

/// Runs `tb-client` in `ns` against `target` and returns its stdout; fails on a non-zero exit
/// (some connection failed) with the client's output.
///
/// # Errors
/// Spawn failure, timeout, or a failed connection.
pub fn run_client(
    ns: &Netns,
    target: &str,
    args: &[&str],
    timeout: Duration,
) -> io::Result<String> {
    let mut cmd = ns.command(bin_path("tb-client")?);
    cmd.args(["--target", target])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Proc::spawn("tb-client", &mut cmd)?.wait_output(timeout)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tb-client {target} failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(text)
}

/// The `RESULT` line of `tb-client` output, parsed: (ok, failed, per-backend counts).
pub fn client_result(
    text: &str,
) -> Option<(usize, usize, std::collections::BTreeMap<String, usize>)> {
    let line = text.lines().rev().find(|l| l.starts_with("RESULT "))?;
    let mut ok = None;
    let mut failed = None;
    let mut per = std::collections::BTreeMap::new();
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=')?;
        let v: usize = v.parse().ok()?;
        match k {
            "ok" => ok = Some(v),
            "failed" => failed = Some(v),
            b => {
                per.insert(b.to_owned(), v);
            }
        }
    }
    Some((ok?, failed?, per))
}

impl Proc {
    /// Spawns `cmd` with stdout piped, echoes its lines as `[what] …`, and waits up to
    /// `timeout` for a line containing `ready`, which it returns with the guard.
    ///
    /// # Errors
    /// Spawn failure, or no such line in time (the process is then killed).
    pub fn spawn_ready(
        what: &str,
        cmd: &mut Command,
        ready: &str,
        timeout: Duration,
    ) -> io::Result<(Proc, String)> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut p = Proc::spawn(what, cmd)?;
        let stdout = p
            .take_stdout()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let tag = what.to_owned();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                println!("[{tag}] {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains(ready) => return Ok((p, l)),
                Ok(_) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{what} never printed {ready:?}: {e}"),
                    ));
                }
            }
        }
    }
}

/// The `sluice-dataplane` config the tests use on [`OneArm`]'s LB node: table region `region`,
/// ordinary pages, `net_af_packet` on `lb0`, one worker (core 1 when there are two), the node
/// addresses, and an optional exception device.
pub fn dataplane_test_config(region: &str, exception: Option<&str>) -> String {
    let mut cfg = dataplane_config_for(region, "lb0", addr::LB4);
    cfg += &format!("ipv6 = \"{}\"\n", addr::LB6);
    if let Some(dev) = exception {
        cfg += &format!("[exception]\ndevice = \"{dev}\"\n");
    }
    cfg
}

/// A loopback TCP port free at the time of the call (for a daemon's listener in a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `sluice-control` config the tests use with [`OneArm`]: node `lb1`, table region
/// `region`, metrics on `127.0.0.1:metrics_port`, the API on the Unix socket `socket` (so
/// tests never touch the default `/run/sluice/control.sock`), pool `demo`, and one NAT service
/// `web` on `VIP4:port` with backends `b1..=b{backends}` (OneArm's first `backends` hosts).
/// The service is the file's last table, so a caller may append `[services.health]` to it.
pub fn control_test_config(
    region: &str,
    metrics_port: u16,
    socket: &Path,
    port: u16,
    backends: usize,
) -> String {
    let mut s = format!(
        "[node]\nname = \"lb1\"\nipv4 = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [api]\nsocket = \"{}\"\n\n\
         [tables]\nregion = \"{region}\"\nmax_services = 16\nmax_workers = 4\narena_mb = 4\n\n\
         [[pools]]\nname = \"demo\"\naddresses = [\"10.90.0.96/28\"]\n\n\
         [[services]]\nname = \"web\"\nvip = \"{}\"\nport = {port}\nprotocol = \"tcp\"\nmode = \"nat\"\n",
        addr::LB4,
        socket.display(),
        addr::VIP4
    );
    for i in 0..backends {
        s += &format!(
            "\n[[services.backends]]\nname = \"b{}\"\naddress = \"{}\"\nmac = \"{}\"\n",
            i + 1,
            addr::backend4(i),
            addr::mac_str(addr::backend_host(i))
        );
    }
    s
}

/// The ECMP testbed: a client behind a router that spreads a VIP over two LB nodes by
/// multipath routes (issue #6's ECMP and failover acceptance).
///
/// ```text
///   client (eth0 10.91.1.2) ── router (rc 10.91.1.1; br0 10.90.0.1/24, m1 10.91.3.1, m2 10.91.4.1)
///                                 br0 ├── lb1 (veth `lb0`, MAC …:03, DPDK owns it; node 10.90.0.3)
///                                     ├── lb2 (veth `lb0`, MAC …:04, DPDK owns it; node 10.90.0.4)
///                                     └── b1…bn (10.90.0.11…, default route via 10.90.0.1)
///   mgmt1 (eth0 10.91.3.2) ── router m1      mgmt2 (eth0 10.91.4.2) ── router m2
/// ```
///
/// The bridge `br0` lives in the router namespace; each LB node's data port has no kernel
/// address (DPDK answers ARP for the node address), so each node's control daemon runs in a
/// small management namespace of its own (`mgmt[i]`) with a point-to-point link to the router,
/// where it peers with the router's BGP daemon and announces the VIP with its node's data
/// address as next hop. The router forwards (`ip_forward=1`) and hashes multipath routes on
/// the L4 ports (`fib_multipath_hash_policy=1`). Backends are set up as in [`OneArm`]
/// ([`BackendMode::Dsr`]: the VIP on their loopback, replies straight to the client through
/// the router). MACs are `02:90:00:00:00:XX` as in [`OneArm`]; offloads are off on every host
/// veth. Every namespace (and so every veth) is deleted when the value drops.
#[derive(Debug)]
pub struct Ecmp {
    /// The backends, in order b1…bn.
    pub backends: Vec<Netns>,
    /// The client.
    pub client: Netns,
    /// The LB nodes' data namespaces (lb1, lb2); each one's `lb0` is the port DPDK opens.
    pub lbs: Vec<Netns>,
    /// The LB nodes' management namespaces, where their control daemons run.
    pub mgmt: Vec<Netns>,
    /// The router (declared last so it is deleted after the hosts).
    pub router: Netns,
}

/// [`Ecmp`] addressing.
pub mod ecmp_addr {
    /// The client's address.
    pub const CLIENT4: &str = "10.91.1.2";
    /// The router's address towards the client.
    pub const ROUTER_CLIENT4: &str = "10.91.1.1";
    /// The router's address on the LB/backend segment.
    pub const ROUTER4: &str = "10.90.0.1";
    /// LB node `i`'s (0-based) host byte on the segment: 3, 4, …
    pub fn lb_host(i: usize) -> u8 {
        3 + u8::try_from(i).unwrap_or(0)
    }
    /// LB node `i`'s (0-based) data address (its `node.ipv4`, the BGP next hop).
    pub fn lb4(i: usize) -> String {
        format!("10.90.0.{}", lb_host(i))
    }
    /// The router's address on LB node `i`'s management link.
    pub fn router_mgmt4(i: usize) -> String {
        format!("10.91.{}.1", 3 + i)
    }
    /// LB node `i`'s management address (its control daemon's BGP source address).
    pub fn mgmt4(i: usize) -> String {
        format!("10.91.{}.2", 3 + i)
    }
}

/// Turns off checksum offload, TSO, GSO and GRO on `ifname` in `ns`.
fn offloads_off(ns: &Netns, ifname: &str) -> io::Result<()> {
    ns.exec(
        "ethtool",
        &[
            "-K", ifname, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ],
    )
    .map(|_| ())
}

impl Ecmp {
    /// Builds the testbed with `lbs` LB nodes (at most 8) and `backends` DSR backends.
    ///
    /// # Errors
    /// Any failing `ip` / `sysctl` / `ethtool` command.
    pub fn new(tag: &str, lbs: usize, backends: usize) -> io::Result<Ecmp> {
        remove_stale();
        let router = Netns::new(&format!("{tag}rt"))?;
        router.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        router.sysctl("net.ipv6.conf.br0.disable_ipv6", "1")?;
        router.ip(&["addr", "add", "10.90.0.1/24", "dev", "br0"])?;
        router.ip(&["link", "set", "br0", "up"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        router.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        router.sysctl("net.ipv4.conf.all.send_redirects", "0")?;

        // A host on the segment: a veth from `ns`'s `ifname` to a bridge port in the router.
        let on_segment = |name: &str, byte: u8, ifname: &str| -> io::Result<Netns> {
            let ns = Netns::new(&format!("{tag}{name}"))?;
            let port = format!("p{name}");
            ns.veth_to(ifname, &router, &port)?;
            router.sysctl(&format!("net.ipv6.conf.{port}.disable_ipv6"), "1")?;
            router.ip(&["link", "set", &port, "master", "br0"])?;
            offloads_off(&router, &port)?;
            ns.ip(&["link", "set", ifname, "down"])?;
            ns.ip(&["link", "set", ifname, "address", &addr::mac_str(byte)])?;
            ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")?;
            offloads_off(&ns, ifname)?;
            ns.ip(&["link", "set", ifname, "up"])?;
            Ok(ns)
        };
        // A point-to-point link from the router's `rif` (`raddr`/24) to `ns`'s eth0 (`addr`/24).
        let p2p = |ns: &Netns, rif: &str, raddr: &str, addr: &str| -> io::Result<()> {
            router.veth_to(rif, ns, "eth0")?;
            for (n, i) in [(&router, rif), (ns, "eth0")] {
                n.sysctl(&format!("net.ipv6.conf.{i}.disable_ipv6"), "1")?;
                offloads_off(n, i)?;
            }
            router.ip(&["addr", "add", &format!("{raddr}/24"), "dev", rif])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.ip(&["route", "add", "default", "via", raddr])?;
            Ok(())
        };

        let client = Netns::new(&format!("{tag}c"))?;
        p2p(&client, "rc", ecmp_addr::ROUTER_CLIENT4, ecmp_addr::CLIENT4)?;

        let mut lb_ns = Vec::new();
        let mut mgmt = Vec::new();
        for i in 0..lbs {
            lb_ns.push(on_segment(
                &format!("lb{}", i + 1),
                ecmp_addr::lb_host(i),
                "lb0",
            )?);
            let m = Netns::new(&format!("{tag}m{}", i + 1))?;
            p2p(
                &m,
                &format!("m{}", i + 1),
                &ecmp_addr::router_mgmt4(i),
                &ecmp_addr::mgmt4(i),
            )?;
            mgmt.push(m);
        }

        let mut bs = Vec::new();
        for i in 0..backends {
            let byte = addr::backend_host(i);
            let b = on_segment(&format!("b{}", i + 1), byte, "eth0")?;
            b.ip(&["addr", "add", &format!("10.90.0.{byte}/24"), "dev", "eth0"])?;
            b.ip(&["route", "add", "default", "via", ecmp_addr::ROUTER4])?;
            b.ip(&["addr", "add", &format!("{}/32", addr::VIP4), "dev", "lo"])?;
            b.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            b.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            b.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
            b.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            bs.push(b);
        }
        Ok(Ecmp {
            backends: bs,
            client,
            lbs: lb_ns,
            mgmt,
            router,
        })
    }

    /// Starts `tb-server` on every backend (as [`OneArm::start_servers`]).
    ///
    /// # Errors
    /// Spawn failure, or a server that never listens.
    pub fn start_servers(&self, server_bin: &Path, port: u16) -> io::Result<Vec<Proc>> {
        start_servers_on(&self.backends, server_bin, port)
    }

    /// The router's kernel route for the VIP (`ip route show VIP/32`), empty when none.
    ///
    /// # Errors
    /// A failing `ip`.
    pub fn vip_route(&self) -> io::Result<String> {
        self.router
            .ip(&["route", "show", &format!("{}/32", addr::VIP4)])
    }

    /// The `sluice-dataplane` config for LB node `i` (0-based): as [`dataplane_test_config`],
    /// with the node's own address and no exception port.
    pub fn dataplane_config(&self, i: usize, region: &str) -> String {
        dataplane_config_for(region, "lb0", &ecmp_addr::lb4(i))
    }

    /// The `sluice-control` config for LB node `i` (0-based): node `lb{i+1}` with its data
    /// address, table region `region`, metrics on `127.0.0.1:metrics_port` (in its management
    /// namespace), the API on `socket`, pool `demo`, one DSR service `web` on `VIP4:port` with
    /// every backend, and one BGP peer `router` (AS 64512 → 64500) from its management address
    /// to the router's end of that link. No health checks.
    pub fn control_config(
        &self,
        i: usize,
        region: &str,
        metrics_port: u16,
        socket: &Path,
        port: u16,
    ) -> String {
        let mut s = format!(
            "[node]\nname = \"lb{}\"\nipv4 = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
             [api]\nsocket = \"{}\"\n\n\
             [tables]\nregion = \"{region}\"\nmax_services = 16\nmax_workers = 4\narena_mb = 4\n\n\
             [bgp]\n\n[[bgp.peers]]\nname = \"router\"\nmy_asn = 64512\npeer_asn = 64500\n\
             peer_address = \"{}\"\nsource_address = \"{}\"\nhold_time = \"9s\"\n\n\
             [[bgp.advertisements]]\npools = [\"demo\"]\n\n\
             [[pools]]\nname = \"demo\"\naddresses = [\"10.90.0.96/28\"]\n\n\
             [[services]]\nname = \"web\"\nvip = \"{}\"\nport = {port}\nprotocol = \"tcp\"\nmode = \"dsr\"\n",
            i + 1,
            ecmp_addr::lb4(i),
            socket.display(),
            ecmp_addr::router_mgmt4(i),
            ecmp_addr::mgmt4(i),
            addr::VIP4
        );
        for b in 0..self.backends.len() {
            s += &format!(
                "\n[[services.backends]]\nname = \"b{}\"\naddress = \"{}\"\nmac = \"{}\"\n",
                b + 1,
                addr::backend4(b),
                addr::mac_str(addr::backend_host(b))
            );
        }
        s
    }

    /// The router's BIRD 2 config: router id `10.91.1.1`, AS 64500, one multihop eBGP session
    /// per LB node's management address (importing everything, exporting nothing), the
    /// connected segment (`protocol direct`) so the next hops resolve, and a kernel protocol
    /// that merges equal BGP routes into one multipath kernel route.
    pub fn bird_config(&self) -> String {
        let mut s = format!(
            "router id {};\nprotocol device {{ scan time 1; }}\n\
             protocol direct {{ ipv4; interface \"br0\"; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export where source = RTS_BGP; }};\n  \
             merge paths yes;\n}}\n",
            ecmp_addr::ROUTER_CLIENT4
        );
        for i in 0..self.lbs.len() {
            s += &format!(
                "protocol bgp lb{} {{\n  local {} as 64500;\n  neighbor {} as 64512;\n  \
                 multihop 2;\n  hold time 9;\n  ipv4 {{ import all; export none; }};\n}}\n",
                i + 1,
                ecmp_addr::router_mgmt4(i),
                ecmp_addr::mgmt4(i)
            );
        }
        s
    }
}

/// `tb-server` on each of `backends`, named b1…bn, waited for until each accepts.
fn start_servers_on(backends: &[Netns], server_bin: &Path, port: u16) -> io::Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let name = format!("b{}", i + 1);
        let mut cmd = b.command(server_bin);
        cmd.args(["--listen", &format!("[::]:{port}"), "--name", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.push(Proc::spawn(&name, &mut cmd)?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, b) in backends.iter().enumerate() {
        let probe = addr::backend4(i);
        loop {
            let ok = b
                .command("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{probe}/{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "server b{} never listened",
                    i + 1
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(procs)
}

/// A `sluice-dataplane` config for DPDK port `iface` (opened with `net_af_packet`) and node
/// address `ipv4`: table region `region`, ordinary pages, one worker (core 1 when there are
/// two). Its last table is `[node]`, so a caller may append `ipv6 = ...` to it.
pub fn dataplane_config_for(region: &str, iface: &str, ipv4: &str) -> String {
    let core = usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1);
    format!(
        r#"tables = "{region}"
tables_wait_s = 10
[eal]
memory = "no-huge"
memory_mb = 256
mbufs = 8191
[[ports]]
device = "net_af_packet0,iface={iface}"
[workers]
cores = [{core}]
[conntrack]
capacity_per_worker = 65536
[node]
ipv4 = "{ipv4}"
"#
    )
}
