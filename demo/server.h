// demo/server.h — the server tunnel: fake-TCP connections accepted on
// --local's port, each with its own UDP socket to --remote (demo/server.cpp).
#pragma once

#include <memory>

#include "demo/tunnel.h"
#include "demo/worker.h"

namespace demo {

// The server's share of one worker.
std::unique_ptr<TunnelBase> make_server_tunnel(const TunnelSetup& setup, const WorkerParts& parts);

}  // namespace demo
