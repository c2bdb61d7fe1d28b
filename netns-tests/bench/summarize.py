#!/usr/bin/python3
"""Turns bench.sh's results file (one JSON object a line) into the human-readable
table and, as the very last line, one JSON object with the headline numbers.

  summarize.py RESULTS.jsonl [ELAPSED_S]

Medians over repetitions everywhere; ratios are tunnel / direct of the medians.
"""
import json
import statistics
import sys


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, nd=1, unit=""):
    if v is None:
        return "n/a"
    return f"{v:.{nd}f}{unit}"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    elapsed = float(sys.argv[2]) if len(sys.argv) > 2 else None
    out = {}
    lines = []
    p = lines.append

    # --- knees
    knees, limited = {}, {}
    for r in rows:
        if r["kind"] != "knee" or r.get("scale"):
            continue
        d = r["data"]
        knees.setdefault((r["path"], d["size"], d["flows"]), []).append(d["knee_pps"])
        if d.get("sender_limited"):
            limited.setdefault((r["path"], d["size"], d["flows"]), []).append(r["rep"])
    sizes = sorted({k[1] for k in knees if k[0] in ("direct", "tunnel")})
    flows = sorted({k[2] for k in knees if k[0] in ("direct", "tunnel")})
    peers = [r["path"] for r in rows if r["kind"] == "peer"]
    p("faketcp benchmark: tunnel vs plain UDP and the real peers over the same namespaces (client -- router NAT/conntrack -- server)")
    p("")
    p("1. Knee: highest offered rate with < 1 % loss (median of repetitions; Mbit/s of UDP payload)")
    p(f"   {'size':>5} {'flows':>5} | {'direct kpps':>11} {'Mbit/s':>8} | {'tunnel kpps':>11} {'Mbit/s':>8} | {'ratio':>6}  each rep kpps: direct / tunnel")
    for fl in flows:
        for sz in sizes:
            d = med(knees.get(("direct", sz, fl), []))
            t = med(knees.get(("tunnel", sz, fl), []))
            rt = ratio(t, d)
            reps = " / ".join(",".join(f"{x / 1000:.0f}" for x in knees.get((path, sz, fl), []))
                              for path in ("direct", "tunnel"))
            star = {path: "*" if len(limited.get((path, sz, fl), [])) * 2 > len(knees.get((path, sz, fl), [1]))
                    else " " for path in ("direct", "tunnel")}
            p(f"   {sz:>5} {fl:>5} | {fmt(d and d / 1000):>10}{star['direct']} {fmt(d and d * sz * 8 / 1e6):>8} | "
              f"{fmt(t and t / 1000):>10}{star['tunnel']} {fmt(t and t * sz * 8 / 1e6):>8} | {fmt(rt, 3):>6}  {reps}")
            sfx = f"_{sz}" if fl == 1 else f"_{sz}_{fl}flows"
            out["ratio" + sfx] = round(rt, 4) if rt is not None else None
            out["knee_kpps_direct" + sfx] = round(d / 1000, 2) if d is not None else None
            out["knee_kpps_tunnel" + sfx] = round(t / 1000, 2) if t is not None else None

    if limited:
        p("   * the sender could not offer more, and nothing was lost: a floor, not a knee (most repetitions)")
    for peer in peers:
        for fl in flows:
            t = med(knees.get((peer, 1400, fl), []))
            d = med(knees.get(("direct", 1400, fl), []))
            if t is None:
                continue
            reps = ",".join(f"{x / 1000:.0f}" for x in knees.get((peer, 1400, fl), []))
            p(f"   {peer}: 1400 B x {fl} flow{'s' if fl > 1 else ''}: {fmt(t / 1000)} kpps ({fmt(t * 1400 * 8 / 1e6)} Mbit/s), "
              f"ratio to direct {fmt(ratio(t, d), 3)}; each rep kpps: {reps}")
            sfx = "_1400" if fl == 1 else "_1400_16flows"
            out[f"{peer}_knee_kpps{sfx}"] = round(t / 1000, 2)
            out[f"{peer}_ratio{sfx}"] = round(ratio(t, d), 4) if ratio(t, d) is not None else None
    scale = {}
    for r in rows:
        if r["kind"] == "knee" and r.get("scale"):
            scale.setdefault(r["queues"], []).append(r["data"]["knee_pps"])
    if scale:
        p("   scaling, 1400 B x 16 flows, faketcp --queues N: " +
          ", ".join(f"{q}: {med(v) / 1000:.1f} kpps" for q, v in sorted(scale.items())))
        for q, v in sorted(scale.items()):
            out[f"scale_knee_kpps_q{q}"] = round(med(v) / 1000, 2)
    for r in rows:
        if r["kind"] == "router":
            p(f"   router conntrack INVALID drops during the knee searches: {r['invalid_drops']}")
            out["router_invalid_drops"] = r["invalid_drops"]

    # --- RTT
    rtt = {}
    for r in rows:
        if r["kind"] == "rtt":
            rtt.setdefault(r["path"], []).append(r["data"])
    p("")
    p("2. RTT of 2000 sequential 64-byte ping-pongs (median of 3 runs), us")
    p(f"   {'path':>7} | {'p50':>8} {'p90':>8} {'p99':>8} {'lost':>5}")
    rv = {}
    for path in ["direct", "tunnel"] + [x for x in peers if x in rtt]:
        v = rtt.get(path, [])
        rv[path] = {k: med([x[k] for x in v]) for k in ("p50_us", "p90_us", "p99_us", "lost")}
        x = rv[path]
        p(f"   {path:>7} | {fmt(x['p50_us']):>8} {fmt(x['p90_us']):>8} {fmt(x['p99_us']):>8} {fmt(x['lost'], 0):>5}")
    d50, t50 = rv["direct"]["p50_us"], rv["tunnel"]["p50_us"]
    d99, t99 = rv["direct"]["p99_us"], rv["tunnel"]["p99_us"]
    added50 = t50 - d50 if None not in (d50, t50) else None
    added99 = t99 - d99 if None not in (d99, t99) else None
    p(f"   added by the tunnel: p50 {fmt(added50)} us, p99 {fmt(added99)} us; "
      f"ratio p50 {fmt(ratio(t50, d50), 2)}, p99 {fmt(ratio(t99, d99), 2)}")
    for peer in peers:
        if peer in rv and rv[peer]["p50_us"] is not None and d50 is not None:
            a50 = rv[peer]["p50_us"] - d50
            a99 = rv[peer]["p99_us"] - d99 if d99 is not None else None
            p(f"   added by {peer}: p50 {fmt(a50)} us, p99 {fmt(a99)} us")
            out[f"{peer}_rtt_added_p50_us"] = round(a50, 2)
            out[f"{peer}_rtt_added_p99_us"] = round(a99, 2) if a99 is not None else None
    out.update(rtt_direct_p50_us=d50, rtt_tunnel_p50_us=t50, rtt_direct_p99_us=d99, rtt_tunnel_p99_us=t99,
               rtt_added_p50_us=round(added50, 2) if added50 is not None else None,
               rtt_added_p99_us=round(added99, 2) if added99 is not None else None,
               rtt_ratio_p50=round(ratio(t50, d50), 3) if ratio(t50, d50) else None)

    # --- CPU
    cpu = {}
    for r in rows:
        if r["kind"] != "cpu":
            continue
        d = r["data"]
        c = d.get(f"cpu_us_per_dgram_{r['client_pid']}")
        s = d.get(f"cpu_us_per_dgram_{r['server_pid']}")
        k = d.get(f"cpu_us_per_dgram_{r['sink_pid']}")
        g = d.get("self_cpu_us_per_dgram")
        # The path's CPU: the processes that carry a datagram (the kernel's
        # forwarding runs in their context as softirq, so it is inside their sys time).
        path_cpu = None if None in (g, k) else g + k + ((c or 0) + (s or 0) if r["path"] != "direct" else 0)
        cpu.setdefault((r["path"], d["size"]), []).append(
            dict(client=c, server=s, gen=g, sink=k, path=path_cpu, machine=d["machine_cpu_us_per_dgram"],
                 rate=d["rate"], loss=d["loss_pct"]))
    p("")
    p("3. CPU per datagram at a fixed rate (half the lower 1-flow knee), median of 3; us of CPU per datagram")
    p(f"   {'size':>5} {'rate pps':>9} | {'tun client':>10} {'tun server':>10} | {'path direct':>11} "
      f"{'path tunnel':>11} {'ratio':>6} | {'machine d/t':>13} | loss % d/t")
    for sz in sorted({k[1] for k in cpu}):
        t = cpu.get(("tunnel", sz), [])
        d = cpu.get(("direct", sz), [])
        tc, ts = med([x["client"] for x in t]), med([x["server"] for x in t])
        pd, pt = med([x["path"] for x in d]), med([x["path"] for x in t])
        md, mt = med([x["machine"] for x in d]), med([x["machine"] for x in t])
        rate = t[0]["rate"] if t else None
        p(f"   {sz:>5} {fmt(rate, 0):>9} | {fmt(tc, 2):>10} {fmt(ts, 2):>10} | {fmt(pd, 2):>11} {fmt(pt, 2):>11} "
          f"{fmt(ratio(pt, pd), 2):>6} | {fmt(md, 1):>6}/{fmt(mt, 1):<6} | "
          f"{fmt(med([x['loss'] for x in d]), 2)}/{fmt(med([x['loss'] for x in t]), 2)}")
        out[f"cpu_us_client_{sz}"] = round(tc, 3) if tc is not None else None
        out[f"cpu_us_server_{sz}"] = round(ts, 3) if ts is not None else None
        out[f"path_cpu_us_direct_{sz}"] = round(pd, 3) if pd is not None else None
        out[f"path_cpu_us_tunnel_{sz}"] = round(pt, 3) if pt is not None else None
        out[f"path_cpu_ratio_{sz}"] = round(ratio(pt, pd), 3) if ratio(pt, pd) else None
        out[f"machine_cpu_us_direct_{sz}"] = round(md, 3) if md is not None else None
        out[f"machine_cpu_us_tunnel_{sz}"] = round(mt, 3) if mt is not None else None
    for peer in peers:
        t = cpu.get((peer, 1400), [])
        if not t:
            continue
        tc, ts, pt = med([x["client"] for x in t]), med([x["server"] for x in t]), med([x["path"] for x in t])
        p(f"   {peer}: 1400 B at {fmt(t[0]['rate'], 0)} pps: client {fmt(tc, 2)}, server {fmt(ts, 2)} us per datagram; "
          f"path {fmt(pt, 2)} us; loss {fmt(med([x['loss'] for x in t]), 2)} %")
        out[f"{peer}_cpu_us_client_1400"] = round(tc, 3) if tc is not None else None
        out[f"{peer}_cpu_us_server_1400"] = round(ts, 3) if ts is not None else None
        out[f"{peer}_cpu_rate_1400"] = t[0]["rate"]
    bg = []
    for (path, sz), v in cpu.items():
        for x in v:
            if x["path"] is not None:
                bg.append((x["machine"] - x["path"]) * x["rate"] / 1e6)  # CPUs busy with other work
    if bg:
        p(f"   other work on the host during this phase: {med(bg):.2f} CPUs (machine busy minus the path's processes)")
        out["host_other_cpus_during_cpu_phase"] = round(med(bg), 3)
    p("   (user+sys from /proc/PID/stat, all threads, 10 ms ticks. path = generator + sink (+ tunnel client and")
    p("    server): the kernel's forwarding runs as softirq inside their sys time, except what ksoftirqd takes.")
    p("    machine = every CPU's busy time (/proc/stat) per datagram: includes anything else running on the host)")

    # --- allocations
    p("")
    p("4. Heap allocations in steady state (LD_PRELOAD malloc/calloc/realloc/memalign counter)")
    for r in rows:
        if r["kind"] == "alloc_skipped":
            p(f"   {r['path']}: {r['why']}")
        if r["kind"] != "alloc":
            continue
        d = r["data"]
        path = r.get("path", "tunnel")
        carried = 2 * d["received"]  # each datagram the sink got was echoed back: two tunnel crossings
        per = (r["client_allocs"] + r["server_allocs"]) / carried if carried else None
        if path != "tunnel":
            p(f"   {path}: {d['received']} datagrams echoed at {r['rate']} pps: client {r['client_allocs']}, server "
              f"{r['server_allocs']} allocations -> {fmt(per, 4)} per datagram")
            out[f"{path}_allocs_per_datagram"] = round(per, 5) if per is not None else None
            continue
        p(f"   {d['received']} datagrams of {d['size']} B on {d['flows']} flows at {r['rate']} pps, each echoed back "
          f"({carried} tunnel crossings): client {r['client_allocs']} allocations, server {r['server_allocs']}"
          f" -> {fmt(per, 4)} per datagram")
        p(f"   (the shim was live: {r.get('client_allocs_before', '?')} / {r.get('server_allocs_before', '?')} allocations "
          "counted in client / server before the window, at start-up and handshakes)")
        out["allocs_per_datagram"] = round(per, 5) if per is not None else None
        out["allocs_client"] = r["client_allocs"]
        out["allocs_server"] = r["server_allocs"]

    # --- WireGuard
    wg, wg_why, wg_mtu = {}, {}, {}
    for r in rows:
        if r["kind"] == "wg_mtu":
            wg_mtu[r["path"]] = (r["mtu"], r["largest_payload"])
        if r["kind"] == "wg":
            wg.setdefault(r["path"], []).append(r["mbit"])
            if r.get("why"):
                wg_why[r["path"]] = r["why"]
        if r["kind"] == "wg_skipped":
            p("")
            p(f"WireGuard workload skipped: {r['why']}")
    if wg:
        p("")
        p("6. WireGuard: TCP over wireguard-go over each path (iperf3, median of interleaved runs), Mbit/s")
        d = med(wg.get("direct", []))
        for path in ["direct", "tunnel"] + [x for x in peers if x in wg]:
            if path not in wg:
                continue
            m = med(wg[path])
            name = "faketcp" if path == "tunnel" else path
            mtu = (f"; WireGuard MTU {wg_mtu[path][0]}, largest datagram carried {wg_mtu[path][1]} B"
                   if path in wg_mtu else "")
            p(f"   {name:>8}: {fmt(m)} Mbit/s (ratio {fmt(ratio(m, d), 2)}; each run: {', '.join(f'{x:.0f}' for x in wg[path])}"
              + f"{mtu})" + (f"; a failed run: {wg_why[path]}" if path in wg_why else ""))
            out[f"wg_mbit_{name}"] = m
            if path in wg_mtu:
                out[f"wg_mtu_{name}"] = wg_mtu[path][0]

    # --- idle
    idle = [r for r in rows if r["kind"] == "idle"]
    if idle:
        p("")
        p("7. Idle: 100 connected, silent flows; CPU of the tunnel's processes in % of one core")
        for r in idle:
            name = "faketcp" if r["path"] == "tunnel" else r["path"]
            tot = r["client_pct"] + r["server_pct"]
            p(f"   {name:>8}: client {r['client_pct']:.3f} %, server {r['server_pct']:.3f} % over {r['secs']} s (both: {tot:.3f} %)")
            if r["path"] == "tunnel":
                out["idle_cpu_pct"] = round(tot, 3)
            else:
                out[f"{r['path']}_idle_cpu_pct"] = round(tot, 3)

    # --- peers: which bed, what collapsed
    if peers or any(r["kind"] == "peer_skipped" for r in rows):
        p("")
        p("Peers")
        for r in rows:
            if r["kind"] == "peer_skipped":
                p(f"   {r['peer']}: SKIPPED ({r['why']})")
            if r["kind"] == "bed":
                d = r["data"]
                p(f"   {r['path']} bed check on the {r['bed']} router: 2 kpps x 1 s of 1400 B lost {fmt(d.get('loss_pct'), 1)} %,"
                  f" {r['invalid_drops']} conntrack-INVALID drops")
                out[f"{r['path']}_{r['bed']}_loss_pct"] = d.get("loss_pct")
                out[f"{r['path']}_{r['bed']}_invalid_drops"] = r["invalid_drops"]
            if r["kind"] == "collapse":
                p(f"   {r['path']} COLLAPSED in {r['phase']}: {r['why']}")
        for r in rows:
            if r["kind"] == "peer":
                p(f"   {r['path']} measured on the {r['bed']} router ({r['bin']})" +
                  (f"; collapsed: {r['collapsed']}" if r["collapsed"] else ""))
                out[f"{r['path']}_bed"] = r["bed"]
                if r["collapsed"]:
                    out[f"{r['path']}_collapsed"] = r["collapsed"]

    # --- side by side
    p("")
    p("Side by side (medians)")
    cols = ["direct", "faketcp"] + peers
    keymap = {"faketcp": "tunnel"}
    p("   " + f"{'':<34}" + "".join(f"{c:>12}" for c in cols))

    def row(label, fn):
        p("   " + f"{label:<34}" + "".join(f"{fn(c):>12}" for c in cols))

    def knee_of(c, fl):
        v = med(knees.get((keymap.get(c, c), 1400, fl), []))
        return fmt(v and v / 1000) if v is not None else "-"

    row("knee 1400 B x 1 flow, kpps", lambda c: knee_of(c, 1))
    row("knee 1400 B x 16 flows, kpps", lambda c: knee_of(c, 16))
    row("RTT p50 / p99, us", lambda c: (f"{rv[keymap.get(c, c)]['p50_us']:.0f}/{rv[keymap.get(c, c)]['p99_us']:.0f}"
                                        if rv.get(keymap.get(c, c), {}).get("p50_us") is not None else "-"))

    def cpu_of(c):
        if c == "direct":
            return "-"
        v = cpu.get((keymap.get(c, c), 1400), [])
        a, b = med([x["client"] for x in v]), med([x["server"] for x in v])
        return f"{a:.2f}/{b:.2f}" if None not in (a, b) else "-"

    row("CPU us/dgram 1400 B, client/server", cpu_of)
    row("WireGuard TCP, Mbit/s", lambda c: fmt(med(wg.get(keymap.get(c, c), []))) if wg.get(keymap.get(c, c)) else "-")
    row("allocations per datagram", lambda c: "-" if c == "direct" else fmt(
        out.get("allocs_per_datagram" if c == "faketcp" else f"{c}_allocs_per_datagram"), 3))
    row("idle CPU, % of a core", lambda c: "-" if c == "direct" else fmt(
        out.get("idle_cpu_pct" if c == "faketcp" else f"{c}_idle_cpu_pct"), 2))

    # --- scale
    p("")
    p("5. Scale: concurrent flows through the CLI (one datagram each, echoed; <= 256 outstanding)")
    for r in rows:
        if r["kind"] != "scale":
            continue
        d = r["data"]
        n = max(d["established"], 1)
        dc = (r["rss_client_after_kib"] - r["rss_client_before_kib"]) / n
        ds = (r["rss_server_after_kib"] - r["rss_server_before_kib"]) / n
        p(f"   {d['established']}/{d['flows']} flows established in {d['secs']:.2f} s: {d['flows_per_s']:.0f} handshakes/s "
          f"(first echo p50 {d['first_echo_p50_us'] / 1000:.1f} ms, p99 {d['first_echo_p99_us'] / 1000:.1f} ms; "
          f"retries {d['retries']}, failed {d['failed']})")
        p(f"   open connections: client {r['open_client']}, server {r['open_server']}")
        p(f"   RSS client {r['rss_client_before_kib']} -> {r['rss_client_after_kib']} KiB ({dc:.2f} KiB/flow), "
          f"server {r['rss_server_before_kib']} -> {r['rss_server_after_kib']} KiB ({ds:.2f} KiB/flow); "
          f"peak {r['hwm_client_kib']} / {r['hwm_server_kib']} KiB")
        out.update(scale_flows=d["flows"], scale_established=d["established"],
                   scale_handshakes_per_s=round(d["flows_per_s"], 1),
                   rss_client_kib=r["rss_client_after_kib"], rss_server_kib=r["rss_server_after_kib"],
                   rss_client_kib_per_flow=round(dc, 3), rss_server_kib_per_flow=round(ds, 3))
    for r in rows:
        if r["kind"] == "host":
            p("")
            p(f"host: {r['cpus']} CPUs; busy before the run {r['busy_before_pct']} %, after it {r['busy_after_pct']} % "
              "(other work on the host makes every number above noisy)")
            if r.get("load_before"):
                p(f"load average before {r['load_before']}, after {r['load_after']}; {r.get('date', '')}")
                out["load_before"] = r["load_before"]
                out["load_after"] = r["load_after"]
                out["date"] = r.get("date")
            out["host_busy_before_pct"] = r["busy_before_pct"]
            out["host_busy_after_pct"] = r["busy_after_pct"]
            for key, what in (("cli_args", "faketcp flags"), ("gen_args", "udpgen flags")):
                if r.get(key):
                    p(f"{what} (BENCH_{key.upper()}): {r[key]}")
                    out[key] = r[key]
    if elapsed is not None:
        p("")
        p(f"elapsed {elapsed:.0f} s")
        out["elapsed_s"] = round(elapsed, 1)
    print("\n".join(lines))
    # The headline keys first, then the rest.
    head = ["ratio_1400", "ratio_64", "ratio_1400_16flows", "cpu_us_client_1400", "cpu_us_server_1400",
            "rtt_added_p50_us", "allocs_per_datagram", "idle_cpu_pct", "wg_mbit_direct", "wg_mbit_faketcp"]
    for peer in peers:
        head += [f"{peer}_knee_kpps_1400", f"{peer}_ratio_1400", f"{peer}_rtt_added_p50_us",
                 f"{peer}_cpu_us_client_1400", f"{peer}_cpu_us_server_1400", f"{peer}_allocs_per_datagram",
                 f"wg_mbit_{peer}"]
    final = {k: out.get(k) for k in head}
    final.update({k: v for k, v in out.items() if k not in final})
    print(json.dumps(final, separators=(",", ":")))


if __name__ == "__main__":
    main()
