// demo/options.cpp — see options.h.
#include "demo/options.h"

#include <algorithm>
#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace demo {

using faketcp::Family;
using faketcp::IpAddr;

namespace {

// Every flag either subcommand takes. `client_default` / `server_default`
// are shown in --help and used when the flag is absent.
enum class Flag : uint8_t {
    local,
    remote,
    tun,
    tun_local,
    tun_peer,
    tun_local6,
    tun_peer6,
    ipv4_only,
    handshake_packet,
    log_level,
    idle_timeout,
    queues,
    stats_interval,
    no_offload,
    no_udp_offload,
    max_connections,
    max_half_open,
    reply_rate,
    busy_poll,
    profile,
    keepalive,
    keepalive_probes,
    help,
    version,
    count_,
};
constexpr size_t kFlagCount = static_cast<size_t>(Flag::count_);

struct FlagSpec {
    Flag flag;
    const char* long_name;  // without "--"
    char short_name;        // 0: none
    bool takes_value;
};

constexpr FlagSpec kFlags[] = {
    {Flag::local, "local", 'l', true},
    {Flag::remote, "remote", 'r', true},
    {Flag::tun, "tun", 0, true},
    {Flag::tun_local, "tun-local", 0, true},
    {Flag::tun_peer, "tun-peer", 0, true},
    {Flag::tun_local6, "tun-local6", 0, true},
    {Flag::tun_peer6, "tun-peer6", 0, true},
    {Flag::ipv4_only, "ipv4-only", '4', false},
    {Flag::handshake_packet, "handshake-packet", 0, true},
    {Flag::log_level, "log-level", 0, true},
    {Flag::idle_timeout, "idle-timeout", 0, true},
    {Flag::queues, "queues", 0, true},
    {Flag::stats_interval, "stats-interval", 0, true},
    {Flag::no_offload, "no-offload", 0, false},
    {Flag::no_udp_offload, "no-udp-offload", 0, false},
    {Flag::max_connections, "max-connections", 0, true},
    {Flag::max_half_open, "max-half-open", 0, true},
    {Flag::reply_rate, "reply-rate", 0, true},
    {Flag::busy_poll, "busy-poll", 0, true},
    {Flag::profile, "profile", 0, true},
    {Flag::keepalive, "keepalive", 0, true},
    {Flag::keepalive_probes, "keepalive-probes", 0, true},
    {Flag::help, "help", 'h', false},
    {Flag::version, "version", 'V', false},
};

struct Defaults {
    const char* tun_local;
    const char* tun_peer;
    const char* tun_local6;
    const char* tun_peer6;
};
constexpr Defaults kClientDefaults{"192.168.200.1", "192.168.200.2", "fcc8::1", "fcc8::2"};
constexpr Defaults kServerDefaults{"192.168.201.1", "192.168.201.2", "fcc9::1", "fcc9::2"};

constexpr uint64_t kMaxConnections = 1u << 24;
constexpr uint64_t kMaxReplyRate = 10000000;
constexpr uint64_t kMaxBusyPollUs = 1000;
constexpr uint64_t kMaxSeconds = 100u * 365 * 24 * 3600;
constexpr uint64_t kMaxKeepaliveSeconds = 86400;  // StackConfig clamps the interval to a day
constexpr uint64_t kMaxKeepaliveProbes = 255;

const FlagSpec* find_long(std::string_view name) {
    for (const FlagSpec& f : kFlags)
        if (name == f.long_name) return &f;
    return nullptr;
}

const FlagSpec* find_short(char c) {
    for (const FlagSpec& f : kFlags)
        if (f.short_name != 0 && c == f.short_name) return &f;
    return nullptr;
}

// "--local" or "-l/--local": how an error names a flag.
std::string flag_name(const FlagSpec& f) { return std::string("--") + f.long_name; }

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

ParseResult fail(std::string message) {
    ParseResult r;
    r.kind = ParseResult::error;
    r.text = "faketcp: " + std::move(message);
    return r;
}

std::optional<IpAddr> parse_ip_of(std::string_view text, Family family) {
    std::optional<IpAddr> ip = faketcp::parse_ip(text);
    if (!ip || ip->family != family) return std::nullopt;
    return ip;
}

// "1.2.3.4", "999.1.1.1", "1.2.3": the last label is all digits.
bool numeric_host(std::string_view host) {
    size_t dot = host.rfind('.');
    std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
    if (last.empty()) return false;
    for (char c : last)
        if (c < '0' || c > '9') return false;
    return true;
}

bool is_host_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

}  // namespace

