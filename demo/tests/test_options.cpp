// The CLI's flags (demo/options.h): one table serves the command line and
// --config files, so a value is accepted or refused with the same message in
// both, and a config file with any kind of mistake gives one line naming
// FILE:LINE. Built into build/unit_tests together with demo/options.cpp.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "demo/options.h"

using demo::ParseResult;

namespace {

ParseResult parse(std::vector<std::string> words, const char* env_log = nullptr) {
    std::vector<std::string_view> args(words.begin(), words.end());
    return demo::parse_command_line(args, env_log);
}

// A config file in a fresh temporary directory, removed with the object.
struct TempConfig {
    std::string dir, path;
    explicit TempConfig(const std::string& text) {
        char tmpl[] = "/tmp/ftc-options-test.XXXXXX";
        const char* d = mkdtemp(tmpl);
        REQUIRE(d != nullptr);
        dir = d;
        path = dir + "/end.conf";
        std::ofstream(path, std::ios::binary) << text;
    }
    ~TempConfig() {
        std::remove(path.c_str());
        rmdir(dir.c_str());
    }
};

const std::vector<std::string> kServer = {"server", "--local", "4567", "--remote", "127.0.0.1:7000"};

std::vector<std::string> with(std::vector<std::string> base, std::initializer_list<std::string> more) {
    base.insert(base.end(), more);
    return base;
}

}  // namespace

TEST_CASE("options: every flag of the table is a config key with the command line's meaning") {
    TempConfig cfg(
        "# a server end\n"
        "\n"
        "local 4567\n"
        "remote 127.0.0.1:7000\n"
        "   tun   ftc0  \n"
        "tun-local 10.9.0.1\n"
        "tun-peer 10.9.0.2\n"
        "tun-local6 fd09::1\n"
        "tun-peer6 fd09::2\n"
        "auto-rules\n"
        "idle-timeout 60\n"
        "queues 2\n"
        "stats-interval 30\n"
        "log-level debug\n"
        "no-offload\n"
        "no-udp-offload\n"
        "max-connections 100\n"
        "max-half-open 10\n"
        "reply-rate 5\n"
        "busy-poll 50\n"
        "handshake-packet /etc/hs.bin\n");
    ParseResult from_file = parse({"server", "--config", cfg.path});
    REQUIRE_MESSAGE(from_file.kind == ParseResult::run, from_file.text);
    ParseResult from_flags =
        parse({"server", "-l", "4567", "-r", "127.0.0.1:7000", "--tun", "ftc0", "--tun-local", "10.9.0.1", "--tun-peer",
               "10.9.0.2", "--tun-local6", "fd09::1", "--tun-peer6", "fd09::2", "--auto-rules", "--idle-timeout", "60",
               "--queues", "2", "--stats-interval", "30", "--log-level", "debug", "--no-offload", "--no-udp-offload",
               "--max-connections", "100", "--max-half-open", "10", "--reply-rate", "5", "--busy-poll", "50",
               "--handshake-packet", "/etc/hs.bin"});
    REQUIRE_MESSAGE(from_flags.kind == ParseResult::run, from_flags.text);
    const demo::Options& a = from_file.options;
    const demo::Options& b = from_flags.options;
    CHECK(a.local_port == 4567);
    CHECK(a.remote.host == b.remote.host);
    CHECK(a.remote.port == b.remote.port);
    CHECK(a.tun_name == "ftc0");
    CHECK(a.tun_name == b.tun_name);
    CHECK(a.tun_local == b.tun_local);
    CHECK(a.tun_peer == b.tun_peer);
    CHECK(*a.tun_local6 == *b.tun_local6);
    CHECK(*a.tun_peer6 == *b.tun_peer6);
    CHECK(a.auto_rules);
    CHECK(b.auto_rules);
    CHECK(a.idle_timeout_s == 60);
    CHECK(a.queues == 2);
    CHECK(a.stats_interval_s == 30);
    CHECK(a.log_level == faketcp::LogLevel::debug);
    CHECK(!a.offload);
    CHECK(!a.udp_offload);
    CHECK(a.max_connections == 100);
    CHECK(a.max_half_open == 10);
    CHECK(a.reply_rate == 5);
    CHECK(a.busy_poll_us == 50);
    CHECK(a.handshake_packet_path == b.handshake_packet_path);
    CHECK(a.config_path == cfg.path);
}

