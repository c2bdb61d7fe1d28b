// demo/rules.cpp — see rules.h.
#include "demo/rules.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>

#include "demo/log.h"
#include "demo/udp.h"

extern char** environ;

namespace demo {

using faketcp::Family;
using faketcp::IpAddr;

std::string nft_table_name(const std::string& tun) { return "faketcp-" + tun; }
std::string ipt_chain(const std::string& tun, const char* suffix) { return "FTC-" + tun + "-" + suffix; }

bool rule_safe_name(const std::string& name) {
    if (name.empty()) return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return false;
    return true;
}

std::string nft_script(const RuleSpec& s) {
    const std::string table = "inet " + nft_table_name(s.tun);
    const std::string tun = "\"" + s.tun + "\"";
    std::string out;
    // Declaring then deleting the table first makes the load replace a stale
    // table of the same name in the same transaction (and not fail when none).
    out += "table " + table + "\n";
    out += "delete table " + table + "\n";
    out += "table " + table + " {\n";
    if (s.mode == Mode::client) {
        out += "    chain postrouting {\n";
        out += "        type nat hook postrouting priority srcnat; policy accept;\n";
        for (const std::string& ifc : s.out_ifaces) {
            out += "        oifname \"" + ifc + "\" ip saddr " + faketcp::to_string(s.peer4) + " masquerade\n";
            if (s.peer6) out += "        oifname \"" + ifc + "\" ip6 saddr " + faketcp::to_string(*s.peer6) + " masquerade\n";
        }
        out += "    }\n";
    } else {
        const std::string port = std::to_string(s.local_port);
        out += "    chain prerouting {\n";
        out += "        type nat hook prerouting priority dstnat; policy accept;\n";
        out += "        iifname != " + tun + " tcp dport " + port + " dnat ip to " + faketcp::to_string(s.peer4) + "\n";
        if (s.peer6)
            out += "        iifname != " + tun + " tcp dport " + port + " dnat ip6 to " + faketcp::to_string(*s.peer6) + "\n";
        out += "    }\n";
    }
    // For a forward chain that drops by default in this ruleset's own
    // tables; a drop policy in iptables (Docker) is handled apart.
    out += "    chain forward {\n";
    out += "        type filter hook forward priority filter - 1; policy accept;\n";
    out += "        iifname " + tun + " accept\n";
    out += "        oifname " + tun + " accept\n";
    out += "    }\n";
    out += "}\n";
    return out;
}

namespace {

// The FORWARD accept rules alone, for one of "iptables" / "ip6tables".
void add_forward(std::vector<Command>& cmds, const char* tool, const RuleSpec& s) {
    const std::string fwd = ipt_chain(s.tun, "FWD");
    cmds.push_back({tool, "-w", "-t", "filter", "-N", fwd});
    cmds.push_back({tool, "-w", "-t", "filter", "-A", fwd, "-i", s.tun, "-j", "ACCEPT"});
    cmds.push_back({tool, "-w", "-t", "filter", "-A", fwd, "-o", s.tun, "-j", "ACCEPT"});
    cmds.push_back({tool, "-w", "-t", "filter", "-I", "FORWARD", "-j", fwd});
}

void add_nat(std::vector<Command>& cmds, const char* tool, const RuleSpec& s, const IpAddr& peer) {
    const std::string nat = ipt_chain(s.tun, "NAT");
    const std::string addr = faketcp::to_string(peer);
    cmds.push_back({tool, "-w", "-t", "nat", "-N", nat});
    if (s.mode == Mode::client) {
        for (const std::string& ifc : s.out_ifaces)
            cmds.push_back({tool, "-w", "-t", "nat", "-A", nat, "-o", ifc, "-s", addr, "-j", "MASQUERADE"});
        cmds.push_back({tool, "-w", "-t", "nat", "-A", "POSTROUTING", "-j", nat});
    } else {
        cmds.push_back({tool, "-w", "-t", "nat", "-A", nat, "!", "-i", s.tun, "-p", "tcp", "--dport",
                        std::to_string(s.local_port), "-j", "DNAT", "--to-destination", addr});
        cmds.push_back({tool, "-w", "-t", "nat", "-A", "PREROUTING", "-j", nat});
    }
}

void remove_chains(std::vector<Command>& cmds, const char* tool, const RuleSpec& s, bool forward_only) {
    const std::string fwd = ipt_chain(s.tun, "FWD");
    const std::string nat = ipt_chain(s.tun, "NAT");
    cmds.push_back({tool, "-w", "-t", "filter", "-D", "FORWARD", "-j", fwd});
    cmds.push_back({tool, "-w", "-t", "filter", "-F", fwd});
    cmds.push_back({tool, "-w", "-t", "filter", "-X", fwd});
    if (forward_only) return;
    cmds.push_back({tool, "-w", "-t", "nat", "-D", s.mode == Mode::client ? "POSTROUTING" : "PREROUTING", "-j", nat});
    cmds.push_back({tool, "-w", "-t", "nat", "-F", nat});
    cmds.push_back({tool, "-w", "-t", "nat", "-X", nat});
}

}  // namespace

std::vector<Command> iptables_add(const RuleSpec& s) {
    std::vector<Command> cmds;
    add_nat(cmds, "iptables", s, s.peer4);
    add_forward(cmds, "iptables", s);
    if (s.peer6) {
        add_nat(cmds, "ip6tables", s, *s.peer6);
        add_forward(cmds, "ip6tables", s);
    }
    return cmds;
}

std::vector<Command> iptables_remove(const RuleSpec& s) {
    std::vector<Command> cmds;
    remove_chains(cmds, "iptables", s, false);
    if (s.peer6) remove_chains(cmds, "ip6tables", s, false);
    return cmds;
}

namespace {

// ---------------------------------------------------------------------------
// Child processes

struct RunResult {
    bool started = false;  // false: the program is not on PATH (or could not run)
    int status = -1;       // exit status; -1 if killed by a signal
    std::string output;    // stdout and stderr together
};

std::string first_line(const std::string& text) {
    size_t nl = text.find('\n');
    std::string s = text.substr(0, nl);
    return s.empty() ? "(no output)" : s;
}

std::string join(const Command& cmd) {
    std::string s;
    for (const std::string& w : cmd) s += (s.empty() ? "" : " ") + w;
    return s;
}

// Runs `cmd` with `input` on its stdin; collects its output. Workers are not
// running while rules change (start-up and exit), and posix_spawn does not
// run any of this process's code in the child.
RunResult run(const Command& cmd, const std::string& input = "") {
    RunResult r;
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0) return r;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return r;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDERR_FILENO);
    std::vector<char*> argv;
    for (const std::string& w : cmd) argv.push_back(const_cast<char*>(w.c_str()));
    argv.push_back(nullptr);
    // The signals the main thread blocks for its signalfd stay blocked in a
    // spawned child unless reset: give it the default mask.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        r.output = std::string(argv[0]) + ": " + std::strerror(rc);
        return r;
    }
    r.started = true;
    // Scripts are a few hundred bytes, far below a pipe's buffer: writing all
    // of it before reading cannot deadlock.
    size_t off = 0;
    while (off < input.size()) {
        ssize_t w = write(in[1], input.data() + off, input.size() - off);
        if (w <= 0 && errno != EINTR) break;
        if (w > 0) off += static_cast<size_t>(w);
    }
    close(in[1]);
    char buf[4096];
    for (;;) {
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n > 0) {
            if (r.output.size() < 65536) r.output.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

bool on_path(const char* program) {
    const char* path = std::getenv("PATH");
    std::string p = path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find(':', start);
        if (end == std::string::npos) end = p.size();
        std::string dir = p.substr(start, end - start);
        if (dir.empty()) dir = ".";
        if (access((dir + "/" + program).c_str(), X_OK) == 0) return true;
        start = end + 1;
    }
    return false;
}

