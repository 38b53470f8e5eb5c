"""deploy/cluster_e2e_verdict.py: the verdict of deploy/cluster-e2e.py: what a run of
300 clients through three nodes must show (nothing lost or doubled between live clients,
order kept per sender, the killed node's clients back within the lease), and the reasons
when it does not.
"""

PREFIX = "[e2e]"


def say(*parts):
    print(PREFIX, *parts, flush=True)


def is_increasing(seqs):
    return all(a < b for a, b in zip(seqs, seqs[1:]))


def verdict(run, reasons):
    a = run.args
    clients = run.clients

    # The balancer's PROXY header (send-proxy-v2): each node knows its clients by their own
    # address and port, not by the balancer's.
    seen = [c for c in clients if c.peer_seen is not None and c.local is not None]
    own = [c for c in seen if c.peer_seen == c.local]
    say(f"client addresses: {len(own)} of the {len(seen)} clients the nodes list are known by their own address and port")
    if not seen or len(own) != len(seen):
        odd = next((c for c in seen if c.peer_seen != c.local), None)
        reasons.append(
            f"the nodes list {len(seen) - len(own)} of {len(seen)} clients under another address"
            + (f" ({odd.name}: {odd.peer_seen}, its own {odd.local})" if odd else "")
        )
    limit = a.relogin_limit if a.relogin_limit is not None else a.lease + a.slack
    stable = {c.name for c in clients if c.first_login is not None and not c.drops}

    # Who lost the connection, and who should have.
    if run.killed_node:
        on_killed = [c for c in clients if c.node == run.killed_node]
        dropped = [c for c in clients if c.drops]
        wrong = [c for c in dropped if c.node != run.killed_node]
        kept = [c for c in on_killed if not c.drops]
        twice = [c for c in dropped if len(c.drops) > 1]
        if not on_killed:
            reasons.append(f"the killed node {run.killed_node} held no client (the balancer spread nobody to it?)")
        if wrong:
            reasons.append(
                f"{len(wrong)} clients of surviving nodes lost their connection "
                f"({', '.join(f'{c.name}@{c.node}' for c in wrong[:5])})"
            )
        if kept:
            reasons.append(f"{len(kept)} clients of the killed node kept their connection ({kept[0].name})")
        if twice:
            reasons.append(f"{len(twice)} clients lost their connection more than once ({twice[0].name})")
        slow, never = [], []
        worst = 0.0
        for c in dropped:
            if not c.relogins:
                never.append(c)
                continue
            took = c.relogins[0] - min(run.kill_time, c.drops[0])
            worst = max(worst, took)
            if took > limit:
                slow.append((c, took))
        if never:
            reasons.append(f"{len(never)} clients never logged in again ({never[0].name}: {never[0].taken} times taken)")
        if slow:
            c, took = max(slow, key=lambda x: x[1])
            reasons.append(
                f"{len(slow)} clients logged in again later than lease + slack = {limit:g}s after the kill "
                f"(worst {c.name}: {took:.2f}s)"
            )
        run.worst_relogin = worst
        run.reconnected = len(dropped)
        if a.stop == "lame":
            spread(run, dropped, on_killed, reasons)
        where = {}
        for c in dropped:
            where[c.node_after] = where.get(c.node_after, 0) + 1
        say(
            f"reconnects: {len(dropped)} clients lost their connection ({len(on_killed)} were on {run.killed_node}), "
            f"{sum(1 for c in dropped if c.relogins)} logged in again, worst {worst:.2f}s after the kill "
            f"(limit {limit:g}s), {sum(c.taken for c in clients)} `is taken` answers on the way; "
            f"now on: {', '.join(f'{k}: {v}' for k, v in sorted(where.items(), key=str))}"
        )
    else:
        run.worst_relogin = 0.0
        run.reconnected = sum(1 for c in clients if c.drops)
        if run.reconnected:
            reasons.append(f"{run.reconnected} clients lost their connection, and no node was killed")

    # Every pair.
    exact = loose = crossing = 0
    expected = lost = extra = 0
    bad_exact, bad_loose = [], []  # the first few of each, described
    n_bad_exact = n_bad_loose = 0
    loose_delivered = loose_sent = 0
    for s in clients:
        for r in s.recipients:
            got = r.recv.get(s.name, [])
            if s.name in stable and r.name in stable:
                exact += 1
                if s.node is not None and r.node is not None and s.node != r.node:
                    crossing += 1
                expected += s.seq
                if got != list(range(s.seq)):
                    have = set(got)
                    missing = sum(1 for n in range(s.seq) if n not in have)
                    lost += missing
                    extra += len(got) - (s.seq - missing)
                    n_bad_exact += 1
                    if len(bad_exact) < 5:
                        bad_exact.append(describe(s, r, got))
            else:
                loose += 1
                loose_sent += s.seq
                loose_delivered += len(got)
                if not is_increasing(got) or (got and got[-1] >= s.seq):
                    n_bad_loose += 1
                    if len(bad_loose) < 5:
                        bad_loose.append(describe(s, r, got))
    if bad_exact:
        reasons.append(
            f"{n_bad_exact} pairs between clients that stayed connected differ "
            f"({lost} lines lost, {extra} duplicated or out of order); first: {bad_exact[0]}"
        )
        for b in bad_exact:
            say(f"  pair: {b}")
    if bad_loose:
        reasons.append(f"{n_bad_loose} pairs with a reconnected side have duplicates or disorder; first: {bad_loose[0]}")
        for b in bad_loose:
            say(f"  pair (reconnected side): {b}")

    # Errors.
    undeliverable_total = 0
    wrong_undeliv = []
    for c in clients:
        for who, n in c.undeliverable.items():
            undeliverable_total += n
            if who in stable:
                wrong_undeliv.append(f"{c.name} was told {who} is unreachable ({n}x)")
    if wrong_undeliv:
        reasons.append(f"`no such user`/`could not deliver` about clients that never left: {wrong_undeliv[0]}")
    odd = [(c.name, u) for c in clients for u in c.unexpected]
    if odd:
        reasons.append(f"{len(odd)} unexpected lines, first {odd[0][0]}: {odd[0][1]!r}")
        for name, u in odd[:5]:
            say(f"  unexpected: {name}: {u!r}")

    run.pairs_exact, run.pairs_loose = exact, loose
    say(
        f"pairs: {exact} between clients that stayed connected ({crossing} of them across nodes; "
        f"{expected} lines expected, "
        f"{lost} lost, {extra} duplicated or out of order); {loose} with a reconnected side "
        f"({loose_delivered} of {loose_sent} lines arrived, order and uniqueness checked); "
        f"{undeliverable_total} `no such user`/`could not deliver` answers"
    )


