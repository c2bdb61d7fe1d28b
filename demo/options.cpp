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

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

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

namespace {

// ---------------------------------------------------------------------------
// The flag table. One entry per flag: its names, its value's parser, its help
// text and default per role. The command line and --config files go through
// the same entries, so both get the same validation and the same messages.
//
// A parser turns the value text (empty for a switch) into fields of Options
// (whose `mode` is already set). On failure it returns the message that
// follows "--name: "; on success an empty string. Checks that involve two
// flags run after every flag is parsed (check_combinations).

using Parser = std::string (*)(std::string_view text, Options& o);

// Per-role text. `help` lines are separated by '\n'; "%D" in them stands for
// `def`. `def` is also parsed when the flag is absent (nullptr: Options' own
// initial value stands, and the help says what it is).
struct RoleText {
    const char* value_name;  // "IP:PORT"; nullptr for a switch
    const char* help;
    const char* def;
};

enum class Section : uint8_t { required, options };

struct FlagDef {
    const char* name;  // the long name without "--"; also the config-file key
    char short_name;   // 0: none
    Section section;
    bool command_line_only;  // --help, --version, --config: not a config-file key
    Parser parse;            // nullptr: handled before parsing (--help, --version)
    RoleText client;
    RoleText server;  // a nullptr field falls back to the client's
};

const char* pick(const char* server_field, const char* client_field, Mode mode) {
    return mode == Mode::server && server_field != nullptr ? server_field : client_field;
}
const char* value_name_of(const FlagDef& f, Mode m) { return pick(f.server.value_name, f.client.value_name, m); }
const char* help_of(const FlagDef& f, Mode m) { return pick(f.server.help, f.client.help, m); }
const char* default_of(const FlagDef& f, Mode m) { return pick(f.server.def, f.client.def, m); }
bool takes_value(const FlagDef& f) { return f.client.value_name != nullptr; }

constexpr uint64_t kMaxConnections = 1u << 24;
constexpr uint64_t kMaxReplyRate = 10000000;
constexpr uint64_t kMaxBusyPollUs = 1000;
constexpr uint64_t kMaxSeconds = 100u * 365 * 24 * 3600;
constexpr uint64_t kMaxKeepaliveSeconds = 86400;  // StackConfig clamps the interval to a day
constexpr uint64_t kMaxKeepaliveProbes = 255;

// A whole number in [min, max] into `out`, or `message`.
template <typename T>
std::string parse_number(std::string_view text, uint64_t min, uint64_t max, T& out, const char* message) {
    std::optional<uint64_t> v = parse_uint(text, max);
    if (!v || *v < min) return message + quote(text);
    out = static_cast<T>(*v);
    return "";
}

std::string parse_local(std::string_view text, Options& o) {
    if (o.mode == Mode::client) {
        std::optional<faketcp::Endpoint> ep = faketcp::parse_endpoint(text);
        if (!ep || ep->port == 0) return "expected IP:PORT (IPv6 as [addr]:port), got " + quote(text);
        o.local = *ep;
        return "";
    }
    std::optional<uint16_t> port = parse_port(text);
    if (!port) return "expected a port number 1-65535, got " + quote(text);
    o.local_port = *port;
    return "";
}

std::string parse_remote(std::string_view text, Options& o) {
    std::optional<HostPort> hp = parse_host_port(text);
    if (!hp) {
        size_t colon = text.rfind(':');
        std::string_view host = text.substr(0, colon == std::string_view::npos ? text.size() : colon);
        if (!host.empty() && host.front() != '[' && numeric_host(host) &&
            host.find_first_not_of("0123456789.") == std::string_view::npos && !faketcp::parse_ip(host))
            return quote(host) + " is not a valid IPv4 address, in " + quote(text);
        return "expected HOST:PORT (IPv6 as [addr]:port), got " + quote(text);
    }
    o.remote = *hp;
    return "";
}

std::string parse_tun(std::string_view text, Options& o) {
    // An empty name is phantun's default: the kernel picks.
    if (!text.empty() && !valid_tun_name(text))
        return "expected an interface name of 1-15 characters without '/', ':' or spaces, got " + quote(text);
    o.tun_name = std::string(text);
    return "";
}

std::string parse_v4(std::string_view text, IpAddr& out) {
    std::optional<IpAddr> ip = parse_ip_of(text, Family::v4);
    if (!ip || ip->is_unspecified()) return "expected an IPv4 address, got " + quote(text);
    out = *ip;
    return "";
}

std::string parse_v6(std::string_view text, std::optional<IpAddr>& out) {
    std::optional<IpAddr> ip = parse_ip_of(text, Family::v6);
    if (!ip || ip->is_unspecified()) return "expected an IPv6 address, got " + quote(text);
    out = *ip;
    return "";
}

std::string parse_log_level_flag(std::string_view text, Options& o) {
    std::optional<faketcp::LogLevel> level = parse_log_level(text);
    if (!level) return "expected error, warn, info or debug, got " + quote(text);
    o.log_level = *level;
    return "";
}

std::string parse_handshake_packet(std::string_view text, Options& o) {
    if (text.empty()) return "expected a file name, got ''";
    o.handshake_packet_path = std::string(text);
    return "";
}

std::string parse_config(std::string_view text, Options& o) {
    if (text.empty()) return "expected a file name, got ''";
    o.config_path = std::string(text);
    return "";
}

// The lambdas below have no captures, so each converts to a Parser.
// clang-format off
const FlagDef kFlags[] = {
    {"local", 'l', Section::required, false, parse_local,
     {"IP:PORT", "UDP address to listen on; IPv6 as [addr]:port.\n[::]:PORT accepts both IPv4 and IPv6 peers", nullptr},
     {"PORT", "TCP port to accept fake-TCP connections on", nullptr}},
    {"remote", 'r', Section::required, false, parse_remote,
     {"HOST:PORT", "the faketcp or phantun server; a host name is resolved\nonce at start-up (first answer); IPv6 as [addr]:port", nullptr},
     {nullptr, "the UDP service to forward to; a host name is resolved\nonce at start-up (first answer); IPv6 as [addr]:port", nullptr}},
    {"config", 0, Section::options, true, parse_config,
     {"FILE", "read flags from FILE, one 'name value' per line (see\nCONFIG FILE below); the command line's flags win", nullptr},
     {}},
    {"tun", 0, Section::options, false, parse_tun,
     {"NAME", "TUN device name (default: none, the kernel picks tunN)", nullptr}, {}},
    {"tun-local", 0, Section::options, false, [](std::string_view t, Options& o) { return parse_v4(t, o.tun_local); },
     {"IP", "IPv4 address of the host (kernel) side of the TUN\n(default: %D)", "192.168.200.1"},
     {nullptr, nullptr, "192.168.201.1"}},
    {"tun-peer", 0, Section::options, false, [](std::string_view t, Options& o) { return parse_v4(t, o.tun_peer); },
     {"IP", "IPv4 address of faketcp's side of the TUN: the source\nof its TCP packets, to masquerade out of the WAN\ninterface (default: %D)", "192.168.200.2"},
     {nullptr, "IPv4 address of faketcp's side of the TUN: the source\nits TCP packets come from; DNAT the public port to\nit (default: %D)", "192.168.201.2"}},
    {"tun-local6", 0, Section::options, false, [](std::string_view t, Options& o) { return parse_v6(t, o.tun_local6); },
     {"IP", "IPv6 address of the host side of the TUN (default: %D)", "fcc8::1"},
     {nullptr, nullptr, "fcc9::1"}},
    {"tun-peer6", 0, Section::options, false, [](std::string_view t, Options& o) { return parse_v6(t, o.tun_peer6); },
     {"IP", "IPv6 address of faketcp's side of the TUN (default: %D)", "fcc8::2"},
     {nullptr, nullptr, "fcc9::2"}},
    {"ipv4-only", '4', Section::options, false, [](std::string_view, Options& o) { o.ipv4_only = true; return std::string(); },
     {nullptr, "no IPv6 on the TUN (conflicts with --tun-local6/--tun-peer6)", nullptr}, {}},
    {"auto-rules", 0, Section::options, false, [](std::string_view, Options& o) { o.auto_rules = true; return std::string(); },
     {nullptr, "install the NAT and forwarding rules this end needs (nftables\ntable 'faketcp-<tun>', else iptables) and turn on IP forwarding;\nremoved on exit. Needs --tun. See AUTO RULES below", nullptr}, {}},
    {"handshake-packet", 0, Section::options, false, parse_handshake_packet,
     {"FILE", "send FILE's content as the first datagram to the server\nonce each connection is established\n(at most 1460 bytes; 1440 over IPv6)", nullptr},
     {nullptr, "send FILE's content as the first datagram to the client\nonce each connection is accepted\n(at most 1460 bytes; 1440 over IPv6)", nullptr}},
    {"idle-timeout", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxSeconds, o.idle_timeout_s, "expected a whole number of seconds (0 = never), got "); },
     {"SECONDS", "close a flow after this long without traffic either way;\n0 never closes (default: %D)", "180"}, {}},
    {"queues", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 1, kMaxQueues, o.queues, "expected a number 1-256, got "); },
     {"N", "TUN queues, one worker thread each, 1-256; connections,\n--max-connections, --max-half-open and --reply-rate\nare split evenly between them (default: one per CPU)", nullptr}, {}},
    {"stats-interval", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxSeconds, o.stats_interval_s, "expected a whole number of seconds (0 = off), got "); },
     {"SECONDS", "log statistics this often, 0 = off; they are always\nlogged on exit (default: %D)", "0"}, {}},
    {"log-level", 0, Section::options, false, parse_log_level_flag,
     {"LEVEL", "error, warn, info or debug (default: $FAKETCP_LOG, else info)", nullptr}, {}},
    {"no-offload", 0, Section::options, false, [](std::string_view, Options& o) { o.offload = false; return std::string(); },
     {nullptr, "no TUN offloads (GSO/GRO): one packet per read and write;\nslower, but captures on the TUN show plain packets", nullptr}, {}},
    {"no-udp-offload", 0, Section::options, false, [](std::string_view, Options& o) { o.udp_offload = false; return std::string(); },
     {nullptr, "no UDP segmentation offloads (UDP_SEGMENT sends, UDP_GRO\nreceives): one datagram per message of each batched\nsendmmsg/recvmmsg; slower. Also the fallback when the\nkernel lacks them (before Linux 4.18 / 5.0)", nullptr}, {}},
    {"max-connections", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 1, kMaxConnections, o.max_connections, "expected a number 1-16777216, got "); },
     {"N", "connection slots, preallocated (default: %D)", "16384"}, {}},
    {"max-half-open", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 1, kMaxConnections, o.max_half_open, "expected a number 1-16777216, got "); },
     {"N", "handshakes in progress at once; SYNs beyond are dropped\n(default: 1024, at most --max-connections)", nullptr}, {}},
    {"reply-rate", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxReplyRate, o.reply_rate, "expected a number 0-10000000 (per second), got "); },
     {"N", "RSTs to unknown segments and challenge ACKs per second,\nalso the burst; 0 sends none (default: %D)", "1000"}, {}},
    {"busy-poll", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxBusyPollUs, o.busy_poll_us, "expected microseconds 0-1000, got "); },
     {"USEC", "before each sleep, keep polling for up to USEC microseconds\n(0-1000): lower latency, especially in VMs, for more CPU;\na busy tunnel then keeps a core per queue (default: 0, off;\nwhen set, replaces --poll-budget)", nullptr}, {}},
    {"keepalive", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxKeepaliveSeconds, o.keepalive_s, "expected a whole number of seconds 0-86400 (0 = off), got "); },
     {"SECONDS", "probe a connection after this long without a segment from\nthe peer, and again every SECONDS; 0 = off: no probes, no\ndead-path detection (0-86400; default: %D)", "5"}, {}},
    {"keepalive-probes", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 1, kMaxKeepaliveProbes, o.keepalive_probes, "expected a number 1-255, got "); },
     {"N", "unanswered probes before the connection is declared dead\n(1-255; default: %D). A dead connection is reset and\nopened again from a new port on the flow's next datagram\n(see the README: phantun peers never answer probes)", "3"},
     {"N", "unanswered probes before the connection is declared dead\n(1-255; default: %D). A dead connection is reset and its\nUDP socket closed (see the README: phantun peers never\nanswer probes)", "3"}},
    {"metrics", 0, Section::options, false,
     [](std::string_view t, Options& o) {
         std::optional<faketcp::Endpoint> ep = faketcp::parse_endpoint(t);
         if (!ep || ep->port == 0) return "expected IP:PORT to serve metrics on (IPv6 as [addr]:port), got " + quote(t);
         o.metrics = *ep;
         return std::string();
     },
     {"IP:PORT", "serve every counter in the Prometheus text format at\nhttp://IP:PORT/metrics; IPv6 as [addr]:port. Keep it\non loopback or a private address (default: off)", nullptr}, {}},
    {"poll-budget", 0, Section::options, false,
     [](std::string_view t, Options& o) { return parse_number(t, 0, kMaxBusyPollUs, o.poll_budget_us, "expected microseconds 0-1000, got "); },
     {"USEC", "adaptive polling (0-1000): after two packets arrive at most\nUSEC apart, poll until USEC after the last one before\nsleeping; an idle tunnel never polls (default: %D; 0: always\nsleep)", "50"}, {}},
    {"profile", 0, Section::options, false,
     [](std::string_view t, Options& o) {
         if (t == "phantun") o.profile = faketcp::Profile::phantun;
         else if (t == "linux") o.profile = faketcp::Profile::linux_tcp;
         else return "expected phantun or linux, got " + quote(t);
         return std::string();
     },
     {"NAME", "wire profile of the connections: phantun (ISN 0, no\noptions; phantun servers accept only this) or linux\n(looks like this host's own kernel TCP: random ISN,\ntimestamps, ACK stream; datagrams 12 bytes smaller)\n(default: %D)", "phantun"},
     {"NAME", "phantun or linux: the style of RSTs to unknown\nsegments. Every client is answered in its own style\n(a SYN with an MSS option gets linux) (default: %D)", "phantun"}},
    {"help", 'h', Section::options, true, nullptr, {nullptr, "print this help and exit", nullptr}, {}},
    {"version", 'V', Section::options, true, nullptr, {nullptr, "print the version and exit", nullptr}, {}},
};
// clang-format on
constexpr size_t kFlagCount = sizeof kFlags / sizeof kFlags[0];