std::optional<uint64_t> parse_uint(std::string_view text, uint64_t max) {
    if (text.empty() || text.size() > 20) return std::nullopt;
    uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        uint64_t d = static_cast<uint64_t>(c - '0');
        if (v > (max - d) / 10) return std::nullopt;  // v * 10 + d > max
        v = v * 10 + d;
    }
    return v;
}

std::optional<uint16_t> parse_port(std::string_view text) {
    std::optional<uint64_t> v = parse_uint(text, 65535);
    if (!v || *v == 0) return std::nullopt;
    return static_cast<uint16_t>(*v);
}

std::optional<HostPort> parse_host_port(std::string_view text) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        std::optional<IpAddr> ip = faketcp::parse_ip(host);
        if (!ip || ip->family != Family::v6) return std::nullopt;  // brackets are for IPv6 only
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.empty() || host.size() > 253) return std::nullopt;
        for (char c : host)
            if (!is_host_char(c)) return std::nullopt;  // also rejects an unbracketed IPv6
        if (numeric_host(host)) {
            std::optional<IpAddr> ip = faketcp::parse_ip(host);
            if (!ip || ip->family != Family::v4) return std::nullopt;
        }
    }
    std::optional<uint16_t> p = parse_port(port);
    if (!p) return std::nullopt;
    return HostPort{std::string(host), *p};
}

std::optional<faketcp::LogLevel> parse_log_level(std::string_view text) {
    std::string lower(text);
    for (char& c : lower)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (lower == "error") return faketcp::LogLevel::error;
    if (lower == "warn") return faketcp::LogLevel::warn;
    if (lower == "info") return faketcp::LogLevel::info;
    if (lower == "debug") return faketcp::LogLevel::debug;
    return std::nullopt;
}

