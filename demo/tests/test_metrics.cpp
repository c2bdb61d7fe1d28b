// The metrics endpoint (demo/http.h, demo/metrics.h): the request parser and
// the responses as pure functions, the exposition text, and - over loopback,
// no root needed - the server's bounds: connection limit, deadline, head
// size, render reuse.
// Built into build/unit_tests together with demo/http.cpp and demo/metrics.cpp.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "demo/http.h"
#include "demo/metrics.h"

using demo::http::Parsed;
using demo::http::parse_request;

namespace {

constexpr size_t kMax = 4096;

Parsed parse(std::string_view s) { return parse_request(s, kMax, "/metrics"); }

int status_of(std::string_view s) {
    Parsed p = parse(s);
    return p.state == Parsed::incomplete ? 0 : p.status;
}

}  // namespace

TEST_CASE("http: a scrape's request head is complete only at its empty line, then 200") {
    const std::string req =
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: Prometheus/2.42.0\r\n"
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
        "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
    for (size_t n = 0; n < req.size(); ++n) {
        CAPTURE(n);
        CHECK(parse(req.substr(0, n)).state == Parsed::incomplete);
    }
    Parsed p = parse(req);
    CHECK(p.state == Parsed::complete);
    CHECK(p.status == 200);
    CHECK_FALSE(p.head_only);
}

