// Shared by the offload fuzz targets: big-endian helpers and a builder of
// fake-TCP data segments as the Stack emits them (valid checksums).
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_common.h"

namespace {


// A fake-TCP data segment as the Stack emits it, with valid checksums.
struct Spec {
    bool v6 = false;
    uint16_t sport = 40000, dport = 4567;
    uint32_t seq = 0, ack = 0;
    uint8_t flags = 0x10;
    uint16_t ip_id = 0;
    uint8_t ttl = 64;
};

std::vector<uint8_t> build(const Spec& s, const uint8_t* payload, size_t len) {
    const size_t ip_len = s.v6 ? 40 : 20;
    std::vector<uint8_t> p(ip_len + 20 + len, 0);
    uint8_t* b = p.data();
    uint32_t pseudo;
    if (!s.v6) {
        b[0] = 0x45;
        put16(b + 2, uint16_t(p.size()));
        put16(b + 4, s.ip_id);
        put16(b + 6, 0x4000);
        b[8] = s.ttl;
        b[9] = 6;
        const uint8_t src[4] = {10, 0, 0, 1}, dst[4] = {10, 0, 0, 2};
        std::memcpy(b + 12, src, 4);
        std::memcpy(b + 16, dst, 4);
        put16(b + 10, uint16_t(~fold(sum16(b, 20))));
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(20 + len);
    } else {
        b[0] = 0x60;
        put16(b + 4, uint16_t(20 + len));
        b[6] = 6;
        b[7] = s.ttl;
        b[8] = 0xfd;
        b[23] = 1;
        b[24] = 0xfd;
        b[39] = 2;
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(20 + len);
    }
    uint8_t* t = b + ip_len;
    put16(t, s.sport);
    put16(t + 2, s.dport);
    put32(t + 4, s.seq);
    put32(t + 8, s.ack);
    t[12] = 0x50;
    t[13] = s.flags;
    put16(t + 14, 65535);
    if (len) std::memcpy(t + 20, payload, len);
    put16(t + 16, uint16_t(~fold(sum16(t, 20 + len, pseudo))));
    return p;
}

}  // namespace
