// demo/main.cpp — `faketcp client|server`: flags, logging set-up, exit codes.
//
// Exit codes: 0 success (also after SIGINT/SIGTERM), 1 runtime error
// (logged), 2 bad flags or addresses (one line on stderr).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "demo/log.h"
#include "demo/options.h"
#include "demo/tunnel.h"

int main(int argc, char** argv) {
    std::vector<std::string_view> args;
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);

    demo::ParseResult parsed = demo::parse_command_line(args, std::getenv("FAKETCP_LOG"));
    switch (parsed.kind) {
        case demo::ParseResult::show_help:
        case demo::ParseResult::show_version:
            std::fputs(parsed.text.c_str(), stdout);
            return std::fflush(stdout) == 0 ? 0 : 1;
        case demo::ParseResult::error:
            std::fprintf(stderr, "%s\n", parsed.text.c_str());
            return 2;
        case demo::ParseResult::run:
            break;
    }

    demo::TunnelSetup setup;
    setup.options = std::move(parsed.options);
    const demo::Options& o = setup.options;
    demo::g_log_level = o.log_level;

    std::string error;
    if (!o.handshake_packet_path.empty() && !demo::load_handshake_packet(o.handshake_packet_path, setup.handshake, error)) {
        std::fprintf(stderr, "faketcp: %s\n", error.c_str());
        return 2;
    }

    // The client speaks fake TCP to --remote, so with -4 it needs IPv4.
    bool permanent = true;
    const bool v4_only = o.mode == demo::Mode::client && o.ipv4_only;
    std::optional<faketcp::Endpoint> remote = demo::resolve(o.remote, v4_only, error, permanent);
    if (!remote) {
        std::fprintf(stderr, "faketcp: %s\n", error.c_str());
        return permanent ? 2 : 1;
    }
    setup.remote = *remote;
    if (o.mode == demo::Mode::client && !setup.handshake.empty() &&
        setup.handshake.size() > demo::max_payload(setup.remote.addr.family)) {
        std::fprintf(stderr, "faketcp: --handshake-packet: %zu bytes; at most %u fit one segment to %s\n",
                     setup.handshake.size(), demo::max_payload(setup.remote.addr.family),
                     faketcp::to_string(setup.remote).c_str());
        return 2;
    }
    LOG_DEBUG("remote %s:%u resolved to %s", o.remote.host.c_str(), unsigned(o.remote.port),
              faketcp::to_string(setup.remote).c_str());

    return demo::run_tunnel(setup);
}
