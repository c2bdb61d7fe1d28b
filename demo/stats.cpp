// demo/stats.cpp — the stats dump: every worker's snapshot summed into the
// "stats: ..." lines, one LogBlock so they are written together.
#include "demo/stats.h"

#include <cinttypes>
#include <cstdio>
#include <string>

#include "demo/log.h"

namespace demo {

namespace {

void add_snapshot(Snapshot& sum, const Snapshot& s) {
    add_counters(sum.stack, s.stack);
    add_counters(sum.offload, s.offload);
    sum.tun_read_errors += s.tun_read_errors;
    sum.tun_write_errors += s.tun_write_errors;
    add_counters(sum.tunnel, s.tunnel);
}

std::string udp_offload_text(const UdpOffloadStats& u) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  ", UDP GSO: sends %" PRIu64 " datagrams %" PRIu64 " refused %" PRIu64 ", UDP GRO: receives %" PRIu64
                  " datagrams %" PRIu64,
                  u.gso_sends, u.gso_datagrams, u.gso_refused, u.gro_receives, u.gro_datagrams);
    return buf;
}

// "stats: queues: ..." with each worker's share, when there are several.
// The client adds each worker's UDP peers (its flows, demo/balance.h).
void add_queue_line(LogBlock& block, Mode mode, const std::vector<Snapshot>& per_worker, const char* when) {
    std::string in, out, open, peers;
    for (const Snapshot& w : per_worker) {
        const char* sep = in.empty() ? "" : " / ";
        in += sep + std::to_string(w.stack.datagrams_in);
        out += sep + std::to_string(w.stack.datagrams_out);
        open += sep + std::to_string(w.stack.open_connections);
        peers += sep + std::to_string(w.tunnel.peers);
    }
    const std::string client = mode == Mode::client ? ", UDP peers " + peers : "";
    block.add("stats%s: queues: %zu, one thread each; per queue: datagrams in %s, out %s, connections open %s%s", when,
              per_worker.size(), in.c_str(), out.c_str(), open.c_str(), client.c_str());
}

// " (reason=count, ...)" for the stack's nonzero drop counters; "" if none.
std::string drops_text(const faketcp::Stats& s) {
    std::string drops;
    for (size_t i = 0; i < faketcp::kDropReasonCount; ++i) {
        if (s.drops[i] == 0) continue;
        drops += drops.empty() ? " (" : ", ";
        drops += faketcp::to_string(static_cast<faketcp::DropReason>(i));
        drops += "=" + std::to_string(s.drops[i]);
    }
    if (!drops.empty()) drops += ")";
    return drops;
}

// "stats: stack: ...": the stack's counters and the TUN's errors.
void add_stack_line(LogBlock& block, const Snapshot& snap, const char* when) {
    const faketcp::Stats& s = snap.stack;
    const std::string drops = drops_text(s);
    block.add("stats%s: stack: packets in %" PRIu64 " (%" PRIu64 " B) out %" PRIu64 " (%" PRIu64
              " B), datagrams in %" PRIu64 " (%" PRIu64 " B) out %" PRIu64 " (%" PRIu64
              " B), connections open %" PRIu64 " half-open %" PRIu64 ", handshakes ok %" PRIu64 " failed %" PRIu64
              ", RST sent %" PRIu64 " received %" PRIu64 ", challenge ACKs %" PRIu64 ", idle ACKs %" PRIu64
              ", SYN retransmits %" PRIu64 ", pure ACKs in %" PRIu64 ", keepalive probes %" PRIu64
              " answered %" PRIu64 ", probe answers %" PRIu64 ", peer-dead %" PRIu64 ", TUN read errors %" PRIu64
              " write errors %" PRIu64 ", drops %" PRIu64 "%s",
              when, s.packets_in, s.bytes_in, s.packets_out, s.bytes_out, s.datagrams_in, s.datagram_bytes_in,
              s.datagrams_out, s.datagram_bytes_out, s.open_connections, s.half_open_connections,
              s.handshakes_completed, s.handshakes_failed, s.rst_sent, s.rst_received, s.challenge_acks_sent,
              s.idle_acks_sent, s.syn_retransmits, s.pure_acks_in, s.keepalive_probes_sent,
              s.keepalive_probes_answered, s.keepalive_answers_sent, s.peer_dead_closes, snap.tun_read_errors,
              snap.tun_write_errors,
              s.total_drops(), drops.c_str());
}

