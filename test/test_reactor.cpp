// Reactor: dispatch order and deadlines, with and without busy polling.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support.h"

using namespace tst;

namespace {

using namespace std::chrono_literals;

struct Pipe {
    int r = -1, w = -1;
    Pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
    ~Pipe() {
        ::close(r);
        ::close(w);
    }
    void put(char c) const { REQUIRE(::write(w, &c, 1) == 1); }
};

// Records what the reactor asked of it, in order.
struct Recorder : ft::Reactor::Handler {
    std::string log;
    std::optional<ft::TimePoint> deadline;
    ft::TimePoint fired_at{};
    void on_readable(int fd, ft::TimePoint) override {
        char buf[16];
        while (::read(fd, buf, sizeof buf) > 0) log += 'r';
    }
    std::optional<ft::TimePoint> next_deadline() const override { return deadline; }
    void on_deadline(ft::TimePoint now) override {
        log += 'd';
        fired_at = now;
        deadline.reset();
    }
    void on_batch_end(ft::TimePoint) override { log += 'e'; }
};

}  // namespace

TEST_CASE("Reactor: a readable fd is handled, then the batch ends; nothing happens without input") {
    for (bool busy : {false, true}) {
        CAPTURE(busy);
        auto reactor = ft::Reactor::create();
        REQUIRE(reactor);
        if (busy) reactor->set_busy_poll(2ms);
        Pipe p;
        Recorder h;
        REQUIRE(reactor->add_fd(p.r, h));
        REQUIRE(reactor->run_once(0ms));
        CHECK(h.log == "e");
        p.put('x');
        REQUIRE(reactor->run_once(1s));
        CHECK(h.log == "ere");
    }
}

TEST_CASE("Reactor: busy polling sees input that arrives during the spin") {
    auto reactor = ft::Reactor::create();
    REQUIRE(reactor);
    reactor->set_busy_poll(1000ms);  // far longer than the writer's delay
    Pipe p;
    Recorder h;
    REQUIRE(reactor->add_fd(p.r, h));
    std::thread writer([&] {
        std::this_thread::sleep_for(5ms);
        p.put('x');
    });
    REQUIRE(reactor->run_once(10s));
    writer.join();
    CHECK(h.log == "re");
}

TEST_CASE("Reactor: with busy polling a deadline still fires, never early") {
    for (auto spin : {0ms, 1ms, 1000ms}) {
        CAPTURE(spin.count());
        auto reactor = ft::Reactor::create();
        REQUIRE(reactor);
        reactor->set_busy_poll(spin);
        Recorder h;
        reactor->add_handler(h);
        const ft::TimePoint due = reactor->now() + 3ms;
        h.deadline = due;
        while (h.log.find('d') == std::string::npos) REQUIRE(reactor->run_once(10s));
        CHECK(h.fired_at >= due);
        CHECK(h.log.back() == 'e');
    }
}

// --- AdaptivePoll: the decision alone, as timelines of arrivals (µs) -----------------

namespace {
ft::TimePoint at_us(int64_t us) { return ft::TimePoint{} + std::chrono::microseconds(us); }
// Polls until (µs from the origin) when the reactor waits at `now_us`; == now_us: sleeps.
int64_t poll_end_us(const ft::AdaptivePoll& p, int64_t now_us) {
    return std::chrono::duration_cast<std::chrono::microseconds>(p.poll_until(at_us(now_us)) - ft::TimePoint{}).count();
}
}  // namespace

TEST_CASE("AdaptivePoll: an idle reactor and a lone packet after silence never poll") {
    ft::AdaptivePoll p(50us);
    CHECK(poll_end_us(p, 0) == 0);  // nothing ever arrived
    p.on_arrival(at_us(1000));
    CHECK(poll_end_us(p, 1005) == 1005);  // one arrival: no gap known yet
    p.on_arrival(at_us(900000));          // 899 ms later: a quiet spell
    CHECK(poll_end_us(p, 900010) == 900010);
}