// ---------------------------------------------------------------------------
// Forwarding sysctls

constexpr const char* kForward4 = "/proc/sys/net/ipv4/ip_forward";
constexpr const char* kForward6 = "/proc/sys/net/ipv6/conf/all/forwarding";

// "0" / "1" as read, or nullopt when absent (no IPv6) or unreadable.
std::optional<char> read_sysctl(const char* path) {
    std::ifstream in(path);
    char c = 0;
    if (!(in >> c)) return std::nullopt;
    return c;
}

bool write_sysctl(const char* path, char value, std::string& error) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, &value, 1) != 1) {
        error = std::string("cannot write ") + path + ": " + std::strerror(errno);
        if (fd >= 0) close(fd);
        return false;
    }
    close(fd);
    return true;
}

// Turns a forwarding sysctl on; `turned_on` says whether it was off.
bool forwarding_on(const char* path, bool& turned_on, std::string& error) {
    std::optional<char> v = read_sysctl(path);
    if (!v) {
        error = std::string("cannot read ") + path;
        return false;
    }
    if (*v != '0') return true;
    if (!write_sysctl(path, '1', error)) return false;
    turned_on = true;
    LOG_INFO("auto-rules: turned %s on", path);
    return true;
}

// The chains exist: left by an instance killed before it could remove them.
bool iptables_chain_exists(const char* tool, const char* table, const std::string& chain) {
    RunResult r = run({tool, "-w", "-t", table, "-S", chain});
    return r.started && r.status == 0;
}

