//! Checks of spreading clients over several addresses: which address each client
//! uses, the recipients with and without `--cross-node`, the share of deliveries
//! that cross nodes, the plans that are refused, and runs against the in-process
//! chat stand-in given twice (one server, two addresses).

use super::super::spread::{clients_elsewhere, cross_share, node_of, round_up_clients, Route};
use super::*;

fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
    ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect()
}

#[test]
fn clients_go_round_robin_over_the_addresses() {
    let nodes: Vec<usize> = (0..7).map(|i| node_of(i, 3)).collect();
    assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
    assert!((0..5).all(|i| node_of(i, 1) == 0));
    assert_eq!(round_up_clients(99, 2), 100);
    assert_eq!(round_up_clients(100, 2), 100);
    assert_eq!(round_up_clients(10, 3), 12);
    assert_eq!(round_up_clients(7, 1), 7);
    assert_eq!(clients_elsewhere(12, 3), 8);
    assert_eq!(clients_elsewhere(10, 1), 0);
}

#[test]
fn without_cross_node_the_recipients_are_the_next_k() {
    let r = Route::next(3);
    assert_eq!(r.recipients(0, 10).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(r.recipients(8, 10).collect::<Vec<_>>(), [9, 0, 1]);
    for k in 0..3 {
        assert_eq!(r.slot(r.offset(k) - 1), Some(k));
        assert_eq!(r.sender((8 + r.offset(k)) % 10, k, 10), 8);
    }
    assert_eq!(r.slot(3), None);
    // K = N: the last recipient is the sender itself, as before.
    let all = Route::next(4);
    assert_eq!(all.recipients(1, 4).collect::<Vec<_>>(), [2, 3, 0, 1]);
    assert_eq!(all.sender(1, 3, 4), 1);
}

/// The next `k` clients after `i` (cyclically) that are on another node: the definition.
fn next_elsewhere(i: usize, k: usize, clients: usize, nodes: usize) -> Vec<usize> {
    (1..clients)
        .map(|j| (i + j) % clients)
        .filter(|&r| node_of(r, nodes) != node_of(i, nodes))
        .take(k)
        .collect()
}

#[test]
fn with_cross_node_every_recipient_is_on_another_node() {
    for nodes in 2..=4 {
        for clients in [nodes, 2 * nodes, 5 * nodes, 12] {
            if clients % nodes != 0 {
                continue;
            }
            for k in 1..=clients_elsewhere(clients, nodes) {
                let r = Route::cross_node(k, nodes);
                assert!(r.offset(k - 1) < clients, "{nodes} {clients} {k}");
                for i in 0..clients {
                    let got: Vec<usize> = r.recipients(i, clients).collect();
                    assert_eq!(got, next_elsewhere(i, k, clients, nodes), "{i} {k} {nodes}");
                    for (slot, &to) in got.iter().enumerate() {
                        let distance = (to + clients - i - 1) % clients;
                        assert_eq!(r.slot(distance), Some(slot));
                        assert_eq!(r.sender(to, slot, clients), i);
                    }
                }
                // A message from the recipient's own node is never expected.
                for d in (nodes - 1..clients).step_by(nodes) {
                    assert_eq!(r.slot(d), None, "distance {d}");
                }
                assert_eq!(
                    cross_share(&addrs(&[1, 2, 3, 4][..nodes]), clients, &r),
                    1.0
                );
            }
        }
    }
    let r = Route::cross_node(3, 2);
    assert_eq!(r.recipients(0, 10).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(r.recipients(7, 10).collect::<Vec<_>>(), [8, 0, 2]);
}

#[test]
fn the_cross_node_share_counts_pairs_on_different_addresses() {
    let two = addrs(&[1, 2]);
    assert_eq!(cross_share(&two, 10, &Route::next(1)), 1.0);
    // 3 clients on 2 nodes: 0→1 and 1→2 cross, 2→0 stays on node 0.
    assert!((cross_share(&two, 3, &Route::next(1)) - 2.0 / 3.0).abs() < 1e-9);
    // Offsets 1, 2, 3 over 2 nodes: 1 and 3 cross.
    assert!((cross_share(&two, 10, &Route::next(3)) - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(cross_share(&addrs(&[1]), 10, &Route::next(1)), 0.0);
    // The same server twice: nothing crosses.
    assert_eq!(cross_share(&addrs(&[1, 1]), 10, &Route::next(1)), 0.0);
}

#[test]
fn plans_over_several_addresses() {
    let a = args("--addr 127.0.0.1:1 --addr 127.0.0.1:2 -c 99 direct");
    assert_eq!(a.addr.len(), 2);
    let p = build_plan(&a).unwrap();
    assert_eq!((p.clients, p.requested_clients), (100, 99));
    assert_eq!(p.cross_share, 1.0);
    assert_eq!(
        (
            p.access.addr_of(0).port(),
            p.access.addr_of(1).port(),
            p.access.addr_of(2).port()
        ),
        (1, 2, 1)
    );
    assert!(plan_warnings(&p, &[])
        .iter()
        .any(|w| w.contains("rounded up to 100")));

    let p = build_plan(&args("--addr 127.0.0.1:1 --addr 127.0.0.1:2 -c 7 fanout 3")).unwrap();
    assert_eq!((p.clients, p.route), (7, Route::next(3)));
    let p = build_plan(&args(
        "--addr 127.0.0.1:1 --addr 127.0.0.1:2 --addr 127.0.0.1:3 -c 10 fanout 8 --cross-node",
    ))
    .unwrap();
    assert_eq!(
        (p.clients, p.route, p.cross_share),
        (12, Route::cross_node(8, 3), 1.0)
    );
    // One address: nothing changes.
    let p = build_plan(&args("--addr 127.0.0.1:1 -c 99 direct")).unwrap();
    assert_eq!(
        (p.clients, p.access.addrs.len(), p.cross_share),
        (99, 1, 0.0)
    );
    assert!(plan_warnings(&p, &[]).is_empty());
    // rate and idle spread without rounding.
    let p = build_plan(&args("--addr 127.0.0.1:1 --addr 127.0.0.1:2 -c 5 rate 100")).unwrap();
    assert_eq!(p.clients, 5);
}

#[test]
fn refuses_plans_that_cannot_spread() {
    let err = |l: &str| build_plan(&args(l)).map(|_| ()).unwrap_err();
    let two = "--addr 127.0.0.1:1 --addr 127.0.0.1:2";
    assert!(err(&format!("{two} -c 10 fanout 6 --cross-node"))
        .contains("only 5 clients on other nodes"));
    assert!(err("--addr 127.0.0.1:1 fanout 2 --cross-node").contains("several --addr"));
    assert!(err(&format!("{two} --target redis direct")).contains("one --addr"));
    assert!(err("--addr 127.0.0.1:1 --addr 10.0.0.1:2 direct").contains("loopback"));
    assert!(
        err("--addr 127.0.0.1:1 --addr 127.0.0.2:1 --tls --ca /x/ca.pem direct")
            .contains("--server-name")
    );
    assert!(
        storm::StormPlan::new(&args(&format!("{two} --target redis storm 5")), 5, 5)
            .unwrap_err()
            .contains("one --addr")
    );
}

#[test]
fn runs_spread_over_one_server_given_twice_are_clean() {
    let addr = chat_server(Fault::None);
    // Each run logs in under names of its own: the server frees the previous run's names
    // only when it has seen those connections close.
    let runs = std::cell::Cell::new(0);
    let run = |l: &str| {
        runs.set(runs.get() + 1);
        let prefix = format!("twice{}-", runs.get());
        run_checked(&args(&format!(
            "--addr {addr} --addr {addr} --prefix {prefix} -q {l}"
        )))
    };
    assert_eq!(run("-c 5 -n 200 -d 10s direct"), Ok(true));
    assert_eq!(
        run("-c 6 -n 200 -d 10s --threads 2 --inflight 8 fanout 2 --cross-node"),
        Ok(true)
    );
    assert_eq!(run("-c 4 -d 500ms rate 400"), Ok(true));
    assert_eq!(run("-d 100ms idle 6"), Ok(true));
    assert_eq!(run("storm 8"), Ok(true));
    assert_eq!(
        run("-c 2 --size 100 burst --senders 3 --burst-bytes 5k"),
        Ok(true)
    );
}