size_t index_of(const FlagDef& f) { return static_cast<size_t>(&f - kFlags); }

const FlagDef* find_long(std::string_view name) {
    for (const FlagDef& f : kFlags)
        if (name == f.name) return &f;
    return nullptr;
}

const FlagDef* find_short(char c) {
    for (const FlagDef& f : kFlags)
        if (f.short_name != 0 && c == f.short_name) return &f;
    return nullptr;
}

const FlagDef& flag(std::string_view name) {
    const FlagDef* f = find_long(name);
    return f != nullptr ? *f : kFlags[0];  // every caller names a flag of the table
}

std::string flag_name(const FlagDef& f) { return std::string("--") + f.name; }

ParseResult fail(std::string message) {
    ParseResult r;
    r.kind = ParseResult::error;
    r.text = "faketcp: " + std::move(message);
    return r;
}

// One flag's help: "  -l, --local IP:PORT         text", the text's further
// lines aligned under its first.
void append_help(std::string& s, const FlagDef& f, Mode mode) {
    constexpr size_t kColumn = 30;
    std::string left = f.short_name != 0 ? std::string("  -") + f.short_name + ", " : std::string("      ");
    left += flag_name(f);
    if (const char* v = value_name_of(f, mode)) left += std::string(" ") + v;
    left += left.size() < kColumn ? std::string(kColumn - left.size(), ' ') : std::string("  ");
    std::string text = help_of(f, mode);
    if (const char* def = default_of(f, mode)) {
        size_t at = text.find("%D");
        if (at != std::string::npos) text.replace(at, 2, def);
    }
    s += left;
    for (char c : text) {
        s += c;
        if (c == '\n') s += std::string(kColumn, ' ');
    }
    s += '\n';
}

