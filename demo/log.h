// demo/log.h — the CLI's logger: timestamped, levelled lines on stderr.
//
// "2026-11-25T08:00:00Z INFO client: connection ... established". The LOG_*
// macros test the level before evaluating their arguments, so a disabled
// debug line costs one load and one compare (no formatting, no to_string()).
//
// The level is process-wide state: the CLI is one process with one stderr.
// The library itself never logs on its own; its optional LogFn is routed here.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <string>

#include "faketcp.h"

namespace demo {

using faketcp::LogLevel;

extern LogLevel g_log_level;  // lines above this level are discarded

inline bool log_enabled(LogLevel level) {
    return static_cast<uint8_t>(level) <= static_cast<uint8_t>(g_log_level);
}

// One whole line (timestamp, level, message, '\n') in one write(2).
void log_line(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Several lines written together with one write(2) when the block ends, so a
// reader of the log never sees part of them (the stats dump). Each line gets
// its own timestamp and level. Not for per-packet use: it builds a string.
class LogBlock {
public:
    explicit LogBlock(LogLevel level) : level_(level) {}
    ~LogBlock();
    LogBlock(const LogBlock&) = delete;
    LogBlock& operator=(const LogBlock&) = delete;
    void add(const char* format, ...) __attribute__((format(printf, 2, 3)));

private:
    LogLevel level_;
    std::string text_;
};

// Turns "rate-limited" into one call: allow() is true at most once per
// `interval`, and suppressed() counts the calls it turned down since.
class RateLimit {
public:
    explicit RateLimit(faketcp::Duration interval) : interval_(interval) {}
    bool allow(faketcp::TimePoint now) {
        if (armed_ && now < next_) {
            ++suppressed_;
            return false;
        }
        armed_ = true;
        next_ = now + interval_;
        return true;
    }
    // The number of turned-down calls since the last allowed one; resets it.
    uint64_t take_suppressed() {
        uint64_t n = suppressed_;
        suppressed_ = 0;
        return n;
    }

private:
    faketcp::Duration interval_;
    faketcp::TimePoint next_{};
    bool armed_ = false;
    uint64_t suppressed_ = 0;
};

}  // namespace demo

#define FTLOG(level, ...)                                          \
    do {                                                           \
        if (::demo::log_enabled(level)) ::demo::log_line(level, __VA_ARGS__); \
    } while (0)
#define LOG_ERROR(...) FTLOG(::faketcp::LogLevel::error, __VA_ARGS__)
#define LOG_WARN(...) FTLOG(::faketcp::LogLevel::warn, __VA_ARGS__)
#define LOG_INFO(...) FTLOG(::faketcp::LogLevel::info, __VA_ARGS__)
#define LOG_DEBUG(...) FTLOG(::faketcp::LogLevel::debug, __VA_ARGS__)