TEST_CASE("options: the command line wins over the config file") {
    TempConfig cfg("local 4567\nremote 127.0.0.1:7000\nidle-timeout 60\n");
    ParseResult r = parse({"server", "--config", cfg.path, "--idle-timeout", "5", "--local", "999"});
    REQUIRE_MESSAGE(r.kind == ParseResult::run, r.text);
    CHECK(r.options.idle_timeout_s == 5);
    CHECK(r.options.local_port == 999);
    // A file value the command line overrides is still validated: a bad file never starts.
    TempConfig bad("local 0\nremote 127.0.0.1:7000\n");
    r = parse({"server", "--config", bad.path, "--local", "999"});
    CHECK(r.kind == ParseResult::error);
}

TEST_CASE("options: a config file's mistakes give one line with FILE:LINE") {
    struct Case {
        const char* text;
        std::string want;  // after "faketcp: FILE:"
    };
    const Case cases[] = {
        {"local 4567\nremote 127.0.0.1:7000\nbogus 1\n", "3: unknown key 'bogus'"},
        {"local 4567\n--remote 127.0.0.1:7000\n", "2: unknown key '--remote' (write keys without '--'"},
        {"local 4567\nremote 127.0.0.1:7000\nlocal 4568\n", "3: 'local' given more than once (first on line 1)"},
        {"local 4567\nremote 127.0.0.1:70000\n", "2: --remote: expected HOST:PORT (IPv6 as [addr]:port), got "
                                                 "'127.0.0.1:70000'"},
        {"# comment\nlocal 4567\nremote 127.0.0.1:7000\nqueues 0\n", "4: --queues: expected a number 1-256, got '0'"},
        {"local 4567\nremote 127.0.0.1:7000\nipv4-only yes\n", "3: --ipv4-only: takes no value"},
        {"local 4567\nremote 127.0.0.1:7000\nidle-timeout\n", "3: --idle-timeout: missing value"},
        {"local 4567\nremote 127.0.0.1:7000\nhelp\n", "3: 'help' is not allowed in a config file"},
        {"local 4567\nremote 127.0.0.1:7000\nconfig /etc/x.conf\n", "3: 'config' is not allowed in a config file"},
        {"local 4567\nremote 127.0.0.1:7000\nl 4567\n", "3: unknown key 'l'"},
        {"local 4567\nremote 127.0.0.1:7000\nlog-level loud\n", "3: --log-level: expected error, warn, info or debug"},
    };
    for (const Case& c : cases) {
        TempConfig cfg(c.text);
        ParseResult r = parse({"server", "--config", cfg.path});
        CAPTURE(c.text);
        REQUIRE(r.kind == ParseResult::error);
        CHECK(r.text.find('\n') == std::string::npos);
        CHECK_MESSAGE(r.text.rfind("faketcp: " + cfg.path + ":" + c.want, 0) == 0, r.text);
    }
}

TEST_CASE("options: a config file with a NUL byte is refused") {
    static const char kText[] = "local 4567\nremote 127.0.0.1:7000\ntun a\0b\n";
    TempConfig cfg(std::string(kText, sizeof kText - 1));  // the literal's own length: the NUL inside counts
    ParseResult r = parse({"server", "--config", cfg.path});
    REQUIRE(r.kind == ParseResult::error);
    CHECK(r.text.find(":3: not a text file") != std::string::npos);
}

TEST_CASE("options: a bad value has the same message from the file and from the command line") {
    TempConfig cfg("local 4567\nremote 127.0.0.1:7000\nbusy-poll 5us\n");
    ParseResult file = parse({"server", "--config", cfg.path});
    ParseResult flags = parse(with(kServer, {"--busy-poll", "5us"}));
    REQUIRE(file.kind == ParseResult::error);
    REQUIRE(flags.kind == ParseResult::error);
    CHECK(flags.text == "faketcp: --busy-poll: expected microseconds 0-1000, got '5us'");
    CHECK(file.text == "faketcp: " + cfg.path + ":3: --busy-poll: expected microseconds 0-1000, got '5us'");
}