// Another instance's rules, found by name: an nftables table faketcp-<tun> or
// iptables chains FTC-<tun>-*. While one is there, forwarding stays on.
struct OtherInstance {
    bool nft = false;  // else iptables
    std::string tun;
    std::string describe() const {
        return nft ? "nftables table " + nft_table_name(tun) : "iptables chains " + ipt_chain(tun, "*");
    }
};

std::optional<OtherInstance> other_instance(const std::string& own_tun) {
    const std::string own_table = nft_table_name(own_tun);
    if (on_path("nft")) {
        RunResult r = run({"nft", "list", "tables"});
        size_t at = 0;
        const std::string prefix = "table inet faketcp-";
        while (r.started && r.status == 0 && (at = r.output.find(prefix, at)) != std::string::npos) {
            size_t start = at + prefix.size(), end = r.output.find_first_of(" \n", start);
            std::string tun = r.output.substr(start, end - start);
            if (tun != own_tun) return OtherInstance{true, tun};
            at = start;
        }
    }
    if (on_path("iptables")) {
        RunResult r = run({"iptables", "-w", "-t", "filter", "-S"});
        size_t at = 0;
        const std::string prefix = "-N FTC-";
        while (r.started && r.status == 0 && (at = r.output.find(prefix, at)) != std::string::npos) {
            size_t start = at + prefix.size(), end = r.output.find_first_of(" \n", start);
            std::string chain = r.output.substr(start, end - start);  // <tun>-<suffix>
            std::string tun = chain.substr(0, chain.rfind('-'));
            if (tun != own_tun) return OtherInstance{false, tun};
            at = start;
        }
    }
    return std::nullopt;
}

// Who turns forwarding back off. The duty is a marker in an instance's own
// rules (an empty nft chain in its table, or an empty iptables chain
// FTC-<tun>-F4/F6): the instance that turned the sysctl on records it there at
// start-up; one that exits while another instance's rules remain hands it to
// the other one by adding the marker to the heir's rules, which the heir reads
// when it exits. So the last instance out restores the sysctl, whatever the
// order they stopped in, and an instance restarted after a SIGKILL finds the
// duty in the stale rules it replaces.
const char* forwarding_marker(bool v6) { return v6 ? "forwarding_v6" : "forwarding_v4"; }
std::string ipt_forwarding_marker(const std::string& tun, bool v6) { return ipt_chain(tun, v6 ? "F6" : "F4"); }

// Adds the v4 and/or v6 duty marker to the rules of TUN `tun` (ours, or an
// heir's); one already there stays.
void record_forwarding_duty(const std::string& tun, bool nft, bool v4, bool v6) {
    for (bool is_v6 : {false, true}) {
        if (!(is_v6 ? v6 : v4)) continue;
        if (nft)
            (void)run({"nft", "add", "chain", "inet", nft_table_name(tun), forwarding_marker(is_v6)});
        else
            (void)run({"iptables", "-w", "-t", "filter", "-N", ipt_forwarding_marker(tun, is_v6)});
    }
}

// Whether the rules of TUN `tun` carry the duty for the v4 (or v6) sysctl:
// the instance that turned it on recorded it there, or one that left before
// it handed it over.
bool forwarding_duty_recorded(const std::string& tun, bool nft, bool v6) {
    if (nft) {
        RunResult r = run({"nft", "list", "chain", "inet", nft_table_name(tun), forwarding_marker(v6)});
        return r.started && r.status == 0;
    }
    return iptables_chain_exists("iptables", "filter", ipt_forwarding_marker(tun, v6));
}

// The duty a killed predecessor of the same TUN name recorded in its stale
// rules, nftables or iptables; read before they are replaced.
bool stale_forwarding_duty(const std::string& tun, bool v6) {
    return (on_path("nft") && forwarding_duty_recorded(tun, true, v6)) ||
           (on_path("iptables") && forwarding_duty_recorded(tun, false, v6));
}

