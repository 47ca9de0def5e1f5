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
        let mut procs = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            let name = format!("b{}", i + 1);
            let mut cmd = b.command(server_bin);
            cmd.args(["--listen", &format!("[::]:{port}"), "--name", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            procs.push(Proc::spawn(&name, &mut cmd)?);
        }
        // Wait until every server accepts (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, b) in self.backends.iter().enumerate() {
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
    let core = usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1);
    let mut cfg = format!(
        r#"tables = "{region}"
tables_wait_s = 10
[eal]
memory = "no-huge"
memory_mb = 256
mbufs = 8191
[[ports]]
device = "net_af_packet0,iface=lb0"
[workers]
cores = [{core}]
[node]
ipv4 = "{}"
ipv6 = "{}"
[conntrack]
capacity_per_worker = 65536
"#,
        addr::LB4,
        addr::LB6
    );
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
