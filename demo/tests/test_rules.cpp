// --auto-rules' pure builders (demo/rules.h): the nftables script and the
// iptables commands for each role. Built into build/unit_tests with
// demo/rules.cpp.
#include <doctest/doctest.h>

#include <string>

#include "demo/rules.h"

namespace {

demo::RuleSpec spec(demo::Mode mode, bool v6) {
    demo::RuleSpec s;
    s.mode = mode;
    s.tun = "ftc0";
    s.peer4 = *faketcp::parse_ip("192.168.200.2");
    if (v6) s.peer6 = faketcp::parse_ip("fcc8::2");
    s.local_port = 4567;
    s.out_ifaces = {"eth0"};
    return s;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string all(const std::vector<demo::Command>& cmds) {
    std::string s;
    for (const demo::Command& c : cmds) {
        for (const std::string& w : c) s += w + " ";
        s += "\n";
    }
    return s;
}

}  // namespace

TEST_CASE("rules: the client's nftables table masquerades the TUN peers out of the route's interface") {
    std::string s = demo::nft_script(spec(demo::Mode::client, true));
    CHECK(s.rfind("table inet faketcp-ftc0\ndelete table inet faketcp-ftc0\ntable inet faketcp-ftc0 {\n", 0) == 0);
    CHECK(has(s, "type nat hook postrouting priority srcnat"));
    CHECK(has(s, "oifname \"eth0\" ip saddr 192.168.200.2 masquerade"));
    CHECK(has(s, "oifname \"eth0\" ip6 saddr fcc8::2 masquerade"));
    CHECK(has(s, "iifname \"ftc0\" accept"));
    CHECK(has(s, "oifname \"ftc0\" accept"));
    CHECK(!has(s, "dnat"));
    CHECK(!has(demo::nft_script(spec(demo::Mode::client, false)), "ip6"));
}

TEST_CASE("rules: the server's nftables table DNATs --local from any interface but the TUN") {
    std::string s = demo::nft_script(spec(demo::Mode::server, true));
    CHECK(has(s, "type nat hook prerouting priority dstnat"));
    CHECK(has(s, "iifname != \"ftc0\" tcp dport 4567 dnat ip to 192.168.200.2"));
    CHECK(has(s, "iifname != \"ftc0\" tcp dport 4567 dnat ip6 to fcc8::2"));
    CHECK(!has(s, "masquerade"));
}

TEST_CASE("rules: iptables fallback adds and removes the same named chains") {
    std::string add = all(demo::iptables_add(spec(demo::Mode::server, true)));
    CHECK(has(add, "iptables -w -t nat -N FTC-ftc0-NAT"));
    CHECK(has(add, "iptables -w -t nat -A FTC-ftc0-NAT ! -i ftc0 -p tcp --dport 4567 -j DNAT --to-destination 192.168.200.2"));
    CHECK(has(add, "ip6tables -w -t nat -A FTC-ftc0-NAT ! -i ftc0 -p tcp --dport 4567 -j DNAT --to-destination fcc8::2"));
    CHECK(has(add, "iptables -w -t nat -A PREROUTING -j FTC-ftc0-NAT"));
    CHECK(has(add, "iptables -w -t filter -I FORWARD -j FTC-ftc0-FWD"));
    std::string rm = all(demo::iptables_remove(spec(demo::Mode::server, true)));
    CHECK(has(rm, "iptables -w -t nat -D PREROUTING -j FTC-ftc0-NAT"));
    CHECK(has(rm, "ip6tables -w -t nat -X FTC-ftc0-NAT"));
    CHECK(has(rm, "iptables -w -t filter -X FTC-ftc0-FWD"));
    std::string client = all(demo::iptables_add(spec(demo::Mode::client, false)));
    CHECK(has(client, "iptables -w -t nat -A FTC-ftc0-NAT -o eth0 -s 192.168.200.2 -j MASQUERADE"));
    CHECK(!has(client, "ip6tables"));
}

TEST_CASE("rules: names the rules can carry") {
    CHECK(demo::rule_safe_name("ftc0"));
    CHECK(demo::rule_safe_name("wg-ft_1.a"));
    CHECK(!demo::rule_safe_name("a\"b"));
    CHECK(!demo::rule_safe_name("a b"));
    CHECK(!demo::rule_safe_name(""));
}
