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
