// demo/options.h — the command line, parsed and validated into `Options`.
//
// Everything here is pure (no I/O but reading the --handshake-packet file and
// resolving --remote), so each step can be unit-tested on strings.
// Flags and defaults follow phantun's client and server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "faketcp.h"

namespace demo {

constexpr const char* kVersion = "0.1.0";
constexpr uint32_t kMaxQueues = 256;  // the kernel's limit for a TUN (MAX_TAP_QUEUES)

enum class Mode : uint8_t { client, server };

// "host:port" or "[v6]:port" before resolution; `host` has no brackets.
struct HostPort {
    std::string host;
    uint16_t port = 0;
};

struct Options {
    Mode mode = Mode::client;
    faketcp::Endpoint local;  // client: UDP address to listen on
    uint16_t local_port = 0;  // server: fake-TCP port to accept on
    HostPort remote;          // client: the server; server: the UDP service
    std::string tun_name;     // empty: the kernel picks tunN
    faketcp::IpAddr tun_local, tun_peer;  // IPv4; the Stack owns tun_peer
    std::optional<faketcp::IpAddr> tun_local6, tun_peer6;  // unset with -4
    bool ipv4_only = false;
    std::string handshake_packet_path;  // empty: none
    faketcp::LogLevel log_level = faketcp::LogLevel::info;
    uint32_t idle_timeout_s = 180;  // 0: flows never time out
    uint32_t queues = 0;            // TUN queues and worker threads; 0: one per usable CPU
    uint32_t stats_interval_s = 0;  // 0: only the final dump on exit
    bool offload = true;            // TUN vnet-header offloads (GSO/GRO); --no-offload clears
    bool udp_offload = true;        // UDP_SEGMENT / UDP_GRO on the UDP side; --no-udp-offload clears
    uint32_t max_connections = 16384;  // StackConfig::max_connections
    uint32_t max_half_open = 1024;     // StackConfig::max_half_open (<= max_connections)
    uint32_t reply_rate = 1000;        // StackConfig::reply_rate_per_sec
    uint32_t busy_poll_us = 0;         // Reactor::set_busy_poll; 0: off
    faketcp::Profile profile = faketcp::Profile::phantun;  // --profile: StackConfig::profile
    uint32_t keepalive_s = 5;          // StackConfig::keepalive_interval; 0: off
    uint32_t keepalive_probes = 3;     // StackConfig::keepalive_probes
    bool auto_rules = false;           // --auto-rules: NAT/forwarding rules while running
    std::string config_path;           // --config FILE; empty: none
    std::optional<faketcp::Endpoint> metrics;  // --metrics: where to serve /metrics; unset: off
    uint32_t poll_budget_us = 50;      // Reactor::set_poll_budget (AdaptivePoll); 0: always sleep
};

// What the command line asks for. `text` is the help or version text for
// show_help / show_version, and the one-line error ("faketcp: --remote: ...")
// for error.
struct ParseResult {
    enum Kind : uint8_t { run, show_help, show_version, error } kind = error;
    Options options;
    std::string text;
};

// argv without the program name. `env_log` is $FAKETCP_LOG or null.
// With --config FILE it also reads FILE (see parse_config_text); flags on the
// command line win over the file's.
ParseResult parse_command_line(const std::vector<std::string_view>& args, const char* env_log);

// A config file split into one slot per flag of the table (in table order):
// `line` 0 means the file does not set it. Values are not validated here;
// parse_command_line runs them through the flags' own parsers.
struct ConfigValue {
    size_t line = 0;
    std::string value;  // empty for a switch
};
using ConfigValues = std::vector<ConfigValue>;

// Splits the text of a config file ("name value" per line, '#' comments,
// blank lines). Returns "" or the one-line error "FILE:LINE: ..." for an
// unknown key, a key given twice, a switch with a value or a missing value.
std::string parse_config_text(std::string_view text, const std::string& file, ConfigValues& out);

// Every flag of the table, for tests (the man page lists each one).
struct FlagInfo {
    std::string name;  // long name without "--"
    char short_name;   // 0: none
    bool takes_value;
    bool config_key;   // allowed in a config file
};
std::vector<FlagInfo> flag_list();

// The building blocks, exposed for tests.
// Port 1..65535. A host whose last label is all digits must be a valid IPv4
// literal (RFC 1123 2.1: a top-level domain is never numeric), so
// "999.1.1.1" is rejected here instead of being sent to DNS.
std::optional<HostPort> parse_host_port(std::string_view text);
std::optional<uint16_t> parse_port(std::string_view text);       // 1..65535
std::optional<uint64_t> parse_uint(std::string_view text, uint64_t max);
std::optional<faketcp::LogLevel> parse_log_level(std::string_view text);  // any case
bool valid_tun_name(std::string_view name);
std::string usage(std::optional<Mode> mode);  // full help text; nullopt: the top level

// The largest datagram one segment carries with MTU 1500 over IPv4 (1460) or
// IPv6 (1440) outer headers.
constexpr uint32_t kMtu = 1500;
constexpr uint32_t kTcpHeader = 20;
constexpr uint32_t max_payload(faketcp::Family family) {
    return kMtu - (family == faketcp::Family::v4 ? 20u : 40u) - kTcpHeader;
}

// Reads the --handshake-packet file (at most max_payload(v4) bytes, not empty).
// On failure returns false and sets `error` to a one-line message.
bool load_handshake_packet(const std::string& path, std::vector<uint8_t>& out, std::string& error);

// Resolves --remote with getaddrinfo (first answer, like phantun); `v4_only`
// asks for IPv4 answers only. On failure returns nullopt and sets `error`;
// `permanent` is true when the name does not exist (a bad flag) and false
// for a temporary failure (e.g. no DNS server reachable).
std::optional<faketcp::Endpoint> resolve(const HostPort& hp, bool v4_only, std::string& error,
                                         bool& permanent);

}  // namespace demo
