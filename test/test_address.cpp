// Address parsing and formatting, and the names the API gives its enums.
#include <iterator>
#include <set>

#include "support.h"

using namespace tst;

TEST_CASE("parse_ip_accepts_v4_and_v6") {
    struct Case {
        const char* text;
        const char* canonical;  // inet_ntop's form
    };
    const Case cases[] = {
        {"1.2.3.4", "1.2.3.4"},
        {"0.0.0.0", "0.0.0.0"},
        {"255.255.255.255", "255.255.255.255"},
        {"10.0.0.1", "10.0.0.1"},
        {"2001:db8::1", "2001:db8::1"},
        {"2001:DB8:0:0:0:0:0:1", "2001:db8::1"},
        {"::", "::"},
        {"::1", "::1"},
        {"fe80::1:2:3:4", "fe80::1:2:3:4"},
        {"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"},
        {"::ffff:1.2.3.4", nullptr},  // formatting of v4-mapped is not pinned
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        std::optional<ft::IpAddr> a = ft::parse_ip(c.text);
        REQUIRE(a.has_value());
        CHECK(*a == ip(c.text));  // same bytes as inet_pton
        if (c.canonical) CHECK(ft::to_string(*a) == c.canonical);
    }
    CHECK(ft::parse_ip("1.2.3.4")->family == ft::Family::v4);
    CHECK(ft::parse_ip("::1")->family == ft::Family::v6);
}

TEST_CASE("parse_ip_rejects_malformed") {
    for (const char* text : {"", " ", "1.2.3", "1.2.3.4.5", "1.2.3.256", "256.1.1.1", "1.2.3.-1",
                             "1.2.3.4 ", " 1.2.3.4", "1.2.3.4/24", "a.b.c.d", "1..2.3", "[::1]",
                             "::1::2", "1:2:3:4:5:6:7:8:9", "gggg::1", "2001:db8::1%eth0",
                             "::1 ", "1.2.3.4:80", "12345::1"}) {
        CAPTURE(text);
        CHECK_FALSE(ft::parse_ip(text).has_value());
    }
}

TEST_CASE("ip_v4_constructor_and_unspecified") {
    ft::IpAddr a = ft::IpAddr::v4(192, 168, 1, 2);
    CHECK(a == ip("192.168.1.2"));
    CHECK(a.size() == 4);
    CHECK(ft::IpAddr::v6(kStack6.bytes) == kStack6);
    CHECK(kStack6.size() == 16);
    CHECK(ip("0.0.0.0").is_unspecified());
    CHECK(ip("::").is_unspecified());
    CHECK_FALSE(ip("0.0.0.1").is_unspecified());
    CHECK_FALSE(ip("::1").is_unspecified());
    CHECK(ip("0.0.0.0") != ip("::"));  // the family is part of the address
}

TEST_CASE("parse_endpoint_accepts_v4_and_bracketed_v6") {
    struct Case {
        const char* text;
        const char* addr;
        uint16_t port;
    };
    const Case cases[] = {
        {"1.2.3.4:80", "1.2.3.4", 80},
        {"1.2.3.4:0", "1.2.3.4", 0},
        {"1.2.3.4:65535", "1.2.3.4", 65535},
        {"[2001:db8::1]:80", "2001:db8::1", 80},
        {"[::1]:65535", "::1", 65535},
        {"[::]:1", "::", 1},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        std::optional<ft::Endpoint> e = ft::parse_endpoint(c.text);
        REQUIRE(e.has_value());
        CHECK(e->addr == ip(c.addr));
        CHECK(e->port == c.port);
    }
}

TEST_CASE("parse_endpoint_rejects_malformed") {
    for (const char* text :
         {"", "1.2.3.4", "1.2.3.256:1", "[::1]", "::1:80", ":80", "1.2.3.4:65536", "1.2.3.4:-1",
          "1.2.3.4:80x", "1.2.3.4:80 ", " 1.2.3.4:80", "1.2.3.4:", "1.2.3.4::80", "1.2.3.4:+80",
          "1.2.3.4:0x50", "1.2.3.4: 80", "1.2.3.4:99999999999999999999", "1.2.3.4:4294967376",
          "[2001:db8::1]:80x", "[2001:db8::1]:", "[2001:db8::1]", "[2001:db8::1:80",
          "2001:db8::1]:80", "[[::1]]:80", "[::1]:80:80", "[1.2.3.4]:80x", "[]:80",
          "2001:db8::1:80", "host:80", "[::1] :80"}) {
        CAPTURE(text);
        CHECK_FALSE(ft::parse_endpoint(text).has_value());
    }
}

TEST_CASE("parse_rejects_embedded_nul") {
    // A string_view may hold a NUL; what follows it is still part of the input.
    CHECK_FALSE(ft::parse_ip(std::string_view("1.2.3.4\0x", 9)).has_value());
    CHECK_FALSE(ft::parse_ip(std::string_view("::1\0", 4)).has_value());
    CHECK_FALSE(ft::parse_endpoint(std::string_view("1.2.3.4\0junk:80", 15)).has_value());
    CHECK_FALSE(ft::parse_endpoint(std::string_view("[::1\0x]:80", 10)).has_value());
}

