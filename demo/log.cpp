// demo/log.cpp — see log.h.
#include "demo/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
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

// syslog(3) priorities, for journald's "<N>" line prefix.
int priority(LogLevel level) {
    switch (level) {
        case LogLevel::error: return 3;
        case LogLevel::warn: return 4;
        case LogLevel::info: return 6;
        case LogLevel::debug: return 7;
    }
    return 6;
}

// stderr is the journal when $JOURNAL_STREAM ("DEV:INODE") names it
// (systemd.exec(5)); journald then stamps each line itself and reads the
// "<N>" prefix as its priority.
bool stderr_is_journal() {
    const char* env = std::getenv("JOURNAL_STREAM");
    if (env == nullptr) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(env, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}
const bool g_journal = stderr_is_journal();

// Formats "<timestamp> <LEVEL> <message>\n" (journal: "<N><LEVEL> <message>\n")
// into `line`; returns its length.
size_t format_line(char* line, size_t cap, LogLevel level, const char* format, va_list ap) {
    size_t n = 0;
    if (g_journal) {
        n = static_cast<size_t>(snprintf(line, cap, "<%d>", priority(level)));
    } else {
        struct timespec ts {};
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm {};
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, cap, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    }
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
