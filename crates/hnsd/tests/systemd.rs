//! systemd readiness: READY=1 on the notify socket only once the start-up reconcile pass has
//! repaired the kernel, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;
use hns_lab::{HnsdOptions, Lab, Side};
use serde_json::json;

#[test]
fn ready_arrives_after_the_first_reconcile_and_stopping_at_shutdown() {
    let lab = Lab::new().unwrap();
    let d = lab.start_hnsd(&["--no-default-network"]).expect("hnsd starts");
    let api = Api::new(&lab);
    let net = api.post("/networks", &json!({"Name": "r", "Type": "nat", "Ipams": [{"Subnets": [{"IpAddressPrefix": "10.71.0.0/24"}]}]})).ok();
    let bridge = net["InterfaceName"].as_str().unwrap().to_owned();
    d.stop().unwrap();
    // Drift while hnsd is down: only the start-up reconcile pass brings the bridge back.
    lab.in_host("ip", &["link", "del", &bridge]).unwrap();

    let path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let lab_ref = &lab;
    let bridge_ref = &bridge;
    std::thread::scope(|s| {
        // Looks at the kernel the moment READY=1 arrives, while hnsd may still be starting.
        let watcher = s.spawn(move || {
            let mut buf = [0u8; 256];
            let n = sock.recv(&mut buf).expect("a notification within 30 s");
            let bridge_up = lab_ref.try_in(Side::Host, "ip", &["link", "show", bridge_ref]).unwrap().status.success();
            (String::from_utf8_lossy(&buf[..n]).into_owned(), bridge_up, sock)
        });
        let opts = HnsdOptions {
            args: vec!["--no-default-network".into(), "--reconcile-interval".into(), "10m".into()],
            env: vec![("NOTIFY_SOCKET".into(), path.to_str().unwrap().into())],
            ..Default::default()
        };
        let d = lab_ref.start_hnsd_with(opts).expect("hnsd starts");
        let (first, bridge_up, sock) = watcher.join().unwrap();
        assert_eq!(first, "READY=1\n");
        assert!(bridge_up, "READY=1 came before the start-up reconcile re-created {bridge_ref}");
        d.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("STOPPING=1 within 30 s");
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    });
}
