// libFuzzer target: the wire parser, through Stack::on_packet on a stack
// that listens (so well-formed SYNs reach the accept path and unknown
// segments the RST path). Invariants: every input packet is either consumed
// or counted as exactly one drop; every emitted packet is well formed with
// valid checksums; at most one reply per input packet.
#include "faketcp.h"
#include "fuzz_common.h"

using namespace faketcp;

namespace {

// One packet into `stack`, then the invariants.
void feed(Stack* stack, TimePoint now, const uint8_t* data, size_t size, RxChecksum checksum) {
    stack->on_timer(now);
    stack->tx_clear();
    Event ev;
    while (stack->poll_event(ev)) {}

    const Stats before = stack->stats();
    stack->on_packet(ByteView(data, size), now, checksum);
    const Stats& after = stack->stats();
    CHECK_INV(after.packets_in == before.packets_in + 1);
    uint64_t new_drops = after.total_drops() - before.total_drops();
    CHECK_INV(new_drops <= 1);
    CHECK_INV(checksum == RxChecksum::verify || after.dropped(DropReason::bad_tcp_checksum) ==
                                                   before.dropped(DropReason::bad_tcp_checksum));
    CHECK_INV(stack->tx_count() <= 1);
    for (size_t i = 0; i < stack->tx_count(); ++i) check_emitted(stack->tx_packet(i));
    while (stack->poll_event(ev)) CHECK_INV(ev.type != EventType::datagram || ev.data.size > 0);
    stack->tx_clear();
}

Stack* make_stack() {
    StackConfig c;
    c.local_v4 = IpAddr::v4(10, 0, 0, 2);
    c.local_v6 = parse_ip("fd00::2");
    c.max_connections = 64;
    c.max_half_open = 32;
    c.reply_rate_per_sec = 1000000;
    auto* s = new Stack(c);
    if (!s->listen(4567)) std::abort();
    return s;
}

}  // namespace

// The same bytes go to a stack that verifies every checksum and to one told
// the kernel verified the TCP checksum (RxChecksum::kernel_verified), which
// lets random bytes past the checksum into the state machine.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Stack* stack = make_stack();
    static Stack* trusting = make_stack();
    static TimePoint now = TimePoint{} + std::chrono::hours(1);
    now += std::chrono::milliseconds(1);
    feed(stack, now, data, size, RxChecksum::verify);
    feed(trusting, now, data, size, RxChecksum::kernel_verified);
    return 0;
}
