// demo/balance.cpp — FlowBalance and place_flow (demo/balance.h).
#include "demo/balance.h"

#include <unistd.h>

#include <algorithm>

namespace demo {

PeerKey peer_key(const SockAddr& sa) {
    PeerKey k;
    k.family = sa.ss.ss_family;
    if (sa.ss.ss_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &sa.ss, sizeof sin);
        std::memcpy(k.addr, &sin.sin_addr, 4);
        k.port = sin.sin_port;
    } else if (sa.ss.ss_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, &sa.ss, sizeof sin6);
        std::memcpy(k.addr, &sin6.sin6_addr, 16);
        k.port = sin6.sin6_port;
    }
    return k;
}

size_t PeerKeyHash::operator()(const PeerKey& k) const {
    uint64_t a, b;
    std::memcpy(&a, k.addr, 8);
    std::memcpy(&b, k.addr + 8, 8);
    uint64_t h = seed ^ (uint64_t(k.port) << 16 | k.family);
    for (uint64_t v : {a, b}) {
        h ^= v;
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 32;
    }
    h *= 0xbf58476d1ce4e5b9ull;
    return static_cast<size_t>(h ^ (h >> 31));
}

uint32_t place_flow(const std::vector<uint32_t>& active, uint32_t self) {
    if (self >= active.size()) return self;
    const auto least = std::min_element(active.begin(), active.end());
    if (active[self] - *least < kRebalanceGap) return self;
    return static_cast<uint32_t>(least - active.begin());
}

FlowBalance::FlowBalance(uint32_t workers, uint64_t seed)
    : active_(workers, 0), wake_(workers, -1), inbox_(workers), owners_(0, PeerKeyHash{seed}) {}

std::optional<uint32_t> FlowBalance::owner(const Guard&, const PeerKey& key) const {
    auto it = owners_.find(key);
    if (it == owners_.end()) return std::nullopt;
    return it->second;
}

void FlowBalance::assign(const Guard&, const PeerKey& key, uint32_t w) {
    owners_[key] = w;
    ++active_[w];
}

void FlowBalance::release(const PeerKey& key, uint32_t w) {
    Guard guard = lock();
    auto it = owners_.find(key);
    if (it == owners_.end() || it->second != w) return;
    owners_.erase(it);
    --active_[w];
}

bool FlowBalance::post(const Guard&, uint32_t w, FlowMail&& mail) {
    if (inbox_[w].size() >= kMailboxLimit) return false;
    inbox_[w].push_back(std::move(mail));
    const uint64_t one = 1;
    ssize_t n = ::write(wake_[w], &one, sizeof one);
    (void)n;  // only fails when the counter is about to overflow: the worker is woken anyway
    return true;
}

void FlowBalance::take(uint32_t w, std::vector<FlowMail>& out) {
    out.clear();
    Guard guard = lock();
    out.swap(inbox_[w]);
}

std::vector<uint32_t> FlowBalance::active() const {
    Guard guard(mu_);
    return active_;
}

}  // namespace demo
