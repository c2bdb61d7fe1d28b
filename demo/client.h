// demo/client.h — the client tunnel: UDP peers on --local, one fake-TCP
// connection to --remote per peer (demo/client.cpp).
#pragma once

#include <memory>

#include "demo/tunnel.h"
#include "demo/udp.h"
#include "demo/worker.h"

namespace demo {

// The client's share of one worker; `udp`: its socket on --local (one of the
// SO_REUSEPORT group when there are several workers).
std::unique_ptr<TunnelBase> make_client_tunnel(const TunnelSetup& setup, const WorkerParts& parts, Fd udp);

}  // namespace demo
