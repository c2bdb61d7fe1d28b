// demo/metrics.h — `--metrics ADDR:PORT`: every counter in the Prometheus
// text exposition format (0.0.4) at GET /metrics.
//
// Two parts. The exposition (Exposition, format_metrics) is pure: snapshots
// in, text out. MetricsServer is the HTTP side, run by the main thread next
// to its signal handling: non-blocking sockets on its own epoll set, whose fd
// the main thread polls with the others. It never touches a worker: the text
// comes from a render callback, which the tunnel answers from the same
// per-worker snapshots as the stats dump (one eventfd poke per worker, no
// lock or extra work on the per-datagram path).
//
// Every byte it reads is untrusted, so everything is bounded: the request
// head (431 past MetricsLimits::max_request), the connections at once (one
// more is answered 503 and closed at once), each connection's lifetime
// (MetricsLimits::timeout from accept to close, so a slow sender or a slow
// reader cannot hold a slot: 408), and how often the callback runs (a scrape
// within render_reuse of the last one gets the same text). Malformed heads
// get 400, other paths 404, other methods 405 with Allow.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "demo/options.h"
#include "demo/stats.h"
#include "demo/udp.h"
#include "faketcp.h"

namespace demo {

// ---------------------------------------------------------------------------
// The exposition format
// ---------------------------------------------------------------------------

// Builds exposition text one metric family at a time: family() writes its
// "# HELP" and "# TYPE" lines, sample() its lines. In 0.0.4 a sample's name is
// its family's name, so a counter family's name ends in "_total".
class Exposition {
public:
    enum class Type : uint8_t { counter, gauge };
    struct Label {
        std::string_view name;
        std::string_view value;
    };

    void family(std::string_view name, Type type, std::string_view help);
    // A sample of the family last begun; label values are escaped.
    void sample(std::initializer_list<Label> labels, uint64_t value);
    const std::string& text() const { return text_; }

private:
    std::string text_;
    std::string name_;  // the current family
};

// "\\", "\"" and "\n" escaped, as label values need (0.0.4).
std::string escape_label_value(std::string_view value);
// "\\" and "\n" escaped, as HELP text needs.
std::string escape_help(std::string_view help);

// The metrics endpoint's own counters, exposed with the tunnel's.
struct MetricsServerStats {
    // The statuses it answers, in the order of `responses`.
    static constexpr std::array<int, 8> kStatuses = {200, 400, 404, 405, 408, 431, 503, 505};
    uint64_t connections_accepted = 0;  // including those turned away
    uint64_t connections_rejected = 0;  // over the connection limit: 503 and closed at once
    uint64_t timeouts = 0;              // closed at the deadline (408 if the head was still arriving)
    std::array<uint64_t, kStatuses.size()> responses{};
    void count_response(int status);
};

// Everything the endpoint shows. Every per-worker series carries a
// worker="N" label (worker N serves TUN queue N when there are several);
// sum them with `sum without (worker)`.
std::string format_metrics(Mode mode, const std::vector<Snapshot>& workers, bool tun_offload,
                           const MetricsServerStats& server);

// ---------------------------------------------------------------------------
// The HTTP endpoint
// ---------------------------------------------------------------------------

struct MetricsLimits {
    size_t max_connections = 64;  // at once; one more is answered 503 and closed
    size_t max_request = 4096;    // bytes of request head (431 beyond)
    faketcp::Duration timeout = std::chrono::seconds(5);  // from accept to close
    faketcp::Duration render_reuse = std::chrono::milliseconds(100);  // 0: render every scrape
};

class MetricsServer {
public:
    // The exposition text, rendered on demand (at most once per
    // render_reuse), given the server's own counters to show.
    using Render = std::function<std::string(const MetricsServerStats&)>;

    // Listens on `address` (TCP). Null after setting `error` to one line.
    static std::unique_ptr<MetricsServer> open(const faketcp::Endpoint& address, Render render,
                                               const MetricsLimits& limits, std::string& error);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // Readable (poll/epoll) when a socket is ready: call process().
    int fd() const { return epoll_.get(); }
    // The earliest connection deadline or listener retry: call process() then.
    std::optional<faketcp::TimePoint> next_deadline() const;
    // Handles every ready socket and every deadline up to `now`; never blocks.
    void process(faketcp::TimePoint now);

    const faketcp::Endpoint& local_address() const { return local_; }
    const MetricsServerStats& stats() const { return stats_; }
    size_t open_connections() const;

private:
    struct Conn;
    MetricsServer(Fd listener, Fd epoll, Render render, const MetricsLimits& limits);
    void accept_all(faketcp::TimePoint now);
    void on_event(size_t slot, uint32_t events, faketcp::TimePoint now);
    void on_readable(Conn& c, faketcp::TimePoint now);
    void start_response(Conn& c, std::string text, int status, faketcp::TimePoint now);
    void write_some(Conn& c, faketcp::TimePoint now);
    void close_conn(Conn& c);
    const std::string& rendered(faketcp::TimePoint now);
    void watch(int fd, uint32_t events, uint64_t key, bool modify);

    Fd listener_;
    Fd epoll_;
    Render render_;
    MetricsLimits limits_;
    faketcp::Endpoint local_;
    std::vector<Conn> conns_;  // max_connections slots
    MetricsServerStats stats_;
    std::string cached_;
    std::optional<faketcp::TimePoint> cached_at_;
    std::optional<faketcp::TimePoint> listener_paused_until_;  // after EMFILE/ENFILE
};

}  // namespace demo