// Where each flag's value came from: the command line, or a line of the file.
struct Given {
    bool seen = false;
    std::string value;  // empty for a switch
    size_t line = 0;    // 0: the command line
};

// Splits one config line into key and value; false if it holds nothing.
bool split_config_line(std::string_view line, std::string_view& key, std::string_view& value) {
    const char* blanks = " \t\r";
    size_t b = line.find_first_not_of(blanks);
    if (b == std::string_view::npos || line[b] == '#') return false;
    line = line.substr(b, line.find_last_not_of(blanks) + 1 - b);
    size_t gap = line.find_first_of(blanks);
    key = line.substr(0, gap);
    value = gap == std::string_view::npos ? std::string_view() : line.substr(line.find_first_not_of(blanks, gap));
    return true;
}

}  // namespace

std::string parse_config_text(std::string_view text, const std::string& file, ConfigValues& out) {
    out.assign(kFlagCount, ConfigValue{});
    size_t line_no = 0;
    while (!text.empty()) {
        ++line_no;
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        const std::string where = file + ":" + std::to_string(line_no) + ": ";
        if (line.find('\0') != std::string_view::npos) return where + "not a text file (NUL byte)";
        std::string_view key, value;
        if (!split_config_line(line, key, value)) continue;
        if (key.size() > 2 && key.substr(0, 2) == "--")
            return where + "unknown key " + quote(key) + " (write keys without '--', e.g. '" +
                   std::string(key.substr(2)) + " VALUE')";
        const FlagDef* f = find_long(key);
        if (f == nullptr) return where + "unknown key " + quote(key) + " (keys are the long flag names)";
        if (f->command_line_only) return where + quote(key) + " is not allowed in a config file";
        ConfigValue& slot = out[index_of(*f)];
        if (slot.line != 0)
            return where + quote(key) + " given more than once (first on line " + std::to_string(slot.line) + ")";
        if (!takes_value(*f) && !value.empty()) return where + flag_name(*f) + ": takes no value";
        if (takes_value(*f) && value.empty()) return where + flag_name(*f) + ": missing value";
        slot.line = line_no;
        slot.value = std::string(value);
    }
    return "";
}

