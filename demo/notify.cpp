// demo/notify.cpp — see notify.h.
#include "demo/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "demo/log.h"

namespace demo {

void notify_systemd(const char* state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || path[0] == '\0') return;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const size_t len = std::strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) {
        LOG_DEBUG("NOTIFY_SOCKET '%s': not a socket path", path);
        return;
    }
    std::memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
    const socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG_DEBUG("NOTIFY_SOCKET: socket: %s", std::strerror(errno));
        return;
    }
    if (sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), addr_len) < 0)
        LOG_DEBUG("NOTIFY_SOCKET %s: %s", path, std::strerror(errno));
    close(fd);
}

}  // namespace demo