// Whether our rules carry that duty, read as we exit; the marker goes with
// our rules (iptables: removed here).
bool inherited_forwarding(const std::string& tun, bool nft, bool v6) {
    if (!forwarding_duty_recorded(tun, nft, v6)) return false;
    if (!nft) (void)run({"iptables", "-w", "-t", "filter", "-X", ipt_forwarding_marker(tun, v6)});
    return true;
}

// Serializes --auto-rules' bookkeeping (rules, duty markers, sysctls) between
// the faketcp instances of one network namespace, the scope of the forwarding
// sysctls. Without it two instances stopping at once can each find the
// other's rules, hand it the duty to turn forwarding off and both be gone,
// leaving forwarding on. The lock is a bound abstract UNIX socket: one per
// network namespace, shared across users (each unit has its own dynamic
// user), released by the kernel when its holder exits, even by SIGKILL.
// Taken by install() and remove(), never one inside the other.
class NamespaceLock {
public:
    NamespaceLock();
    ~NamespaceLock() {
        if (fd_ >= 0) close(fd_);
    }
    NamespaceLock(const NamespaceLock&) = delete;
    NamespaceLock& operator=(const NamespaceLock&) = delete;

private:
    int fd_ = -1;
};

NamespaceLock::NamespaceLock() {
    static const char kName[] = "faketcp-auto-rules";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, kName, sizeof kName - 1);  // sun_path[0] stays 0: abstract
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + sizeof kName - 1);
    // Another instance holds it for a few nft or iptables runs: tens of ms.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
            fd_ = fd;
            return;
        }
        const int err = errno;
        if (fd >= 0) close(fd);
        if (err != EADDRINUSE || std::chrono::steady_clock::now() >= deadline) {
            LOG_WARN("auto-rules: cannot take the lock that orders faketcp instances' rule changes (@%s: %s); "
                     "going on without it",
                     kName, std::strerror(err));
            return;
        }
        usleep(5000);
    }
}

// iptables' FORWARD chain drops by default (Docker does this): an nftables
// accept cannot override a drop in another table, so iptables needs its own.
bool iptables_forward_drops(const char* tool) {
    if (!on_path(tool)) return false;
    RunResult r = run({tool, "-w", "-t", "filter", "-S", "FORWARD"});
    return r.started && r.status == 0 && r.output.find("-P FORWARD DROP") != std::string::npos;
}

void run_quietly(const std::vector<Command>& cmds) {
    for (const Command& c : cmds) (void)run(c);
}


bool run_all(const std::vector<Command>& cmds, std::string& error) {
    for (const Command& c : cmds) {
        RunResult r = run(c);
        if (!r.started || r.status != 0) {
            error = "'" + join(c) + "' failed: " + first_line(r.output);
            return false;
        }
    }
    return true;
}

}  // namespace

