// Shared by the fuzz targets: an invariant check that aborts (so libFuzzer
// records the input) and an independent validator for emitted packets.
#pragma once
#include "faketcp.h"
#include "test/bytes.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
}
#define CHECK_INV(cond) \
    do {                \
        if (!(cond)) fail(#cond); \
    } while (0)

// Reads the fuzz input; past the end everything is zero.
struct Input {
    const uint8_t* p;
    size_t n;
    uint8_t u8() { return n ? (--n, *p++) : 0; }
    uint16_t u16() { return static_cast<uint16_t>(u8() << 8 | u8()); }
    uint32_t u32() { return uint32_t{u16()} << 16 | u16(); }
    bool done() const { return n == 0; }
};

// Independent check of an emitted packet.
void check_emitted(faketcp::ByteView p) {
    CHECK_INV(p.size >= 40);
    const uint8_t* b = p.data;
    size_t ip_len, tcp_len;
    uint32_t pseudo;
    if ((b[0] >> 4) == 4) {
        CHECK_INV(b[0] == 0x45);
        CHECK_INV(size_t(b[2] << 8 | b[3]) == p.size);
        CHECK_INV(fold(sum16(b, 20)) == 0xffff);
        CHECK_INV(b[9] == 6 && b[8] == 64);
        ip_len = 20;
        tcp_len = p.size - 20;
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(tcp_len);
    } else {
        CHECK_INV((b[0] >> 4) == 6);
        CHECK_INV(p.size >= 60);
        CHECK_INV(size_t(b[4] << 8 | b[5]) + 40 == p.size);
        CHECK_INV(b[6] == 6 && b[7] == 64);
        ip_len = 40;
        tcp_len = p.size - 40;
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(tcp_len);
    }
    const uint8_t* t = b + ip_len;
    size_t off = size_t(t[12] >> 4) * 4;
    CHECK_INV(off == 20 || off == 24);
    CHECK_INV(off <= tcp_len);
    CHECK_INV(fold(sum16(t, tcp_len, pseudo)) == 0xffff);
    CHECK_INV((t[13] & 0x02) ? off == 24 : off == 20);
}

}  // namespace