TEST_CASE("options: --config errors") {
    ParseResult r = parse({"server", "--config", "/nonexistent/x.conf"});
    REQUIRE(r.kind == ParseResult::error);
    CHECK(r.text.rfind("faketcp: --config: cannot read '/nonexistent/x.conf'", 0) == 0);
    TempConfig empty("");
    r = parse({"server", "--config", empty.path});
    REQUIRE(r.kind == ParseResult::error);
    CHECK(r.text.find("--local is required") != std::string::npos);
    TempConfig big(std::string(70000, '#'));
    r = parse({"server", "--config", big.path});
    REQUIRE(r.kind == ParseResult::error);
    CHECK(r.text.find("larger than") != std::string::npos);
}

TEST_CASE("options: --auto-rules needs --tun") {
    ParseResult r = parse(with(kServer, {"--auto-rules"}));
    REQUIRE(r.kind == ParseResult::error);
    CHECK(r.text.find("--auto-rules: needs --tun NAME") != std::string::npos);
    r = parse(with(kServer, {"--auto-rules", "--tun", "ftc1"}));
    CHECK(r.kind == ParseResult::run);
}

TEST_CASE("options: the help lists every flag of the table, for both roles") {
    for (const char* role : {"client", "server"}) {
        ParseResult r = parse({role, "--help"});
        REQUIRE(r.kind == ParseResult::show_help);
        for (const demo::FlagInfo& f : demo::flag_list()) {
            CAPTURE(f.name);
            CHECK(r.text.find("--" + f.name + " ") != std::string::npos);
            if (f.short_name != 0) CHECK(r.text.find(std::string("-") + f.short_name + ", --" + f.name) != std::string::npos);
        }
        CHECK(r.text.find("%D") == std::string::npos);  // every default placeholder filled in
    }
}

TEST_CASE("options: defaults per role come from the table") {
    ParseResult r = parse(kServer);
    REQUIRE(r.kind == ParseResult::run);
    CHECK(faketcp::to_string(r.options.tun_peer) == "192.168.201.2");
    CHECK(faketcp::to_string(*r.options.tun_peer6) == "fcc9::2");
    CHECK(r.options.idle_timeout_s == 180);
    r = parse({"client", "-l", "127.0.0.1:5000", "-r", "10.0.0.1:4567", "-4"});
    REQUIRE(r.kind == ParseResult::run);
    CHECK(faketcp::to_string(r.options.tun_local) == "192.168.200.1");
    CHECK(!r.options.tun_local6.has_value());
    r = parse(with(kServer, {"--max-connections", "10"}));
    REQUIRE(r.kind == ParseResult::run);
    CHECK(r.options.max_half_open == 10);  // the default half-open limit follows a smaller table
}

// demo/dist/example.conf is installed as the users' starting point (make install,
// the Debian package): its server half as written, and its client half once
// uncommented, must start. Read relative to the repository root, where make runs
// the unit tests.
TEST_CASE("options: the shipped example config starts a server, and its commented client half a client") {
    std::ifstream in("demo/dist/example.conf", std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "demo/dist/example.conf not found: run the unit tests from the repository root");
    std::string line, server, client;
    bool in_client = false;
    while (std::getline(in, line)) {
        if (line.rfind("# --- a client", 0) == 0) in_client = true;
        server += line + "\n";
        if (in_client && line.rfind("# ", 0) == 0 && line.rfind("# ---", 0) != 0 && line.size() > 2 &&
            line[2] >= 'a' && line[2] <= 'z')
            client += line.substr(2) + "\n";
    }
    TempConfig server_file(server);
    ParseResult r = parse({"server", "--config", server_file.path});
    REQUIRE_MESSAGE(r.kind == ParseResult::run, r.text);
    CHECK(r.options.local_port == 4567);
    CHECK(r.options.auto_rules);
    CHECK(r.options.tun_name == "ftc0");
    REQUIRE(!client.empty());
    TempConfig client_file(client);
    r = parse({"client", "--config", client_file.path});
    REQUIRE_MESSAGE(r.kind == ParseResult::run, r.text);
    CHECK(faketcp::to_string(r.options.local) == "127.0.0.1:51820");
    CHECK(r.options.remote.host == "203.0.113.7");
    CHECK(r.options.remote.port == 4567);
    CHECK(r.options.auto_rules);
}