// "stats: TUN offload: ...", with --offload.
void add_offload_line(LogBlock& block, const faketcp::StackDriver::OffloadStats& os, const char* when) {
    uint64_t rx_drops = 0;
    for (uint64_t d : os.rx_drops) rx_drops += d;
    block.add("stats%s: TUN offload: GSO writes %" PRIu64 " (%" PRIu64 " segments, %" PRIu64
              " rejected), GRO reads %" PRIu64 " (%" PRIu64 " segments), partial-checksum reads %" PRIu64
              ", checksums trusted %" PRIu64 ", reads dropped %" PRIu64,
              when, os.gso_writes, os.gso_segments, os.gso_rejected, os.gro_reads, os.gro_segments,
              os.partial_csum_reads, os.csum_trusted, rx_drops);
}

void add_client_line(LogBlock& block, const TunnelCounters& c, const char* when) {
    block.add("stats%s: client: UDP peers %" PRIu64 ", connections opened %" PRIu64 " established %" PRIu64
              " failed/reset %" PRIu64 " reconnects %" PRIu64 ", flows rebalanced %" PRIu64 " datagrams-passed-on %" PRIu64
              ", idle-closed %" PRIu64 ", UDP in %" PRIu64 " out %" PRIu64
              ", dropped: oversized %" PRIu64 " empty %" PRIu64 " handshake-queue-full %" PRIu64
              " queued-then-lost %" PRIu64 " no-connection %" PRIu64 " tx-queue-full %" PRIu64
              " window-full %" PRIu64 " send-errors %" PRIu64 " flow-table-full %" PRIu64 " handoff-lost %" PRIu64 " stale %" PRIu64
              " receive-buffer-overflow %" PRIu64 ", UDP errors: refused %" PRIu64 " no-buffers %" PRIu64
              " would-block %" PRIu64 " other %" PRIu64 "%s",
              when, c.peers, c.connects_started, c.connects_ok, c.connects_lost, c.reconnects, c.flows_rebalanced,
              c.handoff_datagrams, c.idle_closed, c.udp_in, c.udp_out, c.oversize_drops, c.empty_drops,
              c.pending_full_drops, c.pending_lost, c.no_conn_drops, c.tx_full_drops, c.window_full_drops,
              c.send_errors, c.table_full_drops, c.handoff_drops, c.stale_datagrams,
              c.rx_overflows,
              c.udp_refused, c.udp_no_buffers, c.udp_would_block, c.udp_other,
              udp_offload_text(c.udp_offload).c_str());
}

void add_server_line(LogBlock& block, const TunnelCounters& c, const char* when) {
    block.add("stats%s: server: connections accepted %" PRIu64 " closed-by-peer %" PRIu64 " idle-closed %" PRIu64
              " no-socket %" PRIu64 ", UDP in %" PRIu64 " out %" PRIu64 ", dropped: oversized %" PRIu64
              " empty %" PRIu64 " tx-queue-full %" PRIu64 " window-full %" PRIu64 " send-errors %" PRIu64
              " stale %" PRIu64
              " receive-buffer-overflow %" PRIu64 ", UDP errors: refused %" PRIu64 " no-buffers %" PRIu64
              " would-block %" PRIu64 " other %" PRIu64 "%s",
              when, c.accepted, c.peer_closed, c.idle_closed, c.socket_errors, c.udp_in, c.udp_out,
              c.oversize_drops, c.empty_drops, c.tx_full_drops, c.window_full_drops, c.send_errors,
              c.stale_datagrams, c.rx_overflows,
              c.udp_refused, c.udp_no_buffers, c.udp_would_block, c.udp_other,
              udp_offload_text(c.udp_offload).c_str());
}

// "stats: event loop: ...": what adaptive polling (--poll-budget) did and
// what it cost: input found while polling, after sleeping, and empty polls.
void add_loop_line(LogBlock& block, const TunnelCounters& c, const char* when) {
    block.add("stats%s: event loop: woke by polling %" PRIu64 ", after sleeping %" PRIu64 ", empty polls %" PRIu64,
              when, c.loop_polled_wakeups, c.loop_sleeps, c.loop_empty_polls);
}

}  // namespace

void log_stats(Mode mode, const std::vector<Snapshot>& per_worker, bool tun_offload, const char* when) {
    Snapshot snap;
    for (const Snapshot& w : per_worker) add_snapshot(snap, w);
    LogBlock block(faketcp::LogLevel::info);
    add_stack_line(block, snap, when);
    if (tun_offload) add_offload_line(block, snap.offload, when);
    if (mode == Mode::client)
        add_client_line(block, snap.tunnel, when);
    else
        add_server_line(block, snap.tunnel, when);
    add_loop_line(block, snap.tunnel, when);
    if (per_worker.size() > 1) add_queue_line(block, mode, per_worker, when);
}

}  // namespace demo
