// demo/stats.h — one worker's counters, as the main thread collects them for
// the stats dump (log_stats, demo/stats.cpp) and the metrics endpoint
// (demo/metrics.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "demo/options.h"
#include "demo/udp.h"
#include "faketcp.h"

namespace demo {

// The tunnel's own counters, the client's and the server's in one struct.
// Nothing but uint64_t, so that add_counters can sum two of them.
struct TunnelCounters {
    uint64_t udp_in = 0, udp_out = 0, idle_closed = 0;
    uint64_t oversize_drops = 0, empty_drops = 0, tx_full_drops = 0, send_errors = 0;
    uint64_t window_full_drops = 0;  // --profile linux: beyond the peer's window
    uint64_t stale_datagrams = 0, rx_overflows = 0;
    uint64_t udp_refused = 0, udp_no_buffers = 0, udp_would_block = 0, udp_other = 0;
    // client
    uint64_t peers = 0, connects_started = 0, connects_ok = 0, connects_lost = 0, reconnects = 0;
    uint64_t pending_full_drops = 0, pending_lost = 0, no_conn_drops = 0, table_full_drops = 0;
    // client with several workers (demo/balance.h): flows this worker handed to a less-loaded one,
    // datagrams it passed to another worker's flow, and those lost on the way (mailbox full, flow gone)
    uint64_t flows_rebalanced = 0, handoff_datagrams = 0, handoff_drops = 0;
    // server
    uint64_t accepted = 0, peer_closed = 0, socket_errors = 0;
    // the worker's event loop (faketcp::Reactor): waits that found input while
    // polling, waits that slept, and polls that found nothing
    uint64_t loop_polled_wakeups = 0, loop_sleeps = 0, loop_empty_polls = 0;
    UdpOffloadStats udp_offload;
};

struct Snapshot {
    faketcp::Stats stack;
    faketcp::StackDriver::OffloadStats offload;
    uint64_t tun_read_errors = 0, tun_write_errors = 0;
    TunnelCounters tunnel;
};

// Adds `b` to `a` field by field. T must hold nothing but uint64_t counters
// (arrays of them included). The assert catches most other fields: a
// narrower integer or a bool leaves padding, and the size stops being a
// multiple of 8 or the representation stops being unique.
template <typename T>
void add_counters(T& a, const T& b) {
    static_assert(std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T> &&
                      sizeof(T) % sizeof(uint64_t) == 0,
                  "add_counters sums uint64_t counters only");
    constexpr size_t n = sizeof(T) / sizeof(uint64_t);
    uint64_t x[n], y[n];
    std::memcpy(x, &a, sizeof a);
    std::memcpy(y, &b, sizeof b);
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
    std::memcpy(&a, x, sizeof a);
}

// The statistics at info, summed over the workers, as one write so readers
// never see half a dump: the stack's, the TUN's, the tunnel's own, then (with
// several workers) each one's share. `when`: "" or " at exit", after "stats".
void log_stats(Mode mode, const std::vector<Snapshot>& per_worker, bool tun_offload, const char* when);

}  // namespace demo