TEST_CASE("endpoint_to_string_round_trips") {
    const char* texts[] = {"1.2.3.4:80", "0.0.0.0:0", "255.255.255.255:65535", "[2001:db8::1]:80",
                           "[::]:0", "[::1]:65535", "[fe80::1:2:3:4]:443"};
    for (const char* text : texts) {
        CAPTURE(text);
        std::optional<ft::Endpoint> e = ft::parse_endpoint(text);
        REQUIRE(e.has_value());
        CHECK(ft::to_string(*e) == text);
        CHECK(ft::parse_endpoint(ft::to_string(*e)) == e);
    }
    // formatting of values built without the parser
    CHECK(ft::to_string(ft::Endpoint{kStack4, 5555}) == "10.0.0.1:5555");
    CHECK(ft::to_string(ft::Endpoint{kStack6, 5555}) == "[fd00::1]:5555");
    CHECK(ft::to_string(kPeer6) == "fd00::2");
}

TEST_CASE("ip_to_string_round_trips_many_addresses") {
    // parse(to_string(a)) == a over a spread of v6 addresses with zero runs in
    // different places (RFC 5952 compression), and v4 addresses.
    for (uint32_t i = 0; i < 4096; ++i) {
        ft::IpAddr a;
        a.family = ft::Family::v6;
        for (int w = 0; w < 8; ++w) {
            bool zero = (i >> w) & 1;
            uint16_t v = zero ? 0 : static_cast<uint16_t>(i * 2654435761u >> (w * 2));
            a.bytes[static_cast<size_t>(2 * w)] = static_cast<uint8_t>(v >> 8);
            a.bytes[static_cast<size_t>(2 * w + 1)] = static_cast<uint8_t>(v);
        }
        std::string s = ft::to_string(a);
        CAPTURE(s);
        // inet_ntop's RFC 5952 text, except where it embeds a dotted quad
        // (first five words zero), which is left to the implementation
        if ((i & 0x1f) != 0x1f) CHECK(s == fmt(a));
        CHECK(ft::parse_ip(s) == a);
    }
    for (uint32_t i = 0; i < 1000; ++i) {
        uint32_t v = i * 2654435761u;
        ft::IpAddr a = ft::IpAddr::v4(static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                                      static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v));
        CHECK(ft::parse_ip(ft::to_string(a)) == a);
    }
}

TEST_CASE("enum_names_match_enumerators") {
    for (size_t i = 0; i < ft::kDropReasonCount; ++i) {
        auto r = static_cast<ft::DropReason>(i);
        CAPTURE(i);
        CHECK(std::string(ft::to_string(r)) == std::string(name(r)));
        CHECK(std::string(ft::describe(r)).size() > 5);
    }
    // Errc names are phrases ("invalid argument"); the header promises no spelling, so
    // only require them present and distinct.
    std::set<std::string> errc_names;
    const ft::Errc all_errc[] = {ft::Errc::ok, ft::Errc::invalid_argument, ft::Errc::not_established,
                                 ft::Errc::too_big, ft::Errc::empty_datagram, ft::Errc::stale_handle,
                                 ft::Errc::already_listening, ft::Errc::not_listening,
                                 ft::Errc::no_local_address, ft::Errc::ports_exhausted,
                                 ft::Errc::table_full, ft::Errc::tx_queue_full, ft::Errc::system};
    for (ft::Errc e : all_errc) {
        CAPTURE(e);
        REQUIRE(ft::to_string(e) != nullptr);
        CHECK(std::string(ft::to_string(e)).size() > 1);
        errc_names.insert(ft::to_string(e));
    }
    CHECK(errc_names.size() == std::size(all_errc));
    for (ft::EventType t : {ft::EventType::accepted, ft::EventType::connected,
                            ft::EventType::connect_failed, ft::EventType::datagram,
                            ft::EventType::closed}) {
        CHECK(std::string(ft::to_string(t)) == std::string(name(t)));
    }
    for (ft::CloseReason r : {ft::CloseReason::peer_reset, ft::CloseReason::local_close,
                              ft::CloseReason::handshake_timeout, ft::CloseReason::peer_dead}) {
        CHECK(std::string(ft::to_string(r)) == std::string(name(r)));
    }
    for (ft::ConnState s : {ft::ConnState::syn_sent, ft::ConnState::syn_received,
                            ft::ConnState::established}) {
        CHECK(std::string(ft::to_string(s)) == std::string(name(s)));
    }
}

TEST_CASE("stats_total_drops_sums_every_reason") {
    ft::Stats s;
    uint64_t sum = 0;
    for (size_t i = 0; i < ft::kDropReasonCount; ++i) {
        s.drops[i] = i * 3 + 1;
        sum += i * 3 + 1;
    }
    CHECK(s.total_drops() == sum);
    CHECK(s.dropped(ft::DropReason::bad_port) == static_cast<size_t>(ft::DropReason::bad_port) * 3 + 1);
}