std::optional<AutoRules> AutoRules::install(const RuleSpec& spec) {
    AutoRules rules;  // before the lock: on failure its destructor (remove) runs after the lock is released
    NamespaceLock lock;
    rules.spec_ = spec;
    const std::string table = nft_table_name(spec.tun);
    std::string nft_error, ipt_error;

    // The duty to turn forwarding back off that a killed predecessor recorded: ours now.
    const bool stale_duty_v4 = stale_forwarding_duty(spec.tun, false);
    const bool stale_duty_v6 = stale_forwarding_duty(spec.tun, true);
    if (on_path("nft")) {
        RunResult exists = run({"nft", "list", "table", "inet", table});
        if (exists.started && exists.status == 0)
            LOG_WARN("auto-rules: removing the stale nftables table %s (left by an instance that did not exit cleanly)",
                     table.c_str());
        RunResult r = run({"nft", "-f", "-"}, nft_script(spec));
        if (r.started && r.status == 0) {
            rules.backend_ = Backend::nft;
            LOG_INFO("auto-rules: nftables table inet %s loaded", table.c_str());
        } else {
            nft_error = "nft -f: " + first_line(r.output);
            (void)run({"nft", "delete", "table", "inet", table});
        }
    } else {
        nft_error = "nft not found on PATH";
    }

    // iptables: the fallback for the whole rule set, or only its FORWARD
    // accepts when nftables loaded and iptables' FORWARD drops by default.
    const bool forward_for_docker =
        rules.backend_ == Backend::nft && (iptables_forward_drops("iptables") || (spec.peer6 && iptables_forward_drops("ip6tables")));
    if (rules.backend_ == Backend::none || forward_for_docker) {
        const bool have4 = on_path("iptables"), have6 = !spec.peer6 || on_path("ip6tables");
        if (!have4 || !have6) {
            ipt_error = std::string(have4 ? "ip6tables" : "iptables") + " not found on PATH";
        } else {
            std::vector<Command> stale = iptables_remove(spec);
            if (iptables_chain_exists("iptables", "filter", ipt_chain(spec.tun, "FWD")) ||
                iptables_chain_exists("iptables", "nat", ipt_chain(spec.tun, "NAT")))
                LOG_WARN("auto-rules: removing the stale iptables chains %s-* (left by an instance that did not exit "
                         "cleanly)",
                         ("FTC-" + spec.tun).c_str());
            run_quietly(stale);
            std::vector<Command> add;
            if (forward_for_docker) {
                add_forward(add, "iptables", spec);
                if (spec.peer6) add_forward(add, "ip6tables", spec);
            } else {
                add = iptables_add(spec);
            }
            if (run_all(add, ipt_error)) {
                if (forward_for_docker) {
                    LOG_INFO("auto-rules: iptables FORWARD drops by default: chain %s accepts the TUN's traffic",
                             ipt_chain(spec.tun, "FWD").c_str());
                } else {
                    rules.backend_ = Backend::iptables;
                    LOG_INFO("auto-rules: iptables%s chains %s-NAT and -FWD added (%s)", spec.peer6 ? "/ip6tables" : "",
                             ("FTC-" + spec.tun).c_str(), nft_error.c_str());
                }
            } else {
                run_quietly(stale);
                if (forward_for_docker) {
                    LOG_ERROR("auto-rules: %s", ipt_error.c_str());
                    return std::nullopt;  // the destructor drops the nft table
                }
            }
        }
    }
    if (rules.backend_ == Backend::none) {
        LOG_ERROR("auto-rules: cannot install the rules: %s; %s. Install nftables (apt-get install nftables) or "
                  "iptables (apt-get install iptables), and run with CAP_NET_ADMIN",
                  nft_error.c_str(), ipt_error.c_str());
        return std::nullopt;
    }

    std::string error;
    if (!forwarding_on(kForward4, rules.turned_on_v4_, error) ||
        (spec.peer6 && read_sysctl(kForward6) && !forwarding_on(kForward6, rules.turned_on_v6_, error))) {
        LOG_ERROR("auto-rules: %s", error.c_str());
        return std::nullopt;  // the destructor removes the rules and restores the sysctls
    }
    for (bool v6 : {false, true}) {
        if (!(v6 ? stale_duty_v6 : stale_duty_v4)) continue;
        (v6 ? rules.turned_on_v6_ : rules.turned_on_v4_) = true;
        LOG_INFO("auto-rules: the instance whose stale rules were replaced had turned %s on; this one turns it back off",
                 v6 ? kForward6 : kForward4);
    }
    // Recorded in our own rules, where it outlives a SIGKILL: the instance that
    // replaces them after one still knows to restore the sysctl.
    record_forwarding_duty(spec.tun, rules.backend_ == Backend::nft, rules.turned_on_v4_, rules.turned_on_v6_);
    return rules;
}

AutoRules::AutoRules(AutoRules&& other) noexcept
    : spec_(std::move(other.spec_)),
      backend_(other.backend_),
      turned_on_v4_(other.turned_on_v4_),
      turned_on_v6_(other.turned_on_v6_) {
    other.backend_ = Backend::none;
    other.turned_on_v4_ = other.turned_on_v6_ = false;
}

AutoRules::~AutoRules() { remove(); }