namespace {

constexpr size_t kMaxConfigBytes = 64 * 1024;

// Reads and splits --config FILE; returns the one-line error or "".
std::string read_config(const std::string& path, ConfigValues& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        int e = errno;
        return "--config: cannot read " + quote(path) + ": " + std::strerror(e != 0 ? e : ENOENT);
    }
    std::string text;
    char buf[4096];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
        text.append(buf, static_cast<size_t>(in.gcount()));
        if (text.size() > kMaxConfigBytes)
            return "--config: " + quote(path) + " is larger than " + std::to_string(kMaxConfigBytes) + " bytes";
    }
    if (in.bad()) return "--config: error reading " + quote(path);
    return parse_config_text(text, path, out);
}

// Checks that involve more than one flag, after every flag is parsed.
std::string check_combinations(const Options& o, std::string_view remote_text) {
    if (o.tun_local == o.tun_peer) return "--tun-peer: must differ from --tun-local";
    if (!o.ipv4_only && *o.tun_local6 == *o.tun_peer6) return "--tun-peer6: must differ from --tun-local6";
    if (o.max_half_open > o.max_connections)
        return "--max-half-open: " + std::to_string(o.max_half_open) + " is more than --max-connections " +
               std::to_string(o.max_connections);
    // The client's fake-TCP connections need a local address of the server's
    // family; an IPv6 literal cannot be reached with -4.
    if (o.mode == Mode::client && o.ipv4_only) {
        std::optional<IpAddr> lit = faketcp::parse_ip(o.remote.host);
        if (lit && lit->family == Family::v6)
            return "--remote: " + quote(remote_text) + " is IPv6, but -4/--ipv4-only leaves the TUN without IPv6";
    }
    if (o.auto_rules && o.tun_name.empty())
        return "--auto-rules: needs --tun NAME (its rules live in the nftables table 'faketcp-NAME')";
    if (o.auto_rules && o.tun_name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
                            std::string::npos)
        return "--auto-rules: --tun " + quote(o.tun_name) +
               " may only hold letters, digits, '-', '_' and '.' (it names the rules' table)";
    return "";
}

}  // namespace

