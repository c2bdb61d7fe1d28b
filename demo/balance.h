// demo/balance.h — where the client's new UDP flows live, when it runs
// several workers.
//
// The client's workers each own one UDP socket of an SO_REUSEPORT group on
// --local; the kernel hashes each UDP peer to one of them, and with a few
// peers that hash is lopsided (16 peers measured at 11 / 5 over 2 workers),
// so the busier worker saturates first. FlowBalance evens that out where
// flows are made: the worker whose group socket receives a new peer's first
// datagram asks place_flow() whether to keep it; if it already carries
// kRebalanceGap more flows than the least-loaded worker, it opens a UDP
// socket on --local connect()ed to that peer (the kernel delivers an exact
// 4-tuple to a connected socket in preference to the group) and mails it to
// the least-loaded worker, which makes the flow there and answers through
// that socket.
//
// Shared by all client workers, under one mutex: the flow count of each
// worker, which worker owns each peer (the directory), and each worker's
// mailbox. Only making or closing a flow, a handoff and the few datagrams
// that reach the wrong worker during one take the lock; an established
// flow's datagrams never do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "demo/udp.h"

namespace demo {

// What a UDP peer is known by on the client: its socket address.
struct PeerKey {
    uint8_t addr[16] = {};
    uint16_t port = 0;
    uint16_t family = 0;
    friend bool operator==(const PeerKey& a, const PeerKey& b) {
        return a.port == b.port && a.family == b.family && std::memcmp(a.addr, b.addr, 16) == 0;
    }
};

PeerKey peer_key(const SockAddr& sa);

// Seeded, so local peers cannot aim at one bucket.
struct PeerKeyHash {
    uint64_t seed = 0;
    size_t operator()(const PeerKey& k) const;
};

// A new flow stays with the worker that received it unless that worker
// carries at least this many more flows than the least-loaded one.
constexpr uint32_t kRebalanceGap = 2;

// The worker a new flow goes to, given each worker's active flows and the
// worker `self` whose group socket received the flow's first datagram:
// `self`, unless active[self] - min(active) >= kRebalanceGap; then the
// least-loaded worker (the lowest index among equals). Placements made one
// at a time this way never let max - min exceed kRebalanceGap: keeping a
// flow raises self to at most min + kRebalanceGap, and moving one raises
// the minimum. (Closing flows can widen it again; existing flows never move.)
uint32_t place_flow(const std::vector<uint32_t>& active, uint32_t self);

// Mail from one client worker to another.
struct FlowMail {
    enum class Kind : uint8_t {
        adopt,     // make the flow of `peer` here, receiving and answering on `sock`
        datagram,  // a datagram from `peer` that reached another worker: forward it on its flow
    };
    Kind kind = Kind::datagram;
    Fd sock;
    SockAddr peer;
    std::vector<uint8_t> data;
};

class FlowBalance {
public:
    // A worker's mailbox holds at most this many messages; more are dropped (counted by the sender).
    static constexpr size_t kMailboxLimit = 4096;

    FlowBalance(uint32_t workers, uint64_t seed);
    // The eventfd that wakes worker `w` (its WorkerLink's); before any mail.
    void set_wake(uint32_t w, int fd) { wake_[w] = fd; }
    uint32_t workers() const { return static_cast<uint32_t>(active_.size()); }

    // Proof that the caller holds the lock.
    using Guard = std::unique_lock<std::mutex>;
    Guard lock() { return Guard(mu_); }

    // The worker that owns `key`'s flow, if any.
    std::optional<uint32_t> owner(const Guard&, const PeerKey& key) const;
    // place_flow over the current counts.
    uint32_t choose(const Guard&, uint32_t self) const { return place_flow(active_, self); }
    // Records that worker `w` owns `key`'s flow (counted as active).
    void assign(const Guard&, const PeerKey& key, uint32_t w);
    // Worker `w`'s flow for `key` ended (or was never made): forgets it.
    void release(const PeerKey& key, uint32_t w);
    // Queues `mail` for worker `w` and wakes it; false (mail dropped) when its mailbox is full.
    bool post(const Guard&, uint32_t w, FlowMail&& mail);
    bool post(uint32_t w, FlowMail&& mail) { return post(lock(), w, std::move(mail)); }
    // Moves worker `w`'s mail into `out` (emptied first), oldest first.
    void take(uint32_t w, std::vector<FlowMail>& out);
    // Each worker's active flows now (tests, logs).
    std::vector<uint32_t> active() const;

private:
    mutable std::mutex mu_;
    std::vector<uint32_t> active_;
    std::vector<int> wake_;
    std::vector<std::vector<FlowMail>> inbox_;
    std::unordered_map<PeerKey, uint32_t, PeerKeyHash> owners_;
};

}  // namespace demo
