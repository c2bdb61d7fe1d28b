// demo/rules.h — --auto-rules: the NAT and forwarding rules an end needs,
// installed at start-up and removed at exit (the README's Deployment section,
// done by the CLI).
//
// nftables first: one table `inet faketcp-<tun>`, loaded atomically with
// `nft -f`, so two instances with different TUN names never touch each
// other's rules. When `nft` is not on PATH (or cannot load the table), the
// same rules go into iptables/ip6tables chains `FTC-<tun>-NAT` / `-FWD`,
// jumped to from the built-in chains. Both tools run as child processes
// (posix_spawnp with an argv, no shell); the library never does any of this.
//
// The script and argv builders are pure, for unit tests; AutoRules does I/O.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "demo/options.h"
#include "faketcp.h"

namespace demo {

// What the rules are made of, resolved by the caller.
struct RuleSpec {
    Mode mode = Mode::client;
    std::string tun;                     // the TUN device's name
    faketcp::IpAddr peer4;               // --tun-peer
    std::optional<faketcp::IpAddr> peer6;  // --tun-peer6; unset with -4
    uint16_t local_port = 0;             // server: the public TCP port (--local)
    std::vector<std::string> out_ifaces;  // client: the interfaces that reach --remote
};

// "faketcp-<tun>": the nftables table; "FTC-<tun>-NAT" / "-FWD": iptables chains.
std::string nft_table_name(const std::string& tun);
std::string ipt_chain(const std::string& tun, const char* suffix);

// The whole table as one `nft -f` script.
std::string nft_script(const RuleSpec& spec);

// One command: argv[0] is the program, looked up on PATH.
using Command = std::vector<std::string>;
// iptables/ip6tables commands that add the rules (in order) and that remove
// them (every one may fail harmlessly when the rule is already gone).
std::vector<Command> iptables_add(const RuleSpec& spec);
std::vector<Command> iptables_remove(const RuleSpec& spec);

// A name the rules can carry: letters, digits, '-', '_', '.' (what nftables
// accepts in an unquoted identifier; iptables chain names allow it too).
bool rule_safe_name(const std::string& name);

// The installed rules and forwarding sysctls; the destructor removes and
// restores them. Movable, not copyable.
class AutoRules {
public:
    // Installs everything for `spec` (after removing a stale table or chains
    // of the same TUN name, logged). On failure logs why, undoes what it did
    // and returns nullopt.
    static std::optional<AutoRules> install(const RuleSpec& spec);
    AutoRules(AutoRules&& other) noexcept;
    AutoRules& operator=(AutoRules&&) = delete;
    AutoRules(const AutoRules&) = delete;
    ~AutoRules();

private:
    enum class Backend : uint8_t { none, nft, iptables };
    AutoRules() = default;
    void remove();
    RuleSpec spec_;
    Backend backend_ = Backend::none;
    bool turned_on_v4_ = false;  // net.ipv4.ip_forward was 0 and we set it
    bool turned_on_v6_ = false;  // net.ipv6.conf.all.forwarding likewise
};

// The interface names the kernel routes `dest` through (RTM_GETROUTE), or an
// empty vector and `error`.
std::vector<std::string> route_interfaces(const faketcp::IpAddr& dest, std::string& error);

}  // namespace demo
