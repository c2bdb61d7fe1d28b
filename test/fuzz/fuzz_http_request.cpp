// libFuzzer target: the metrics endpoint's request parser (demo/http.h) on
// untrusted bytes. Invariants: the state and status agree (incomplete: 0;
// complete: 200/404/405; invalid: 400/431/505); a verdict on a prefix never
// changes when more bytes arrive (what follows a head is ignored, and no byte
// repairs a bad head); nothing incomplete reaches the size limit; and the
// response written for any verdict is well formed with a true Content-Length.
#include <string>
#include <string_view>

#include "demo/http.h"
#include "fuzz_common.h"

using demo::http::Parsed;

namespace {

void check_consistent(const Parsed& p, size_t size, size_t max_head) {
    switch (p.state) {
        case Parsed::incomplete:
            CHECK_INV(p.status == 0);
            CHECK_INV(size < max_head);
            break;
        case Parsed::complete:
            CHECK_INV(p.status == 200 || p.status == 404 || p.status == 405);
            break;
        case Parsed::invalid:
            CHECK_INV(p.status == 400 || p.status == 431 || p.status == 505);
            break;
    }
}

void check_response(const Parsed& p) {
    if (p.state == Parsed::incomplete) return;
    const std::string r = p.status == 200 ? demo::http::response(200, demo::http::kMetricsContentType, "x 1\n", p.head_only)
                                          : demo::http::error_response(p.status, "/metrics", p.head_only);
    CHECK_INV(r.rfind("HTTP/1.1 " + std::to_string(p.status) + " ", 0) == 0);
    const size_t end = r.find("\r\n\r\n");
    CHECK_INV(end != std::string::npos);
    const size_t cl = r.find("\r\nContent-Length: ");
    CHECK_INV(cl != std::string::npos && cl < end);
    const size_t body = r.size() - end - 4;
    CHECK_INV(p.head_only ? body == 0 : r.compare(cl + 18, std::to_string(body).size() + 2, std::to_string(body) + "\r\n") == 0);
    CHECK_INV((p.status == 405) == (r.find("\r\nAllow: GET, HEAD\r\n") != std::string::npos));
}

bool same(const Parsed& a, const Parsed& b) {
    return a.state == b.state && a.status == b.status && a.head_only == b.head_only;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    // The first byte picks the size limit (small ones reach 431 often) and
    // where the bytes are split into "arrived so far" and "arrived later".
    const size_t max_head = data[0] & 1 ? 4096 : 16 + data[0] % 64;
    const std::string_view all(reinterpret_cast<const char*>(data) + 1, size - 1);
    const size_t cut = all.empty() ? 0 : (size_t(data[0]) * 7919u) % (all.size() + 1);

    const Parsed whole = demo::http::parse_request(all, max_head, "/metrics");
    check_consistent(whole, all.size(), max_head);
    check_response(whole);
    const Parsed prefix = demo::http::parse_request(all.substr(0, cut), max_head, "/metrics");
    check_consistent(prefix, cut, max_head);
    if (prefix.state != Parsed::incomplete) CHECK_INV(same(prefix, whole));
    if (whole.state == Parsed::incomplete) CHECK_INV(prefix.state == Parsed::incomplete);
    return 0;
}
