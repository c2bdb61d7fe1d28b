// demo/stats.h — one worker's counters, as the main thread collects them for
// the stats dump (demo/tunnel.cpp) and the metrics endpoint (demo/metrics.h).
#pragma once

#include <cstdint>

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
    // server
    uint64_t accepted = 0, peer_closed = 0, socket_errors = 0;
    UdpOffloadStats udp_offload;
};

struct Snapshot {
    faketcp::Stats stack;
    faketcp::StackDriver::OffloadStats offload;
    uint64_t tun_read_errors = 0, tun_write_errors = 0;
    TunnelCounters tunnel;
};

}  // namespace demo