TEST_CASE("AdaptivePoll: close arrivals poll until the budget after the last one, then sleep") {
    ft::AdaptivePoll p(50us);
    p.on_arrival(at_us(0));
    p.on_arrival(at_us(30));  // 30 <= 50: close
    CHECK(poll_end_us(p, 32) == 80);
    p.on_arrival(at_us(80));  // exactly the budget apart still counts
    CHECK(poll_end_us(p, 81) == 130);
    CHECK(poll_end_us(p, 130) == 130);  // the spin ran out: sleep
    p.on_arrival(at_us(400));            // 320 µs later; the gap before was close: one more budget
    CHECK(poll_end_us(p, 401) == 450);
    p.on_arrival(at_us(900));  // a second long gap: back off, sleep at once
    CHECK(poll_end_us(p, 901) == 901);
    p.on_arrival(at_us(910));  // close again: poll again
    CHECK(poll_end_us(p, 911) == 960);
}

TEST_CASE("AdaptivePoll: a ping-pong within the budget never sleeps; one slower than it always does") {
    // A tunnel end in a ping-pong sees the request, then the reply `rtt` later,
    // then the next request 10 µs after that.
    for (int64_t rtt : {40, 120}) {
        CAPTURE(rtt);
        ft::AdaptivePoll p(50us);
        int64_t t = 0, sleeps = 0, waits = 0;
        p.on_arrival(at_us(t));
        for (int i = 0; i < 100; ++i) {
            t += (i % 2 == 0) ? rtt : 10;
            ++waits;
            if (poll_end_us(p, t - 1) < t) ++sleeps;  // the poll ends before the next arrival
            p.on_arrival(at_us(t));
        }
        if (rtt <= 50)
            CHECK(sleeps == 1);  // only the first gap: one arrival is not yet a pattern
        else
            CHECK(sleeps == waits / 2 + 1);  // every reply is slept for; the request after it polled for (but the first)
    }
}

TEST_CASE("AdaptivePoll: a zero budget always sleeps") {
    ft::AdaptivePoll p(0us);
    p.on_arrival(at_us(0));
    p.on_arrival(at_us(0));
    CHECK(poll_end_us(p, 0) == 0);
    CHECK(p.budget() == ft::Duration::zero());
}

TEST_CASE("Reactor: adaptive polling counts a wake-up found by polling after close arrivals") {
    auto reactor = ft::Reactor::create();
    REQUIRE(reactor);
    reactor->set_poll_budget(1000ms);  // generous: the writer's delay stays far inside it
    Pipe p;
    Recorder h;
    REQUIRE(reactor->add_fd(p.r, h));
    p.put('a');
    REQUIRE(reactor->run_once(1s));  // first arrival: slept (or found at once)
    p.put('b');
    REQUIRE(reactor->run_once(1s));  // second, close to the first
    const uint64_t sleeps_before = reactor->sleeps();
    std::thread writer([&] {
        std::this_thread::sleep_for(5ms);
        p.put('c');
    });
    REQUIRE(reactor->run_once(10s));
    writer.join();
    CHECK(h.log == "rerere");
    CHECK(reactor->sleeps() == sleeps_before);  // found while polling
    CHECK(reactor->polled_wakeups() >= 1);
}

TEST_CASE("Reactor: polls that find nothing are counted, and a poll up to the deadline never sleeps") {
    auto reactor = ft::Reactor::create();
    REQUIRE(reactor);
    reactor->set_poll_budget(1000ms);
    Pipe p;
    Recorder h;
    REQUIRE(reactor->add_fd(p.r, h));
    p.put('a');
    REQUIRE(reactor->run_once(1s));
    p.put('b');
    REQUIRE(reactor->run_once(1s));  // two close arrivals: the policy now polls
    const uint64_t sleeps_before = reactor->sleeps();
    CHECK(reactor->empty_polls() == 0);
    REQUIRE(reactor->run_once(20ms));  // nothing comes: poll until the 20 ms wait is over
    CHECK(h.log == "reree");  // no input read; the batch-end call comes every iteration
    CHECK(reactor->empty_polls() >= 1);
    CHECK(reactor->sleeps() == sleeps_before);
}
