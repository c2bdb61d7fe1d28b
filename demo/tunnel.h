// demo/tunnel.h — the client and server tunnels: UDP flows over fake-TCP
// connections, on top of the public faketcp API only.
#pragma once

#include <cstdint>
#include <vector>

#include "demo/options.h"
#include "faketcp.h"

namespace demo {

// Everything the tunnel needs, validated and resolved by main.
struct TunnelSetup {
    Options options;
    faketcp::Endpoint remote;        // --remote, resolved
    std::vector<uint8_t> handshake;  // --handshake-packet content; empty: none
};

// Creates the TUN device, runs the tunnel until SIGINT/SIGTERM, removes the
// device. Returns the process exit code (0, or 1 after a logged error).
int run_tunnel(const TunnelSetup& setup);

}  // namespace demo