std::string usage(std::optional<Mode> mode) {
    std::string v = kVersion;
    if (!mode) {
        return "faketcp " + v +
               " - UDP over fake TCP through a TUN device (wire-compatible with phantun)\n"
               "\n"
               "Usage:\n"
               "  faketcp client --local IP:PORT --remote HOST:PORT [options]\n"
               "  faketcp server --local PORT --remote HOST:PORT [options]\n"
               "  faketcp client|server --config FILE [options]\n"
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
             "the peer's next datagram; up to 64 datagrams per flow wait for its handshake.\n";
    } else {
        s += "Usage: faketcp server --local PORT --remote HOST:PORT [options]\n"
             "\n"
             "Accepts fake-TCP connections on port --local (DNAT the public TCP port to the\n"
             "--tun-peer address). Each connection gets its own UDP socket connected to the\n"
             "service at --remote; replies from that socket go back over that connection.\n"
             "A connection reset by the client closes its UDP socket; one that sees no traffic\n"
             "for --idle-timeout seconds is closed (RST) along with it.\n";
    }
    s += "\nRequired (on the command line or in --config FILE):\n";
    for (const FlagDef& f : kFlags)
        if (f.section == Section::required) append_help(s, f, *mode);
    s += "\nOptions:\n";
    for (const FlagDef& f : kFlags)
        if (f.section == Section::options) append_help(s, f, *mode);
    s += "\n"
         "A flag's value may follow it (--local 127.0.0.1:1234) or be joined with '='\n"
         "(--local=127.0.0.1:1234). TUN MTU is 1500; datagrams larger than one segment carries\n"
         "(1460 bytes over IPv4, 1440 over IPv6) are dropped and counted.\n"
         "\n"
         "CONFIG FILE: one flag per line as its long name without '--', a space and the\n"
         "value ('local 0.0.0.0:4567'); a switch alone ('ipv4-only'). Blank lines and lines\n"
         "starting with '#' are ignored. An unknown key, a bad value or a key given twice\n"
         "stops faketcp with FILE:LINE and exit 2. Flags on the command line win over the file.\n"
         "\n"
         "AUTO RULES: --auto-rules loads the nftables table 'faketcp-<tun>' with 'nft -f'\n"
         "(else iptables/ip6tables chains 'FTC-<tun>-*').\n" +
         std::string(client ? "It masquerades the TUN peer addresses out of the interfaces that\n"
                              "reach --remote"
                            : "It DNATs TCP --local arriving on any interface but the TUN to\n"
                              "the TUN peer addresses") +
         ", accepts forwarding to and from the TUN and\n"
         "turns net.ipv4.ip_forward (and net.ipv6.conf.all.forwarding) on; exit\n"
         "removes the rules and turns forwarding back off if faketcp turned it on.\n"
         "A table left by a killed instance of the same --tun is replaced at start-up.\n"
         "\n"
         "Needs CAP_NET_ADMIN (root, or once: setcap cap_net_admin+ep faketcp).\n"
         "Logs go to stderr. SIGINT/SIGTERM reset every connection, remove the TUN and exit 0.\n"
         "Under systemd (Type=notify) it reports READY=1 and STOPPING=1 to $NOTIFY_SOCKET.\n"
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
    const std::string see = " (see 'faketcp " + std::string(sub) + " --help')";

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

    // Pass 1: split the command line into flag -> value; reject unknown,
    // repeated, valueless.
    std::vector<std::optional<std::string_view>> value(kFlagCount);
    std::vector<bool> on_command_line(kFlagCount, false);
    for (size_t i = 1; i < args.size(); ++i) {
        std::string_view arg = args[i];
        const FlagDef* spec = nullptr;
        std::optional<std::string_view> inline_value;
        if (arg.size() > 2 && arg.substr(0, 2) == "--") {
            std::string_view name = arg.substr(2);
            size_t eq = name.find('=');
            if (eq != std::string_view::npos) {
                inline_value = name.substr(eq + 1);
                name = name.substr(0, eq);
            }
            spec = find_long(name);
            if (!spec) return fail("unknown flag " + quote(arg) + see);
        } else if (arg.size() == 2 && arg[0] == '-') {
            spec = find_short(arg[1]);
            if (!spec) return fail("unknown flag " + quote(arg) + see);
        } else {
            return fail("unexpected argument " + quote(arg) + see);
        }
        size_t idx = index_of(*spec);
        if (on_command_line[idx]) return fail(flag_name(*spec) + ": given more than once");
        on_command_line[idx] = true;
        if (!takes_value(*spec)) {
            if (inline_value) return fail(flag_name(*spec) + ": takes no value");
            value[idx] = std::string_view();
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= args.size()) return fail(flag_name(*spec) + ": missing value");
            inline_value = args[++i];
        }
        value[idx] = inline_value;
    }

    // The config file, if any: its lines, checked for unknown and repeated keys.
    ParseResult r;
    Options& o = r.options;
    o.mode = mode;
    const size_t config_idx = index_of(flag("config"));
    ConfigValues file(kFlagCount);
    if (value[config_idx]) {
        std::string error = parse_config(*value[config_idx], o);
        if (!error.empty()) return fail("--config: " + error);
        error = read_config(o.config_path, file);
        if (!error.empty()) return fail(error);
    }
    auto has = [&](const char* name) {
        size_t i = index_of(flag(name));
        return on_command_line[i] || file[i].line != 0;
    };

    // Pass 2: each flag's parser, in table order, on its value: the file's,
    // then the command line's over it; the role's default when neither has it.
    if (!has("local")) return fail(std::string(sub) + ": --local is required" + see);
    if (!has("remote")) return fail(std::string(sub) + ": --remote is required" + see);
    const bool ipv4_only = has("ipv4-only");
    if (ipv4_only) {
        if (has("tun-local6")) return fail("-4/--ipv4-only conflicts with --tun-local6");
        if (has("tun-peer6")) return fail("-4/--ipv4-only conflicts with --tun-peer6");
    }
    std::string remote_text;
    for (const FlagDef& f : kFlags) {
        if (f.parse == nullptr || &f == &flag("config")) continue;
        const size_t i = index_of(f);
        // A file value the command line overrides is still checked: a bad
        // file is refused whatever the command line says.
        if (file[i].line != 0) {
            std::string error = f.parse(file[i].value, o);
            if (!error.empty())
                return fail(o.config_path + ":" + std::to_string(file[i].line) + ": " + flag_name(f) + ": " + error);
            if (f.name == std::string_view("remote")) remote_text = file[i].value;
        }
        std::string text;
        if (on_command_line[i]) {
            text = std::string(*value[i]);
        } else if (file[i].line != 0) {
            continue;
        } else if (const char* def = default_of(f, mode)) {
            if (ipv4_only && (f.name == std::string_view("tun-local6") || f.name == std::string_view("tun-peer6")))
                continue;
            text = def;
        } else {
            continue;
        }
        if (f.name == std::string_view("remote")) remote_text = text;
        std::string error = f.parse(text, o);
        if (!error.empty()) return fail(flag_name(f) + ": " + error);
    }

    if (!has("log-level") && env_log != nullptr && env_log[0] != '\0') {
        std::optional<faketcp::LogLevel> level = parse_log_level(env_log);
        if (!level) return fail(std::string("FAKETCP_LOG: expected error, warn, info or debug, got ") + quote(env_log));
        o.log_level = *level;
    }
    if (!has("max-half-open")) o.max_half_open = std::min(o.max_half_open, o.max_connections);
    std::string error = check_combinations(o, remote_text);
    if (!error.empty()) return fail(error);

    r.kind = ParseResult::run;
    return r;
}

std::vector<FlagInfo> flag_list() {
    std::vector<FlagInfo> out;
    for (const FlagDef& f : kFlags) out.push_back({f.name, f.short_name, takes_value(f), !f.command_line_only});
    return out;
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
