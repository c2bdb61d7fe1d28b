// demo/http.cpp — see http.h.
#include "demo/http.h"

namespace demo::http {

namespace {

// RFC 9110 5.6.2: the characters of a token (methods, header names).
bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
        case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
        case '-': case '.': case '^': case '_': case '`': case '|': case '~':
            return true;
        default:
            return false;
    }
}

bool is_vchar(unsigned char c) { return c >= 0x21 && c <= 0x7e; }

// RFC 9110 5.5: visible characters, spaces, tabs and obs-text; no controls.
bool is_field_char(unsigned char c) { return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f); }

bool all_of(std::string_view s, bool (*pred)(unsigned char)) {
    for (char c : s)
        if (!pred(static_cast<unsigned char>(c))) return false;
    return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

Parsed fail(int status) {
    Parsed p;
    p.state = Parsed::invalid;
    p.status = status;
    return p;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

// The path of a request target: origin-form ("/metrics?x") as is,
// absolute-form ("http://host:9100/metrics") without scheme and authority
// (RFC 9112 3.2.2: a server must accept it). False for the other forms
// ("*", "host:port"), which no GET or HEAD uses.
bool target_path(std::string_view target, std::string_view& path) {
    if (!target.empty() && target.front() == '/') {
        path = target;
    } else {
        size_t scheme = starts_with_nocase(target, "http://") ? 7 : starts_with_nocase(target, "https://") ? 8 : 0;
        if (scheme == 0) return false;
        size_t end = target.find_first_of("/?", scheme);
        path = end == std::string_view::npos ? std::string_view("/") : target.substr(end);
        if (!path.empty() && path.front() == '?') path = "/";
    }
    size_t query = path.find_first_of("?#");
    if (query != std::string_view::npos) path = path.substr(0, query);
    return true;
}

// "HTTP/1.1": 1 for HTTP/1.x, 0 for another major version, -1 if malformed.
int http_major_is_one(std::string_view version) {
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !is_digit(version[5]) || version[6] != '.' ||
        !is_digit(version[7]))
        return -1;
    return version[5] == '1' ? 1 : 0;
}

// The request line, once whole. Sets `method` and `request_path`.
Parsed check_request_line(std::string_view line, std::string_view& method, std::string_view& request_path) {
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return fail(400);
    size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return fail(400);
    method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (method.empty() || !all_of(method, is_tchar)) return fail(400);
    if (target.empty() || !all_of(target, is_vchar)) return fail(400);
    const int one = http_major_is_one(version);
    if (one < 0) return fail(400);
    if (one == 0) return fail(505);
    if (!target_path(target, request_path)) return fail(400);
    return Parsed{};
}

// A header field line: "Name: value", no space before the colon (RFC 9112
// 5.1), no line folding (5.2), no controls.
bool valid_field_line(std::string_view line) {
    if (line.front() == ' ' || line.front() == '\t') return false;
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return false;
    return all_of(line.substr(0, colon), is_tchar) && all_of(line.substr(colon + 1), is_field_char);
}

// A request line still arriving: false once its method part holds a byte no
// method has (a TLS handshake, binary noise), so such a client hears 400 at
// once instead of waiting out the timeout.
bool plausible_partial_request_line(std::string_view partial) {
    size_t sp = partial.find(' ');
    std::string_view method = partial.substr(0, sp);
    return all_of(method, is_tchar);
}

}  // namespace

Parsed parse_request(std::string_view received, size_t max_head, std::string_view path) {
    // Only the first max_head bytes are looked at, so the verdict on bytes
    // that arrived so far never changes when more arrive: a head that does
    // not end within them is 431 unless they already show it malformed.
    const bool at_limit = received.size() >= max_head;
    received = received.substr(0, max_head);
    size_t pos = 0;
    // Empty lines before the request line are skipped.
    while (pos < received.size()) {
        if (received[pos] == '\n') {
            ++pos;
        } else if (received[pos] == '\r' && pos + 1 < received.size() && received[pos + 1] == '\n') {
            pos += 2;
        } else {
            break;
        }
    }
    std::string_view method, request_path;
    bool first = true;
    for (;;) {
        const size_t nl = received.find('\n', pos);
        if (nl == std::string_view::npos) {
            std::string_view partial = received.substr(pos);
            if (first && !partial.empty() && partial.front() != '\r' && !plausible_partial_request_line(partial))
                return fail(400);
            return at_limit ? fail(431) : Parsed{};  // Parsed{}: incomplete
        }
        std::string_view line = received.substr(pos, nl - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        pos = nl + 1;
        if (line.find('\r') != std::string_view::npos) return fail(400);  // a bare CR
        if (first) {
            if (line.empty()) return fail(400);  // CR CR LF
            Parsed p = check_request_line(line, method, request_path);
            if (p.state == Parsed::invalid) return p;
            first = false;
            continue;
        }
        if (line.empty()) break;  // the end of the head
        if (!valid_field_line(line)) return fail(400);
    }
    Parsed p;
    p.state = Parsed::complete;
    p.head_only = method == "HEAD";
    if (request_path != path)
        p.status = 404;
    else if (method == "GET" || method == "HEAD")
        p.status = 200;
    else
        p.status = 405;
    return p;
}

const char* reason_phrase(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 503: return "Service Unavailable";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
    }
}

std::string response(int status, std::string_view content_type, std::string_view body, bool head_only) {
    std::string r;
    r.reserve(160 + (head_only ? 0 : body.size()));
    r += "HTTP/1.1 ";
    r += std::to_string(status);
    r += ' ';
    r += reason_phrase(status);
    r += "\r\nContent-Type: ";
    r += content_type;
    r += "\r\nContent-Length: ";
    r += std::to_string(body.size());
    r += "\r\nConnection: close\r\n";
    if (status == 405) r += "Allow: GET, HEAD\r\n";
    r += "\r\n";
    if (!head_only) r += body;
    return r;
}

std::string error_response(int status, std::string_view path, bool head_only) {
    std::string body = std::to_string(status) + " " + reason_phrase(status) + ": ";
    switch (status) {
        case 400: body += "not a well-formed HTTP/1.x request head"; break;
        case 404: body += "only " + std::string(path) + " is served here"; break;
        case 405: body += std::string(path) + " answers GET and HEAD only"; break;
        case 408: body += "the request head did not arrive in time"; break;
        case 431: body += "the request head is too large"; break;
        case 503: body += "too many connections at once; try again"; break;
        case 505: body += "only HTTP/1.0 and HTTP/1.1 are spoken here"; break;
        default: body += "error"; break;
    }
    body += '\n';
    return response(status, "text/plain; charset=utf-8", body, head_only);
}

}  // namespace demo::http