TEST_CASE("http: accepted forms of a request for /metrics") {
    CHECK(status_of("GET /metrics HTTP/1.0\r\n\r\n") == 200);
    CHECK(status_of("GET /metrics?name[]=x HTTP/1.1\r\n\r\n") == 200);  // the query is ignored
    CHECK(status_of("GET /metrics HTTP/1.1\n\n") == 200);                // bare LF ends lines too
    CHECK(status_of("\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n") == 200);    // leading empty lines skipped
    CHECK(status_of("GET http://127.0.0.1:9100/metrics HTTP/1.1\r\n\r\n") == 200);  // absolute-form
    CHECK(status_of("GET HTTPS://host/metrics?x HTTP/1.1\r\n\r\n") == 200);
    CHECK(status_of("GET /metrics HTTP/1.1\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\t!\r\n\r\n") == 200);
    // Whatever follows the head (a body, another request) is not read.
    CHECK(status_of("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello") == 200);
    Parsed head = parse("HEAD /metrics HTTP/1.1\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(head.head_only);
}

TEST_CASE("http: other paths are 404, other methods 405 (methods are case-sensitive)") {
    CHECK(status_of("GET / HTTP/1.1\r\n\r\n") == 404);
    CHECK(status_of("GET /metrics/ HTTP/1.1\r\n\r\n") == 404);
    CHECK(status_of("GET /METRICS HTTP/1.1\r\n\r\n") == 404);
    CHECK(status_of("GET http://host HTTP/1.1\r\n\r\n") == 404);
    CHECK(status_of("POST /other HTTP/1.1\r\n\r\n") == 404);  // no such resource, whatever the method
    CHECK(status_of("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == 405);
    CHECK(status_of("DELETE /metrics HTTP/1.1\r\n\r\n") == 405);
    CHECK(status_of("get /metrics HTTP/1.1\r\n\r\n") == 405);
    Parsed head404 = parse("HEAD /x HTTP/1.1\r\n\r\n");
    CHECK(head404.status == 404);
    CHECK(head404.head_only);
}

TEST_CASE("http: malformed heads are 400, other HTTP versions 505") {
    const char* bad[] = {
        "GET /metrics\r\n\r\n",                          // no version
        "GET  /metrics HTTP/1.1\r\n\r\n",                // two spaces: empty target
        "GET /metrics HTTP/1.1 extra\r\n\r\n",
        "GET /metrics  HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1\r\n\r\n",
        "GET /metrics http/1.1\r\n\r\n",
        "GET /metrics HTTP/1.10\r\n\r\n",
        " GET /metrics HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",                        // asterisk-form
        "GET host:9100 HTTP/1.1\r\n\r\n",                // authority-form
        "GET /met\x01rics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",     // space before the colon
        "GET /metrics HTTP/1.1\r\n: no name\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",  // obs-fold
        "GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n",      // bare CR
        "GET /metrics HTTP/1.1\r\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nA: \x7f\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",
    };
    for (const char* b : bad) {
        CAPTURE(b);
        CHECK(status_of(b) == 400);
        CHECK(parse(b).state == Parsed::invalid);
    }
    const char nul[] = "GET /metrics HTTP/1.1\r\nA: \0\r\n\r\n";
    CHECK(status_of(std::string(nul, sizeof nul - 1)) == 400);
    CHECK(status_of("GET /metrics HTTP/2.0\r\n\r\n") == 505);
    CHECK(status_of("GET /metrics HTTP/0.9\r\n\r\n") == 505);
}

TEST_CASE("http: bytes no request line starts with are refused before the head ends") {
    // A TLS ClientHello, a NUL: 400 at once rather than a wait for the timeout.
    CHECK(status_of(std::string("\x16\x03\x01\x02\x00\x01", 6)) == 400);
    CHECK(status_of(std::string("\0", 1)) == 400);
    CHECK(status_of("GE") == 0);              // a method so far
    CHECK(status_of("GET /metr\x01") == 0);   // the target is checked once the line is whole
    CHECK(status_of("GET /metr\x01 HTTP/1.1\r\n") == 400);
}

TEST_CASE("http: a head over the size limit is 431, one at the limit is served") {
    const std::string start = "GET /metrics HTTP/1.1\r\nX-Pad: ";
    const std::string end = "\r\n\r\n";
    const std::string at_limit = start + std::string(kMax - start.size() - end.size(), 'a') + end;
    REQUIRE(at_limit.size() == kMax);
    CHECK(status_of(at_limit) == 200);
    const std::string over = start + std::string(kMax - start.size() - end.size() + 1, 'a') + end;
    CHECK(status_of(over) == 431);
    // The limit reached with no end in sight: 431 without waiting for more.
    CHECK(status_of(start + std::string(kMax - start.size(), 'a')) == 431);
    CHECK(status_of(start + std::string(kMax - start.size() - 1, 'a')) == 0);
    // Empty lines before the request line count too.
    CHECK(status_of(std::string(kMax, '\n')) == 431);
    // A request line longer than the limit.
    CHECK(status_of("GET /" + std::string(kMax, 'm')) == 431);
}

TEST_CASE("http: responses carry length, type and close; 405 says what is allowed") {
    CHECK(demo::http::response(200, "text/plain", "abc", false) ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    CHECK(demo::http::response(200, "text/plain", "abc", true) ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
    const std::string r405 = demo::http::error_response(405, "/metrics", false);
    CHECK(r405.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0);
    CHECK(r405.find("\r\nAllow: GET, HEAD\r\n") != std::string::npos);
    const std::string r404 = demo::http::error_response(404, "/metrics", false);
    CHECK(r404.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(r404.find("Allow:") == std::string::npos);
    CHECK(r404.find("\r\n\r\n404 Not Found: only /metrics is served here\n") != std::string::npos);
    for (int status : {400, 408, 431, 503, 505}) {
        CAPTURE(status);
        const std::string r = demo::http::error_response(status, "/metrics", false);
        CHECK(r.rfind("HTTP/1.1 " + std::to_string(status) + " " + demo::http::reason_phrase(status) + "\r\n", 0) == 0);
        const size_t body = r.find("\r\n\r\n") + 4;
        CHECK(r.find("Content-Length: " + std::to_string(r.size() - body) + "\r\n") != std::string::npos);
    }
}

// ---------------------------------------------------------------------------
// The exposition text
// ---------------------------------------------------------------------------

namespace {

// What a scraper checks of 0.0.4 text: every sample follows its family's
// HELP and TYPE, each family once, counters end in _total, label values
// quoted, a value after one space. Returns the first problem, or "".
std::string exposition_problem(const std::string& text, std::map<std::string, std::string>& samples) {
    std::istringstream in(text);
    std::string line, family, type;
    std::set<std::string> seen;
    bool help = false;
    while (std::getline(in, line)) {
        if (line.rfind("# HELP ", 0) == 0) {
            family = line.substr(7, line.find(' ', 7) - 7);
            if (!seen.insert(family).second) return "family twice: " + family;
            help = true;
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            std::istringstream t(line.substr(7));
            std::string name;
            t >> name >> type;
            if (!help || name != family) return "TYPE without its HELP: " + line;
            if (type != "counter" && type != "gauge") return "type: " + line;
            if (type == "counter" && name.size() < 6) return "short counter: " + name;
            if (type == "counter" && name.substr(name.size() - 6) != "_total") return "counter without _total: " + name;
            help = false;
            continue;
        }
        const size_t space = line.rfind(' ');
        if (space == std::string::npos) return "no value: " + line;
        const std::string series = line.substr(0, space), value = line.substr(space + 1);
        const std::string name = series.substr(0, series.find('{'));
        if (name != family) return "sample outside its family: " + line;
        if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) return "value: " + line;
        if (series.find('{') != std::string::npos && series.back() != '}') return "labels: " + line;
        if (!samples.emplace(series, value).second) return "series twice: " + series;
    }
    return "";
}

}  // namespace

TEST_CASE("exposition: escaping and the shape of a family") {
    CHECK(demo::escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
    CHECK(demo::escape_help("a\\b\"c\nd") == "a\\\\b\"c\\nd");
    demo::Exposition e;
    e.family("x_total", demo::Exposition::Type::counter, "Things.\nMore");
    e.sample({}, 3);
    e.sample({{"worker", "0"}, {"reason", "a\"b"}}, 18446744073709551615ull);
    e.family("y", demo::Exposition::Type::gauge, "Level.");
    e.sample({{"k", "v"}}, 0);
    CHECK(e.text() ==
          "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total 3\n"
          "x_total{worker=\"0\",reason=\"a\\\"b\"} 18446744073709551615\n"
          "# HELP y Level.\n# TYPE y gauge\ny{k=\"v\"} 0\n");
}

TEST_CASE("exposition: every counter of every worker, per reason, well formed") {
    std::vector<demo::Snapshot> workers(2);
    workers[0].stack.packets_in = 11;
    workers[1].stack.packets_in = 22;
    workers[1].stack.drops[static_cast<size_t>(faketcp::DropReason::bad_tcp_checksum)] = 7;
    workers[0].stack.open_connections = 3;
    workers[0].offload.rx_drops[static_cast<size_t>(faketcp::offload::RxDrop::vnet_bad_csum)] = 5;
    workers[1].tunnel.pending_full_drops = 9;
    workers[0].tunnel.udp_would_block = 4;
    workers[0].tunnel.peers = 6;
    workers[1].tunnel.accepted = 8;
    demo::MetricsServerStats server;
    server.connections_rejected = 2;
    server.count_response(404);

    std::map<std::string, std::string> c;
    const std::string client = demo::format_metrics(demo::Mode::client, workers, true, server);
    REQUIRE(exposition_problem(client, c) == "");
    CHECK(c["faketcp_build_info{version=\"" + std::string(demo::kVersion) + "\",mode=\"client\"}"] == "1");
    CHECK(c["faketcp_workers"] == "2");
    CHECK(c["faketcp_tun_offload_enabled"] == "1");
    CHECK(c["faketcp_stack_receive_packets_total{worker=\"0\"}"] == "11");
    CHECK(c["faketcp_stack_receive_packets_total{worker=\"1\"}"] == "22");
    CHECK(c["faketcp_stack_open_connections{worker=\"0\"}"] == "3");
    CHECK(c["faketcp_stack_drops_total{worker=\"1\",reason=\"bad_tcp_checksum\"}"] == "7");
    CHECK(c["faketcp_tun_read_drops_total{worker=\"0\",reason=\"vnet_bad_csum\"}"] == "5");
    CHECK(c["faketcp_tunnel_drops_total{worker=\"1\",reason=\"handshake_queue_full\"}"] == "9");
    CHECK(c["faketcp_tunnel_udp_errors_total{worker=\"0\",kind=\"would_block\"}"] == "4");
    CHECK(c["faketcp_tunnel_udp_peers{worker=\"0\"}"] == "6");
    CHECK(c["faketcp_metrics_connections_rejected_total"] == "2");
    CHECK(c["faketcp_metrics_responses_total{code=\"404\"}"] == "1");
    CHECK(c["faketcp_metrics_responses_total{code=\"200\"}"] == "0");
    CHECK(c.count("faketcp_tunnel_connections_accepted_total{worker=\"1\"}") == 0);  // a server's
    // Every drop reason of both the stack and the TUN reads, for each worker,
    // zeros included (a rate() needs the series before its first event).
    for (const char* w : {"0", "1"}) {
        for (size_t i = 0; i < faketcp::kDropReasonCount; ++i) {
            const std::string reason = faketcp::to_string(static_cast<faketcp::DropReason>(i));
            CHECK(c.count("faketcp_stack_drops_total{worker=\"" + std::string(w) + "\",reason=\"" + reason + "\"}") == 1);
        }
        for (size_t i = 0; i < faketcp::offload::kRxDropCount; ++i) {
            const std::string reason = faketcp::offload::to_string(static_cast<faketcp::offload::RxDrop>(i));
            CHECK(c.count("faketcp_tun_read_drops_total{worker=\"" + std::string(w) + "\",reason=\"" + reason + "\"}") ==
                  1);
        }
    }

    std::map<std::string, std::string> s;
    const std::string srv = demo::format_metrics(demo::Mode::server, workers, false, server);
    REQUIRE(exposition_problem(srv, s) == "");
    CHECK(s["faketcp_build_info{version=\"" + std::string(demo::kVersion) + "\",mode=\"server\"}"] == "1");
    CHECK(s["faketcp_tun_offload_enabled"] == "0");
    CHECK(s["faketcp_tunnel_connections_accepted_total{worker=\"1\"}"] == "8");
    CHECK(s.count("faketcp_tunnel_udp_peers{worker=\"0\"}") == 0);  // a client's
    CHECK(s.count("faketcp_tunnel_drops_total{worker=\"1\",reason=\"handshake_queue_full\"}") == 0);
    CHECK(s["faketcp_tunnel_drops_total{worker=\"1\",reason=\"oversized\"}"] == "0");
}

// ---------------------------------------------------------------------------
// The server, over loopback
// ---------------------------------------------------------------------------

namespace {

using faketcp::TimePoint;

struct Served {
    std::unique_ptr<demo::MetricsServer> server;
    int renders = 0;
};

std::unique_ptr<Served> serve(demo::MetricsLimits limits) {
    auto s = std::make_unique<Served>();
    std::string error;
    Served* raw = s.get();
    s->server = demo::MetricsServer::open(
        *faketcp::parse_endpoint("127.0.0.1:0"),
        [raw](const demo::MetricsServerStats&) { return "render " + std::to_string(++raw->renders) + "\n"; },
        limits, error);
    REQUIRE_MESSAGE(s->server, error);
    return s;
}

int connect_to(const demo::MetricsServer& server) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(server.local_address().port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
    return fd;
}

void send_all(int fd, const std::string& s) {
    REQUIRE(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()));
}

// Runs the server at `now` until the client sees the connection close (or a
// 2 s guard against a hang); returns everything the client received.
std::string pump_until_closed(demo::MetricsServer& server, int fd, TimePoint now) {
    std::string got;
    for (int i = 0; i < 2000; ++i) {
        server.process(now);
        char buf[65536];
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            got.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return got;
        ::usleep(1000);
    }
    FAIL("the connection did not close");
    return got;
}

// Runs the server until it has closed every connection (the clients closed theirs).
size_t settle(demo::MetricsServer& server, TimePoint now) {
    for (int i = 0; i < 2000 && server.open_connections() > 0; ++i) {
        server.process(now);
        if (server.open_connections() > 0) ::usleep(1000);
    }
    return server.open_connections();
}

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

}  // namespace

TEST_CASE("metrics server: a scrape gets the rendered text; renders are reused within render_reuse") {
    demo::MetricsLimits limits;
    limits.render_reuse = std::chrono::seconds(10);
    auto s = serve(limits);
    const TimePoint t0 = faketcp::Clock::now();
    for (int i = 0; i < 2; ++i) {
        int fd = connect_to(*s->server);
        send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        const std::string r = pump_until_closed(*s->server, fd, t0);
        ::close(fd);
        CHECK(status_line(r) == "HTTP/1.1 200 OK");
        CHECK(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
        CHECK(r.substr(r.find("\r\n\r\n") + 4) == "render 1\n");
    }
    CHECK(s->renders == 1);
    int fd = connect_to(*s->server);
    send_all(fd, "GET /metrics HTTP/1.1\r\n\r\n");
    const std::string r = pump_until_closed(*s->server, fd, t0 + std::chrono::seconds(10));
    ::close(fd);
    CHECK(r.substr(r.find("\r\n\r\n") + 4) == "render 2\n");
    CHECK(s->server->stats().responses[0] == 3);  // 200
    CHECK(settle(*s->server, t0 + std::chrono::seconds(10)) == 0);
}

TEST_CASE("metrics server: 404, 405, 400, 431 over a socket, and HEAD without a body") {
    auto s = serve(demo::MetricsLimits{});
    const TimePoint now = faketcp::Clock::now();
    struct Case {
        std::string request;
        std::string status;
    };
    const Case cases[] = {
        {"GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
        {"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.1 405 Method Not Allowed"},
        {"BREW /metrics HTCPCP/1.0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
        {"GET /metrics HTTP/1.1\r\nX: " + std::string(5000, 'x'), "HTTP/1.1 431 Request Header Fields Too Large"},
        {std::string(20000, 'A'), "HTTP/1.1 431 Request Header Fields Too Large"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.request.substr(0, 40));
        int fd = connect_to(*s->server);
        send_all(fd, c.request);
        const std::string r = pump_until_closed(*s->server, fd, now);
        ::close(fd);
        CHECK(status_line(r) == c.status);
    }
    int fd = connect_to(*s->server);
    send_all(fd, "HEAD /metrics HTTP/1.1\r\n\r\n");
    const std::string r = pump_until_closed(*s->server, fd, now);
    ::close(fd);
    CHECK(status_line(r) == "HTTP/1.1 200 OK");
    CHECK(r.find("Content-Length: 9\r\n") != std::string::npos);  // "render 1\n"
    CHECK(r.substr(r.size() - 4) == "\r\n\r\n");
    CHECK(settle(*s->server, now) == 0);
}

TEST_CASE("metrics server: a half-closed partial head is 400; a silent one closes without a word") {
    auto s = serve(demo::MetricsLimits{});
    const TimePoint now = faketcp::Clock::now();
    int fd = connect_to(*s->server);
    send_all(fd, "GET /metr");
    ::shutdown(fd, SHUT_WR);
    CHECK(status_line(pump_until_closed(*s->server, fd, now)) == "HTTP/1.1 400 Bad Request");
    ::close(fd);
    fd = connect_to(*s->server);
    ::shutdown(fd, SHUT_WR);
    CHECK(pump_until_closed(*s->server, fd, now) == "");
    ::close(fd);
    CHECK(settle(*s->server, now) == 0);
}

TEST_CASE("metrics server: a slow sender is answered 408 and closed at its deadline") {
    demo::MetricsLimits limits;
    limits.timeout = std::chrono::seconds(5);
    auto s = serve(limits);
    const TimePoint t0 = faketcp::Clock::now();
    int fd = connect_to(*s->server);
    send_all(fd, "GET /met");
    for (int i = 0; i < 20; ++i) s->server->process(t0);  // accepted, reading
    REQUIRE(s->server->open_connections() == 1);
    REQUIRE(s->server->next_deadline().has_value());
    CHECK(*s->server->next_deadline() <= t0 + limits.timeout);
    send_all(fd, "rics HTTP/1.1\r\n");  // more, but no end: the deadline stays
    s->server->process(t0 + std::chrono::seconds(4));
    CHECK(s->server->open_connections() == 1);
    const std::string r = pump_until_closed(*s->server, fd, t0 + limits.timeout);
    ::close(fd);
    CHECK(status_line(r) == "HTTP/1.1 408 Request Timeout");
    CHECK(s->server->stats().timeouts == 1);
    CHECK(s->server->open_connections() == 0);
    CHECK_FALSE(s->server->next_deadline().has_value());
}

TEST_CASE("metrics server: connections over the limit are answered 503 and closed at once") {
    demo::MetricsLimits limits;
    limits.max_connections = 2;
    auto s = serve(limits);
    const TimePoint now = faketcp::Clock::now();
    int held[2] = {connect_to(*s->server), connect_to(*s->server)};
    for (int i = 0; i < 20 && s->server->open_connections() < 2; ++i) {
        s->server->process(now);
        ::usleep(1000);
    }
    REQUIRE(s->server->open_connections() == 2);
    int extra = connect_to(*s->server);
    CHECK(status_line(pump_until_closed(*s->server, extra, now)) == "HTTP/1.1 503 Service Unavailable");
    ::close(extra);
    CHECK(s->server->stats().connections_rejected == 1);
    CHECK(s->server->stats().connections_accepted == 3);
    // The held ones are still served, and once one is done a slot is free again.
    send_all(held[0], "GET /metrics HTTP/1.1\r\n\r\n");
    CHECK(status_line(pump_until_closed(*s->server, held[0], now)) == "HTTP/1.1 200 OK");
    ::close(held[0]);
    for (int i = 0; i < 2000 && s->server->open_connections() > 1; ++i) {
        s->server->process(now);
        ::usleep(1000);
    }
    int next = connect_to(*s->server);
    send_all(next, "GET /metrics HTTP/1.1\r\n\r\n");
    CHECK(status_line(pump_until_closed(*s->server, next, now)) == "HTTP/1.1 200 OK");
    for (int fd : {held[1], next}) ::close(fd);
}

TEST_CASE("metrics server: a taken port is a one-line error naming the flag") {
    auto s = serve(demo::MetricsLimits{});
    std::string error;
    auto second = demo::MetricsServer::open(s->server->local_address(), [](const demo::MetricsServerStats&) { return ""; },
                                            demo::MetricsLimits{}, error);
    CHECK_FALSE(second);
    CHECK(error.rfind("--metrics 127.0.0.1:", 0) == 0);
    CHECK(error.find("Address already in use") != std::string::npos);
    CHECK(error.find('\n') == std::string::npos);
}
