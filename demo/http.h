// demo/http.h — the little HTTP/1.x the metrics endpoint speaks: reading a
// request head and writing a whole response. Pure functions over bytes, so
// the unit tests and the fuzzer drive them without sockets.
//
// Only what a Prometheus scrape needs: GET or HEAD of one path, no body, no
// keep-alive (every response says "Connection: close"). Request bytes are
// untrusted: nothing here trusts a length, and every outcome is a status.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace demo::http {

// The Content-Type of the Prometheus text exposition format 0.0.4.
constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// What a request's bytes so far amount to.
struct Parsed {
    enum State : unsigned char {
        incomplete,  // no end of the head yet, and still within the size limit
        complete,    // a well-formed head; `status` says how to answer it
        invalid,     // malformed (400), too large (431) or not HTTP/1.x (505)
    } state = incomplete;
    // complete: 200 (serve the path), 404 (another path), 405 (another
    // method); invalid: 400, 431 or 505; incomplete: 0.
    int status = 0;
    bool head_only = false;  // HEAD: the headers of the answer without its body
};

// Parses the request head at the start of `received`. The head ends with an
// empty line (CRLF CRLF, or bare LF as RFC 9112 2.2 lets a server accept);
// anything after it (a body, a pipelined request) is ignored. A head longer
// than `max_head` bytes, or `max_head` bytes with no end yet, is invalid
// (431). Leading empty lines are skipped (RFC 9112 2.2). `path` is the one
// path served: a request for it is 200 for GET and HEAD, 405 for any other
// method; any other path is 404. The query string is ignored.
Parsed parse_request(std::string_view received, size_t max_head, std::string_view path);

// "OK", "Not Found", ...; "Unknown" for a status it does not know.
const char* reason_phrase(int status);

// A whole HTTP/1.1 response: status line, Content-Type, Content-Length,
// Connection: close, "Allow: GET, HEAD" for 405, then `body` unless
// `head_only` (Content-Length still counts it).
std::string response(int status, std::string_view content_type, std::string_view body, bool head_only);

// The response to an error status (4xx/5xx): a one-line plain-text body
// saying what went wrong; `path` is named in the 404 text.
std::string error_response(int status, std::string_view path, bool head_only);

}  // namespace demo::http