def spread(run, dropped, on_node, reasons):
    """Lame duck mode: every client of the node was told before its close, none before the
    delay, and the closes were spread: no second held more than twice the even rate (plus
    a little for the rounding of rounds)."""
    a = run.args
    untold = [c for c in dropped if not c.told]
    if untold:
        reasons.append(f"{len(untold)} clients of the lame duck node were closed without the notice ({untold[0].name})")
    drops = sorted(c.drops[0] for c in dropped)
    if not drops:
        return
    early = drops[0] - run.kill_time
    if early < a.delay * 0.8:
        reasons.append(f"the first lame duck close came {early:.2f}s after the signal, before drain_delay = {a.delay:g}s")
    rate = len(on_node) / a.spread if a.spread > 0 else len(on_node)
    busiest = max(sum(1 for t in drops if start <= t < start + 1.0) for start in drops)
    allowed = 2 * rate + 3
    say(
        f"lame duck: {len(drops)} closes from {early:.2f}s to {drops[-1] - run.kill_time:.2f}s after the signal, "
        f"at most {busiest} in one second (even rate {rate:.1f}/s, allowed {allowed:.0f})"
    )
    if busiest > allowed:
        reasons.append(f"lame duck closed {busiest} clients within one second (even rate {rate:.1f}/s)")


def describe(s, r, got):
    head = got[:6]
    return f"{s.name}->{r.name}: sent 0..{s.seq - 1}, got {len(got)} lines {head}{'...' if len(got) > 6 else ''}"