bool valid_tun_name(std::string_view name) {
    // IFNAMSIZ is 16 including the NUL; the kernel's dev_valid_name() rules.
    if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
    for (char c : name)
        if (c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\0' ||
            static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
            return false;
    return true;
}

std::string usage(std::optional<Mode> mode) {
    std::string v = kVersion;
    if (!mode) {
        return "faketcp " + v +
               " - UDP over fake TCP through a TUN device (wire-compatible with phantun)\n"
               "\n"
               "Usage:\n"
               "  faketcp client --local IP:PORT --remote HOST:PORT [options]\n"
               "  faketcp server --local PORT --remote HOST:PORT [options]\n"
               "  faketcp --help | --version\n"
               "\n"
               "  client   listen for UDP on --local and carry each UDP peer's datagrams over its\n"
               "           own fake-TCP connection to the server at --remote\n"
               "  server   accept fake-TCP connections on port --local and forward each one's\n"
               "           datagrams to the UDP service at --remote\n"
               "\n"
               "Run 'faketcp client --help' or 'faketcp server --help' for every option.\n";
    }
    const bool client = *mode == Mode::client;
    const Defaults& d = client ? kClientDefaults : kServerDefaults;
    std::string s;
    s += "faketcp " + v + (client ? " client" : " server") + " - drop-in for phantun-" +
         (client ? "client" : "server") + "\n\n";
    if (client) {
        s += "Usage: faketcp client --local IP:PORT --remote HOST:PORT [options]\n"
             "\n"
             "Listens for UDP datagrams on --local. Each UDP peer (source address and port) gets\n"
             "its own fake-TCP connection to the server at --remote; replies go back to the peer\n"
             "from the local address it sent to. A flow that sees no traffic for --idle-timeout\n"
             "seconds is closed (RST). A connection that fails or is reset is opened again on\n"
             "the peer's next datagram; up to 64 datagrams per flow wait for its handshake.\n"
             "\n"
             "Required:\n"
             "  -l, --local IP:PORT         UDP address to listen on; IPv6 as [addr]:port.\n"
             "                              [::]:PORT accepts both IPv4 and IPv6 peers\n"
             "  -r, --remote HOST:PORT      the faketcp or phantun server; a host name is resolved\n"
             "                              once at start-up (first answer); IPv6 as [addr]:port\n";
    } else {
        s += "Usage: faketcp server --local PORT --remote HOST:PORT [options]\n"
             "\n"
             "Accepts fake-TCP connections on port --local (DNAT the public TCP port to the\n"
             "--tun-peer address). Each connection gets its own UDP socket connected to the\n"
             "service at --remote; replies from that socket go back over that connection.\n"
             "A connection reset by the client closes its UDP socket; one that sees no traffic\n"
             "for --idle-timeout seconds is closed (RST) along with it.\n"
             "\n"
             "Required:\n"
             "  -l, --local PORT            TCP port to accept fake-TCP connections on\n"
             "  -r, --remote HOST:PORT      the UDP service to forward to; a host name is resolved\n"
             "                              once at start-up (first answer); IPv6 as [addr]:port\n";
    }
    s += "\nOptions:\n";
    s += "      --tun NAME              TUN device name (default: none, the kernel picks tunN)\n";
    s += std::string("      --tun-local IP          IPv4 address of the host (kernel) side of the TUN\n") +
         "                              (default: " + d.tun_local + ")\n";
    s += std::string("      --tun-peer IP           IPv4 address of faketcp's side of the TUN: the source\n") +
         (client ? "                              of its TCP packets, to masquerade out of the WAN\n"
                   "                              interface (default: "
                 : "                              its TCP packets come from; DNAT the public port to\n"
                   "                              it (default: ") +
         d.tun_peer + ")\n";
    s += std::string("      --tun-local6 IP         IPv6 address of the host side of the TUN (default: ") +
         d.tun_local6 + ")\n";
    s += std::string("      --tun-peer6 IP          IPv6 address of faketcp's side of the TUN (default: ") +
         d.tun_peer6 + ")\n";
    s += "  -4, --ipv4-only             no IPv6 on the TUN (conflicts with --tun-local6/--tun-peer6)\n";
    s += std::string("      --handshake-packet FILE send FILE's content as the first datagram to the ") +
         (client ? "server\n                              once each connection is established\n"
                 : "client\n                              once each connection is accepted\n");
    s += "                              (at most 1460 bytes; 1440 over IPv6)\n";
    s += "      --idle-timeout SECONDS  close a flow after this long without traffic either way;\n"
         "                              0 never closes (default: 180)\n";
    s += "      --queues N              TUN queues, one worker thread each, 1-256; connections,\n"
         "                              --max-connections, --max-half-open and --reply-rate\n"
         "                              are split evenly between them (default: one per CPU)\n";
    s += "      --stats-interval SECONDS  log statistics this often, 0 = off; they are always\n"
         "                              logged on exit (default: 0)\n";
    s += "      --log-level LEVEL       error, warn, info or debug (default: $FAKETCP_LOG, else info)\n";
    s += "      --no-offload            no TUN offloads (GSO/GRO): one packet per read and write;\n"
         "                              slower, but captures on the TUN show plain packets\n";
    s += "      --no-udp-offload        no UDP segmentation offloads (UDP_SEGMENT sends, UDP_GRO\n"
         "                              receives): one datagram per message of each batched\n"
         "                              sendmmsg/recvmmsg; slower. Also the fallback when the\n"
         "                              kernel lacks them (before Linux 4.18 / 5.0)\n";
    s += "      --max-connections N     connection slots, preallocated (default: 16384)\n";
    s += "      --max-half-open N       handshakes in progress at once; SYNs beyond are dropped\n"
         "                              (default: 1024)\n";
    s += "      --reply-rate N          RSTs to unknown segments and challenge ACKs per second,\n"
         "                              also the burst; 0 sends none (default: 1000)\n";
    s += "      --busy-poll USEC        before each sleep, keep polling for up to USEC microseconds\n"
         "                              (0-1000): lower latency, especially in VMs, for more CPU;\n"
         "                              a busy tunnel then keeps a core per queue (default: 0, off)\n";
    s += client ? "      --profile NAME          wire profile of the connections: phantun (ISN 0, no\n"
                  "                              options; phantun servers accept only this) or linux\n"
                  "                              (looks like this host's own kernel TCP: random ISN,\n"
                  "                              timestamps, ACK stream; datagrams 12 bytes smaller)\n"
                  "                              (default: phantun)\n"
                : "      --profile NAME          phantun or linux: the style of RSTs to unknown\n"
                  "                              segments. Every client is answered in its own style\n"
                  "                              (a SYN with an MSS option gets linux) (default: phantun)\n";
    s += "      --keepalive SECONDS     probe a connection after this long without a segment from\n"
         "                              the peer, and again every SECONDS; 0 = off: no probes, no\n"
         "                              dead-path detection (0-86400; default: 5)\n";
    s += std::string("      --keepalive-probes N    unanswered probes before the connection is declared\n") +
         "                              dead (1-255; default: 3). A dead connection is " +
         (client ? "reset and\n"
                   "                              opened again from a new port on the flow's next datagram\n"
                 : "reset and\n"
                   "                              its UDP socket closed\n") +
         "                              (see the README: phantun peers never answer probes)\n";
    s += "  -h, --help                  print this help and exit\n";
    s += "  -V, --version               print the version and exit\n";
    s += "\n"
         "A flag's value may follow it (--local 127.0.0.1:1234) or be joined with '='\n"
         "(--local=127.0.0.1:1234). TUN MTU is 1500; datagrams larger than one segment carries\n"
         "(1460 bytes over IPv4, 1440 over IPv6) are dropped and counted.\n"
         "Needs CAP_NET_ADMIN (root, or once: setcap cap_net_admin+ep faketcp).\n"
         "Logs go to stderr. SIGINT/SIGTERM reset every connection, remove the TUN and exit 0.\n"
         "Exit status: 0 success, 1 runtime error (e.g. missing CAP_NET_ADMIN), 2 bad flags.\n";
    return s;
}

ParseResult parse_command_line(const std::vector<std::string_view>& args, const char* env_log) {
    if (args.empty())
        return fail("missing subcommand: client or server (see 'faketcp --help')");
    std::string_view sub = args[0];
    if (sub == "-h" || sub == "--help" || sub == "help") {
        ParseResult r;
        r.kind = ParseResult::show_help;
        r.text = usage(std::nullopt);
        return r;
    }
    if (sub == "-V" || sub == "--version") {
        ParseResult r;
        r.kind = ParseResult::show_version;
        r.text = std::string("faketcp ") + kVersion + "\n";
        return r;
    }
    Mode mode;
    if (sub == "client") {
        mode = Mode::client;
    } else if (sub == "server") {
        mode = Mode::server;
    } else {
        return fail("unknown subcommand " + quote(sub) + ": expected client or server (see 'faketcp --help')");
    }

    // --help and --version win over every other flag, valid or not.
    for (size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "-h" || args[i] == "--help") {
            ParseResult r;
            r.kind = ParseResult::show_help;
            r.text = usage(mode);
            return r;
        }
        if (args[i] == "-V" || args[i] == "--version") {
            ParseResult r;
            r.kind = ParseResult::show_version;
            r.text = std::string("faketcp ") + kVersion + "\n";
            return r;
        }
    }

    // Pass 1: split into flag -> value; reject unknown, repeated, valueless.
    std::optional<std::string_view> value[kFlagCount];
    bool seen[kFlagCount] = {};
    for (size_t i = 1; i < args.size(); ++i) {
        std::string_view arg = args[i];
        const FlagSpec* spec = nullptr;
        std::optional<std::string_view> inline_value;
        if (arg.size() > 2 && arg.substr(0, 2) == "--") {
            std::string_view name = arg.substr(2);
            size_t eq = name.find('=');
            if (eq != std::string_view::npos) {
                inline_value = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            spec = find_long(name);
            if (!spec) return fail("unknown flag " + quote(arg) + " (see 'faketcp " + std::string(sub) + " --help')");
        } else if (arg.size() == 2 && arg[0] == '-') {
            spec = find_short(arg[1]);
            if (!spec) return fail("unknown flag " + quote(arg) + " (see 'faketcp " + std::string(sub) + " --help')");
        } else {
            return fail("unexpected argument " + quote(arg) + " (see 'faketcp " + std::string(sub) + " --help')");
        }
        size_t idx = static_cast<size_t>(spec->flag);
        if (seen[idx]) return fail(flag_name(*spec) + ": given more than once");
        seen[idx] = true;
        if (!spec->takes_value) {
            if (inline_value) return fail(flag_name(*spec) + ": takes no value");
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= args.size()) return fail(flag_name(*spec) + ": missing value");
            inline_value = args[++i];
        }
        value[idx] = inline_value;
    }
    auto get = [&](Flag f) { return value[static_cast<size_t>(f)]; };
    auto has = [&](Flag f) { return seen[static_cast<size_t>(f)]; };

    // Pass 2: validate into Options.
    ParseResult r;
    Options& o = r.options;
    o.mode = mode;
    const Defaults& d = mode == Mode::client ? kClientDefaults : kServerDefaults;

    if (!has(Flag::local)) return fail(std::string(sub) + ": --local is required (see 'faketcp " + std::string(sub) + " --help')");
    if (!has(Flag::remote)) return fail(std::string(sub) + ": --remote is required (see 'faketcp " + std::string(sub) + " --help')");
    std::string_view local = *get(Flag::local);
    if (mode == Mode::client) {
        std::optional<faketcp::Endpoint> ep = faketcp::parse_endpoint(local);
        if (!ep || ep->port == 0)
            return fail("--local: expected IP:PORT (IPv6 as [addr]:port), got " + quote(local));
        o.local = *ep;
    } else {
        std::optional<uint16_t> port = parse_port(local);
        if (!port) return fail("--local: expected a port number 1-65535, got " + quote(local));
        o.local_port = *port;
    }
    std::string_view remote = *get(Flag::remote);
    std::optional<HostPort> hp = parse_host_port(remote);
    if (!hp) {
        size_t colon = remote.rfind(':');
        std::string_view host = remote.substr(0, colon == std::string_view::npos ? remote.size() : colon);
        if (!host.empty() && host.front() != '[' && numeric_host(host) &&
            host.find_first_not_of("0123456789.") == std::string_view::npos && !faketcp::parse_ip(host))
            return fail("--remote: " + quote(host) + " is not a valid IPv4 address, in " + quote(remote));
        return fail("--remote: expected HOST:PORT (IPv6 as [addr]:port), got " + quote(remote));
    }
    o.remote = *hp;

    if (has(Flag::tun)) {
        std::string_view name = *get(Flag::tun);
        // An empty name is phantun's default: the kernel picks.
        if (!name.empty() && !valid_tun_name(name))
            return fail("--tun: expected an interface name of 1-15 characters without '/', ':' or spaces, got " +
                        quote(name));
        o.tun_name = std::string(name);
    }

    struct AddrFlag {
        Flag flag;
        Family family;
        const char* def;
    };
    const AddrFlag v4flags[] = {{Flag::tun_local, Family::v4, d.tun_local}, {Flag::tun_peer, Family::v4, d.tun_peer}};
    IpAddr* v4out[] = {&o.tun_local, &o.tun_peer};
    for (size_t k = 0; k < 2; ++k) {
        std::string_view text = has(v4flags[k].flag) ? *get(v4flags[k].flag) : std::string_view(v4flags[k].def);
        std::optional<IpAddr> ip = parse_ip_of(text, Family::v4);
        if (!ip || ip->is_unspecified())
            return fail(flag_name(kFlags[static_cast<size_t>(v4flags[k].flag)]) + ": expected an IPv4 address, got " +
                        quote(text));
        *v4out[k] = *ip;
    }
    if (o.tun_local == o.tun_peer) return fail("--tun-peer: must differ from --tun-local");

    o.ipv4_only = has(Flag::ipv4_only);
    if (o.ipv4_only) {
        if (has(Flag::tun_local6)) return fail("-4/--ipv4-only conflicts with --tun-local6");
        if (has(Flag::tun_peer6)) return fail("-4/--ipv4-only conflicts with --tun-peer6");
    } else {
        const AddrFlag v6flags[] = {{Flag::tun_local6, Family::v6, d.tun_local6},
                                    {Flag::tun_peer6, Family::v6, d.tun_peer6}};
        std::optional<IpAddr>* v6out[] = {&o.tun_local6, &o.tun_peer6};
        for (size_t k = 0; k < 2; ++k) {
            std::string_view text = has(v6flags[k].flag) ? *get(v6flags[k].flag) : std::string_view(v6flags[k].def);
            std::optional<IpAddr> ip = parse_ip_of(text, Family::v6);
            if (!ip || ip->is_unspecified())
                return fail(flag_name(kFlags[static_cast<size_t>(v6flags[k].flag)]) +
                            ": expected an IPv6 address, got " + quote(text));
            *v6out[k] = *ip;
        }
        if (*o.tun_local6 == *o.tun_peer6) return fail("--tun-peer6: must differ from --tun-local6");
    }

    if (has(Flag::handshake_packet)) {
        std::string_view path = *get(Flag::handshake_packet);
        if (path.empty()) return fail("--handshake-packet: expected a file name, got ''");
        o.handshake_packet_path = std::string(path);
    }

    if (has(Flag::log_level)) {
        std::string_view text = *get(Flag::log_level);
        std::optional<faketcp::LogLevel> level = parse_log_level(text);
        if (!level) return fail("--log-level: expected error, warn, info or debug, got " + quote(text));
        o.log_level = *level;
    } else if (env_log != nullptr && env_log[0] != '\0') {
        std::optional<faketcp::LogLevel> level = parse_log_level(env_log);
        if (!level) return fail(std::string("FAKETCP_LOG: expected error, warn, info or debug, got ") + quote(env_log));
        o.log_level = *level;
    }

    if (has(Flag::idle_timeout)) {
        std::string_view text = *get(Flag::idle_timeout);
        std::optional<uint64_t> v = parse_uint(text, kMaxSeconds);
        if (!v) return fail("--idle-timeout: expected a whole number of seconds (0 = never), got " + quote(text));
        o.idle_timeout_s = static_cast<uint32_t>(*v);
    }
    if (has(Flag::queues)) {
        std::string_view text = *get(Flag::queues);
        std::optional<uint64_t> v = parse_uint(text, kMaxQueues);
        if (!v || *v == 0) return fail("--queues: expected a number 1-256, got " + quote(text));
        o.queues = static_cast<uint32_t>(*v);
    }
    if (has(Flag::stats_interval)) {
        std::string_view text = *get(Flag::stats_interval);
        std::optional<uint64_t> v = parse_uint(text, kMaxSeconds);
        if (!v) return fail("--stats-interval: expected a whole number of seconds (0 = off), got " + quote(text));
        o.stats_interval_s = static_cast<uint32_t>(*v);
    }

    if (has(Flag::max_connections)) {
        std::string_view text = *get(Flag::max_connections);
        std::optional<uint64_t> v = parse_uint(text, kMaxConnections);
        if (!v || *v == 0) return fail("--max-connections: expected a number 1-16777216, got " + quote(text));
        o.max_connections = static_cast<uint32_t>(*v);
    }
    if (has(Flag::max_half_open)) {
        std::string_view text = *get(Flag::max_half_open);
        std::optional<uint64_t> v = parse_uint(text, kMaxConnections);
        if (!v || *v == 0) return fail("--max-half-open: expected a number 1-16777216, got " + quote(text));
        o.max_half_open = static_cast<uint32_t>(*v);
    }
    if (!has(Flag::max_half_open)) o.max_half_open = std::min(o.max_half_open, o.max_connections);
    if (o.max_half_open > o.max_connections)
        return fail("--max-half-open: " + std::to_string(o.max_half_open) + " is more than --max-connections " +
                    std::to_string(o.max_connections));
    if (has(Flag::reply_rate)) {
        std::string_view text = *get(Flag::reply_rate);
        std::optional<uint64_t> v = parse_uint(text, kMaxReplyRate);
        if (!v) return fail("--reply-rate: expected a number 0-10000000 (per second), got " + quote(text));
        o.reply_rate = static_cast<uint32_t>(*v);
    }
    if (has(Flag::keepalive)) {
        std::string_view text = *get(Flag::keepalive);
        std::optional<uint64_t> v = parse_uint(text, kMaxKeepaliveSeconds);
        if (!v) return fail("--keepalive: expected a whole number of seconds 0-86400 (0 = off), got " + quote(text));
        o.keepalive_s = static_cast<uint32_t>(*v);
    }
    if (has(Flag::keepalive_probes)) {
        std::string_view text = *get(Flag::keepalive_probes);
        std::optional<uint64_t> v = parse_uint(text, kMaxKeepaliveProbes);
        if (!v || *v == 0) return fail("--keepalive-probes: expected a number 1-255, got " + quote(text));
        o.keepalive_probes = static_cast<uint32_t>(*v);
    }
    if (has(Flag::busy_poll)) {
        std::string_view text = *get(Flag::busy_poll);
        std::optional<uint64_t> v = parse_uint(text, kMaxBusyPollUs);
        if (!v) return fail("--busy-poll: expected microseconds 0-1000, got " + quote(text));
        o.busy_poll_us = static_cast<uint32_t>(*v);
    }

    if (has(Flag::profile)) {
        std::string_view text = *get(Flag::profile);
        if (text == "phantun") {
            o.profile = faketcp::Profile::phantun;
        } else if (text == "linux") {
            o.profile = faketcp::Profile::linux_tcp;
        } else {
            return fail("--profile: expected phantun or linux, got " + quote(text));
        }
    }

    // The client's fake-TCP connections need a local address of the server's
    // family; an IPv6 literal cannot be reached with -4.
    if (mode == Mode::client && o.ipv4_only) {
        std::optional<IpAddr> lit = faketcp::parse_ip(o.remote.host);
        if (lit && lit->family == Family::v6)
            return fail("--remote: " + quote(remote) + " is IPv6, but -4/--ipv4-only leaves the TUN without IPv6");
    }

    o.offload = !has(Flag::no_offload);
    o.udp_offload = !has(Flag::no_udp_offload);

    r.kind = ParseResult::run;
    return r;
}