void AutoRules::remove() {
    if (backend_ == Backend::none) return;
    NamespaceLock lock;
    const std::string table = nft_table_name(spec_.tun);
    for (bool v6 : {false, true}) {
        bool& mine = v6 ? turned_on_v6_ : turned_on_v4_;
        const bool inherited = inherited_forwarding(spec_.tun, backend_ == Backend::nft, v6);
        if (!mine && inherited) {
            mine = true;
            LOG_INFO("auto-rules: an instance that stopped earlier left turning %s back off to this one",
                     v6 ? kForward6 : kForward4);
        }
    }
    if (backend_ == Backend::nft) {
        RunResult r = run({"nft", "delete", "table", "inet", table});
        if (!r.started || r.status != 0)
            LOG_ERROR("auto-rules: nft delete table inet %s: %s", table.c_str(), first_line(r.output).c_str());
        // FORWARD accepts added to iptables for a Docker-style policy, if any.
        if (on_path("iptables") && iptables_chain_exists("iptables", "filter", ipt_chain(spec_.tun, "FWD"))) {
            std::vector<Command> cmds;
            remove_chains(cmds, "iptables", spec_, true);
            if (spec_.peer6) remove_chains(cmds, "ip6tables", spec_, true);
            run_quietly(cmds);
        }
    } else {
        run_quietly(iptables_remove(spec_));
    }
    backend_ = Backend::none;
    LOG_INFO("auto-rules: rules removed");
    if (turned_on_v4_ || turned_on_v6_) {
        std::optional<OtherInstance> other = other_instance(spec_.tun);
        std::string error;
        if (other) {
            record_forwarding_duty(other->tun, other->nft, turned_on_v4_, turned_on_v6_);
            LOG_INFO("auto-rules: forwarding left on: %s of another faketcp instance still uses it; it turns "
                     "forwarding back off when it stops",
                     other->describe().c_str());
        } else {
            if (turned_on_v4_ && write_sysctl(kForward4, '0', error)) LOG_INFO("auto-rules: turned %s back off", kForward4);
            if (turned_on_v6_ && write_sysctl(kForward6, '0', error)) LOG_INFO("auto-rules: turned %s back off", kForward6);
            if (!error.empty()) LOG_ERROR("auto-rules: %s", error.c_str());
        }
    }
    turned_on_v4_ = turned_on_v6_ = false;
}

std::vector<std::string> route_interfaces(const IpAddr& dest, std::string& error) {
    Fd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd.valid()) {
        error = std::string("netlink socket: ") + std::strerror(errno);
        return {};
    }
    const bool v4 = dest.family == Family::v4;
    const size_t alen = v4 ? 4 : 16;
    struct {
        nlmsghdr nh;
        rtmsg rt;
        char attrs[64];
    } req{};
    req.nh.nlmsg_type = RTM_GETROUTE;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 1;
    req.rt.rtm_family = v4 ? AF_INET : AF_INET6;
    req.rt.rtm_dst_len = static_cast<unsigned char>(alen * 8);
    auto* rta = reinterpret_cast<rtattr*>(req.attrs);
    rta->rta_type = RTA_DST;
    rta->rta_len = static_cast<unsigned short>(RTA_LENGTH(alen));
    std::memcpy(RTA_DATA(rta), dest.bytes.data(), alen);
    req.nh.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(sizeof(rtmsg)) + RTA_ALIGN(rta->rta_len));
    if (send(fd.get(), &req, req.nh.nlmsg_len, 0) < 0) {
        error = std::string("netlink send: ") + std::strerror(errno);
        return {};
    }
    alignas(nlmsghdr) char buf[8192];
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
        error = std::string("netlink recv: ") + std::strerror(errno);
        return {};
    }
    std::vector<std::string> out;
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, static_cast<unsigned>(len)); nh = NLMSG_NEXT(nh, len)) {
        if (nh->nlmsg_type == NLMSG_ERROR) {
            const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
            error = std::string("no route to ") + faketcp::to_string(dest) + ": " + std::strerror(-e->error);
            return {};
        }
        if (nh->nlmsg_type != RTM_NEWROUTE) continue;
        auto* rt = static_cast<rtmsg*>(NLMSG_DATA(nh));
        int alen_left = static_cast<int>(RTM_PAYLOAD(nh));
        for (rtattr* a = RTM_RTA(rt); RTA_OK(a, alen_left); a = RTA_NEXT(a, alen_left)) {
            if (a->rta_type != RTA_OIF || RTA_PAYLOAD(a) < sizeof(int)) continue;
            int ifindex = 0;
            std::memcpy(&ifindex, RTA_DATA(a), sizeof ifindex);
            char name[IF_NAMESIZE] = {};
            if (if_indextoname(static_cast<unsigned>(ifindex), name) != nullptr) out.emplace_back(name);
        }
    }
    if (out.empty()) error = "no route to " + faketcp::to_string(dest);
    return out;
}

}  // namespace demo
