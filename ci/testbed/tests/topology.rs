//! The testbed itself: the one-armed topology carries real TCP between its hosts (kernel only,
//! no Sluice), and everything is removed afterwards.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sluice_testbed::{BackendMode, OneArm, Proc, addr};

#[test]
fn one_arm_carries_tcp_between_client_and_backends() {
    let names;
    {
        let tb = OneArm::new("topo", 2, BackendMode::Nat).expect("testbed");
        names = [tb.client.name().to_owned(), tb.sw.name().to_owned()];
        let _servers = tb
            .start_servers(Path::new(env!("CARGO_BIN_EXE_tb-server")), 8080)
            .expect("servers");
        for i in 0..2 {
            let target = format!("{}:8080", addr::backend4(i));
            let mut cmd = tb.client.command(env!("CARGO_BIN_EXE_tb-client"));
            cmd.args(["--target", &target, "--connections", "10", "--size", "3000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let out = Proc::spawn("tb-client", &mut cmd)
                .expect("spawn")
                .wait_output(Duration::from_secs(60))
                .expect("client");
            let text = String::from_utf8_lossy(&out.stdout);
            println!("{text}");
            assert!(out.status.success(), "client failed: {text}");
            assert!(
                text.contains(&format!("RESULT ok=10 failed=0 b{}=10", i + 1)),
                "{text}"
            );
        }
    }
    let list = sluice_testbed::run("ip", &["netns", "list"]).expect("list");
    for n in names {
        assert!(!list.contains(&n), "{n} left behind");
    }
}
