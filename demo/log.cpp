// demo/log.cpp — see log.h.
#include "demo/log.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace demo {

LogLevel g_log_level = LogLevel::info;

namespace {

const char* level_tag(LogLevel level) {
    switch (level) {
        case LogLevel::error: return "ERROR";
        case LogLevel::warn: return "WARN";
        case LogLevel::info: return "INFO";
        case LogLevel::debug: return "DEBUG";
    }
    return "?";
}

// Formats "<timestamp> <LEVEL> <message>\n" into `line`; returns its length.
size_t format_line(char* line, size_t cap, LogLevel level, const char* format, va_list ap) {
    struct timespec ts {};
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm {};
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, cap, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    int m = snprintf(line + n, cap - n, "%s ", level_tag(level));
    if (m > 0) n += static_cast<size_t>(m);
    if (n > cap - 2) n = cap - 2;
    m = vsnprintf(line + n, cap - n, format, ap);
    if (m > 0) n += static_cast<size_t>(m);
    if (n > cap - 2) n = cap - 2;  // truncated: keep the newline
    line[n++] = '\n';
    return n;
}

void write_all(const char* data, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, data, n);
        if (w <= 0) return;  // nowhere left to report a failing stderr
        data += w;
        n -= static_cast<size_t>(w);
    }
}

constexpr size_t kMaxLine = 2048;

}  // namespace

void log_line(LogLevel level, const char* format, ...) {
    char line[kMaxLine];
    va_list ap;
    va_start(ap, format);
    size_t n = format_line(line, sizeof line, level, format, ap);
    va_end(ap);
    // One write per line so lines from concurrent writers never interleave.
    write_all(line, n);
}

void LogBlock::add(const char* format, ...) {
    if (!log_enabled(level_)) return;
    char line[kMaxLine];
    va_list ap;
    va_start(ap, format);
    size_t n = format_line(line, sizeof line, level_, format, ap);
    va_end(ap);
    text_.append(line, n);
}

LogBlock::~LogBlock() {
    if (!text_.empty()) write_all(text_.data(), text_.size());
}

}  // namespace demo