bool load_handshake_packet(const std::string& path, std::vector<uint8_t>& out, std::string& error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        int e = errno;
        error = "--handshake-packet: cannot read " + quote(path) + ": " + std::strerror(e != 0 ? e : ENOENT);
        return false;
    }
    const size_t limit = max_payload(Family::v4);
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) {
        error = "--handshake-packet: error reading " + quote(path);
        return false;
    }
    if (out.empty()) {
        error = "--handshake-packet: " + quote(path) + " is empty (an empty datagram cannot be sent)";
        return false;
    }
    if (out.size() > limit) {
        error = "--handshake-packet: " + quote(path) + " is " + std::to_string(out.size()) + " bytes; at most " +
                std::to_string(limit) + " fit one segment with MTU 1500";
        return false;
    }
    return true;
}

std::optional<faketcp::Endpoint> resolve(const HostPort& hp, bool v4_only, std::string& error, bool& permanent) {
    permanent = true;
    if (std::optional<IpAddr> lit = faketcp::parse_ip(hp.host)) {
        if (lit->is_unspecified()) {
            error = "--remote: " + quote(hp.host) + " is the unspecified address";
            return std::nullopt;
        }
        return faketcp::Endpoint{*lit, hp.port};
    }
    struct addrinfo hints {};
    hints.ai_family = v4_only ? AF_INET : AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    struct addrinfo* res = nullptr;
    int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &res);
    if (rc != 0) {
        permanent = rc == EAI_NONAME || rc == EAI_FAMILY
#ifdef EAI_NODATA
                    || rc == EAI_NODATA
#endif
#ifdef EAI_ADDRFAMILY
                    || rc == EAI_ADDRFAMILY
#endif
            ;
        error = "--remote: cannot resolve " + quote(hp.host) + ": " +
                (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
        return std::nullopt;
    }
    std::optional<faketcp::Endpoint> ep;
    for (struct addrinfo* ai = res; ai != nullptr && !ep; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(sockaddr_in)) {
            sockaddr_in sin;
            std::memcpy(&sin, ai->ai_addr, sizeof sin);
            const auto* b = reinterpret_cast<const uint8_t*>(&sin.sin_addr);
            ep = faketcp::Endpoint{IpAddr::v4(b[0], b[1], b[2], b[3]), hp.port};
        } else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(sockaddr_in6)) {
            sockaddr_in6 sin6;
            std::memcpy(&sin6, ai->ai_addr, sizeof sin6);
            std::array<uint8_t, 16> b{};
            std::memcpy(b.data(), &sin6.sin6_addr, 16);
            ep = faketcp::Endpoint{IpAddr::v6(b), hp.port};
        }
    }
    freeaddrinfo(res);
    if (!ep) {
        error = "--remote: " + quote(hp.host) + " has no " + (v4_only ? "IPv4 " : "") + "address";
        return std::nullopt;
    }
    return ep;
}

}  // namespace demo
